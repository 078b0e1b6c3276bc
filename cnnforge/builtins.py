"""Importing this module registers cnnforge's own models, datasets and augmentations (all light)."""
from cnnforge.data import builtin_datasets, idx, image_folder, ops, pipelines  # noqa: F401
from cnnforge.models import builders, fast  # noqa: F401
