"""``cnnforge.load_predictor(run_dir)``: a trained run as seed 004's ``ImageInference``, for one's own images.

A prediction must see exactly what evaluation saw, so the preprocessing is taken from the run, not
guessed. An image is decoded as the ``imagefolder`` dataset decodes files, with the channel count
and brought to the size of the images the dataset stores (as ``imagefolder`` resizes them); then it
goes through the very eval pipeline evaluation used (``augment.eval``, or the resize to the training
size that replaces it) and is normalised as the trainer normalises (:class:`~cnnforge.data.normalize.Normalize`).
The dataset's stored image shape is kept in ``data_info.json`` with the run.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from torch import nn

from cnnforge import rundir
from cnnforge.data.decode import read_image
from cnnforge.data.loading import DataInfo
from cnnforge.data.normalize import Normalize
from cnnforge.errors import DataError
from cnnforge.rundir import Shape

ImageLike = Union[str, "os.PathLike[str]", np.ndarray]


@dataclass(frozen=True)
class Prediction:
    """The model's answer for one image: the top class, its probability, and the ``topk`` best classes."""

    source: str
    label: str
    probability: float
    topk: list[tuple[str, float]]

    def to_dict(self) -> dict[str, Any]:
        return {"image": self.source, "label": self.label, "probability": self.probability,
                "topk": [{"label": name, "probability": p} for name, p in self.topk]}


