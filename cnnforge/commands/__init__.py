"""The CLI's commands, one module each, named after its command (``new-plugin`` is ``new_plugin``).

Each module has ``add(subparsers, common)`` and stays import-light; this list is the order of ``--help``.
"""

COMMANDS = ["run", "resume", "list", "check", "show", "eval", "embed", "viz", "predict", "export", "data", "augment",
            "lr_find", "tune",
            "completion", "schema", "new_plugin", "recipes", "runs"]
