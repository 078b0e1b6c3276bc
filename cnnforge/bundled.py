"""cnnforge's own models, datasets, augmentations, losses, optimizers, schedules and callbacks: importing this
module registers them (all light: no torch at import).

It is loaded the way plugins are, through cnnforge's own ``cnnforge.plugins`` entry point (pyproject.toml),
so the registries at the bottom of the package never import the layers that fill them.
"""
from cnnforge import callbacks  # noqa: F401
from cnnforge.data import (  # noqa: F401
    builtin_datasets,
    hf_datasets,
    idx,
    image_folder,
    named_pipelines,
    ops,
    policy_ops,
    tar_shards,
)
from cnnforge.models import fast, seed_models  # noqa: F401
from cnnforge.training import losses, optimizers, schedules  # noqa: F401
