"""A torchvision ``transforms.v2`` transform as an albumentations op, drawing from the pipeline's seeded stream.

torchvision draws its random choices from torch's global RNG. Here each image's call runs under a
forked CPU RNG seeded from the op's own stream, which :func:`cnnforge.data.pipeline.seed_pipeline`
sets per ``(seed, epoch, index)``: the same sample gets the same draw with any ``num_workers`` and
after a resume, and the global RNG that checkpoints save is left as it was.
"""
from __future__ import annotations

from typing import Any

import albumentations as A
import numpy as np
import torch


class TorchvisionOp(A.ImageOnlyTransform):
    """Applies ``transform`` to an HxW or HxWxC uint8 image as a CxHxW tensor (grayscale and RGB alike)."""

    def __init__(self, transform: Any, p: float = 1.0) -> None:
        super().__init__(p=p)
        self.transform = transform

    def get_params(self) -> dict[str, int]:
        return {"seed": self.py_random.getrandbits(63)}

    def apply(self, img: np.ndarray, seed: int, **params: Any) -> np.ndarray:
        pixels = np.require(img, requirements=["C", "W"])  # a copy only of a read-only (memory-mapped) image
        chw = torch.from_numpy(pixels.reshape(*img.shape[:2], -1)).permute(2, 0, 1)
        with torch.random.fork_rng(devices=[]):  # the CPU RNG only: torch.manual_seed would reseed CUDA's too
            torch.default_generator.manual_seed(seed)
            out = self.transform(chw)
        return np.ascontiguousarray(out.permute(1, 2, 0).numpy()).reshape(img.shape)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("transform",)
