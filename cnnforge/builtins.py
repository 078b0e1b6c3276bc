"""Importing this module registers cnnforge's own models, datasets and augmentations (all light)."""
from cnnforge.data import builtin_datasets, hf_datasets, idx, image_folder, named_pipelines, ops, policy_ops, tar_shards  # noqa: F401
from cnnforge.models import fast, seed_models  # noqa: F401
