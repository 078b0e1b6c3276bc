"""Every use of a third-party private name, behind one door, one module per library.

A private name (``torch._foreach_copy_``, Ray PBT's ``_trial_state``, argparse's ``parser._actions``)
can change in any minor release without a word. Here each one sits in a function that checks the
installed version against the range it was written for (:mod:`cnnforge.compat.versions`) and, outside
it, uses the public API or stops with one line naming the package and its version. The modules are
named after the library plus ``_internals``, never like the library itself: ``accelerate launch
cnnforge`` puts ``cnnforge/`` first on ``sys.path``, where a ``torch.py`` would shadow torch.
tests/test_compat.py fails when one of these names disappears, and fails when a private third-party
name is used anywhere in cnnforge outside this package.
"""