class Predictor:
    """A model with its run's preprocessing and class names (seed 004's ``ImageInference``).

    ``predictor(image)`` returns the class name; :meth:`predict` gives probabilities and the top
    classes. An image is a file path or an array (HxW, HxWx1 or HxWx3 RGB; uint8, or float in [0, 1]);
    several are a list, an NxHxWxC array or an NxHxW array of images of the run's size. ``stored_shape``
    is the (height, width, channels) of the dataset's images, which ``transform`` (the run's eval
    pipeline) expects.
    """

    def __init__(self, model: nn.Module, info: DataInfo, *, stored_shape: Shape, transform: Any = None,
                 device: str | torch.device = "cpu", run_dir: Path | None = None,
                 checkpoint: str | None = None, tta: str = "none") -> None:
        self.info, self.stored_shape, self.transform, self.tta = info, stored_shape, transform, tta
        self.run_dir, self.checkpoint = run_dir, checkpoint
        self.model = model.eval()
        self.to(device)

    @property
    def classes(self) -> list[str]:
        return list(self.info.classes)

    def to(self, device: str | torch.device) -> Predictor:
        self.device = torch.device(device)
        self.model.to(self.device)
        self.normalize = Normalize.from_info(self.info).to(self.device)
        return self

    # ----------------------------------------------------------------------------------- preprocessing
    def preprocess(self, image: ImageLike) -> torch.Tensor:
        """One image -> the uint8 CHW tensor evaluation would have fed the model for it."""
        from cnnforge.data.decode import resize_image
        from cnnforge.data.pipeline import seed_pipeline

        h, w, channels = self.stored_shape
        array = read_image(image, channels) if isinstance(image, (str, os.PathLike)) else self._array(image)
        if array.shape[:2] != (h, w):
            array = resize_image(array, (h, w))  # as imagefolder resizes the images it stores
        if self.transform is not None:
            seed_pipeline(self.transform, np.random.default_rng(0))  # random eval ops give the same answer every call
            array = self.transform(image=array)["image"]
        # an own, writable copy
        array = np.array(array, dtype=np.uint8).reshape(*self.info.image_size, self.info.channels)
        return torch.from_numpy(array).permute(2, 0, 1)

    def _array(self, image: np.ndarray) -> np.ndarray:
        import cv2

        array = np.asarray(image)
        if array.dtype != np.uint8:
            if not np.issubdtype(array.dtype, np.floating) or array.size and (array.min() < 0 or array.max() > 1):
                raise DataError(f"an image array must be uint8, or float in [0, 1]; got {array.dtype}", where="image")
            array = np.rint(array * 255.0).astype(np.uint8)
        if array.ndim == 2:
            array = array[..., None]
        if array.ndim != 3 or array.shape[-1] not in (1, 3):
            raise DataError(f"an image array must be HxW, HxWx1 or HxWx3; got shape {array.shape}", where="image")
        channels = self.stored_shape[2]
        if array.shape[-1] != channels:
            code = cv2.COLOR_GRAY2RGB if channels == 3 else cv2.COLOR_RGB2GRAY
            array = cv2.cvtColor(array, code).reshape(*array.shape[:2], channels)
        return array

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 NCHW -> the model's float input (:class:`~cnnforge.data.normalize.Normalize`, as in training)."""
        return self.normalize(x.to(self.device))

    # ----------------------------------------------------------------------------------- inference
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The model's logits of a uint8 NCHW batch, with the run's ``eval.tta`` (as evaluation computed them)."""
        from cnnforge.training.eval_step import tta_logits

        return tta_logits(self.model, self.normalise(x), self.tta)

    @torch.no_grad()
    def probabilities(self, images: ImageLike | Iterable[ImageLike], batch_size: int = 256) -> np.ndarray:
        """Class probabilities, one row per image, columns in the order of :attr:`classes`."""
        batch = [self.preprocess(image) for image in _as_list(images, tuple(self.stored_shape[:2]))]
        out = [torch.softmax(self.logits(torch.stack(batch[i:i + batch_size])).float(), 1).cpu()
               for i in range(0, len(batch), batch_size)]
        return torch.cat(out).numpy() if out else np.zeros((0, len(self.classes)), dtype=np.float32)

    def predict(self, images: ImageLike | Iterable[ImageLike], topk: int = 3) -> list[Prediction]:
        """The ``topk`` most likely classes of every image, most likely first."""
        items = _as_list(images, tuple(self.stored_shape[:2]))
        probs = self.probabilities(items)
        k = max(1, min(topk, len(self.classes)))
        results = []
        for i, (item, row) in enumerate(zip(items, probs, strict=False)):
            best = np.argsort(-row, kind="stable")[:k]
            top = [(self.classes[j], float(row[j])) for j in best]
            source = str(item) if isinstance(item, (str, os.PathLike)) else f"<array {i}>"
            results.append(Prediction(source, top[0][0], top[0][1], top))
        return results

    def __call__(self, image: ImageLike) -> str:
        """The predicted class name of one image (what seed 004's ``infer_image`` returns)."""
        return self.predict([image], topk=1)[0].label


def _as_list(images: ImageLike | Iterable[ImageLike], size: tuple[int, int]) -> list[ImageLike]:
    """Paths, a list of images, one image, or a batch array: NxHxWxC, or NxHxW (MNIST style) when HxW is
    the run's image ``size`` (any other 3-d array is one HxWxC image)."""
    if isinstance(images, (str, os.PathLike)):
        return [images]
    if isinstance(images, np.ndarray):
        batch = images.ndim == 4 or (images.ndim == 3 and images.shape[1:] == size)
        return list(images) if batch else [images]
    return list(images)


def load_predictor(run_dir: str | os.PathLike[str], *, checkpoint: str | None = None,
                   device: str | torch.device | None = None) -> Predictor:
    """Load a run directory for inference: its model, weights (``best`` or ``last``) and preprocessing.

    Without ``checkpoint`` the weights are the ones the run was tested with. The device defaults
    to CUDA when available.
    """
    from cnnforge.data.pipeline import resolve_pipelines
    from cnnforge.recipe import open_recipe
    from cnnforge.rundir import checkpoint as ckpt
    from cnnforge.training.assemble import model_for

    path = rundir.require_run_dir(run_dir)
    recipe = open_recipe(path / rundir.RECIPE)
    name = rundir.resolve_checkpoint(path, checkpoint)
    weights_path = rundir.weights_file(path, name)
    info, shape = rundir.load_data_info(path, recipe)
    model = model_for(recipe, info)
    weights = ckpt.load_weights(weights_path)
    ckpt.check_compatible(model, weights, str(weights_path))
    model.load_state_dict(weights)
    # the eval pipeline is built exactly as for evaluation, from an image of the dataset's stored shape
    transform = resolve_pipelines(recipe.augment, recipe.source, np.zeros(shape, dtype=np.uint8)).eval
    device = device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    return Predictor(model, info, stored_shape=shape, transform=transform, device=device, run_dir=path, checkpoint=name,
                     tta=recipe.eval.tta)
