"""Datasets, augmentation ops and the loaders that feed the trainer."""

#: the largest image side cnnforge handles: ``data.image_size`` and every image shape a run records
MAX_IMAGE_SIDE = 8192
