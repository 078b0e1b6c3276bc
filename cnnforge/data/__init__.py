"""Datasets, augmentation ops and the loaders that feed the trainer."""
