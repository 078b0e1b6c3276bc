"""cnnforge's own callbacks (``callbacks: [{name, ...}]``), registered on import like a plugin's.

``ema`` (what ``train.ema`` adds), ``swa`` and ``distill``. This package sits above the trainer and the
predictor in the layers: a callback may use both (``distill`` loads its teacher as ``cnnforge predict``
does); the trainer finds callbacks only by name. Importing it stays light: torch loads in the hooks.
"""
from cnnforge.callbacks import distill, ema, swa  # noqa: F401
