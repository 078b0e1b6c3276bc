"""``cnnforge.load_predictor(run_dir)``: a trained run as seed 004's ``ImageInference``, for one's own images.

A prediction must see exactly what evaluation saw, so the preprocessing is taken from the run, not
guessed: the image is read with the run's channel count, passed through the recipe's
``augment.eval`` pipeline, resized to the size the model was trained on (when it is not that size
already; evaluation does the same resize when ``augment.eval`` is absent) and normalised with the
run's mean and std by the same arithmetic as the trainer (``(x - 255 mean) / (255 std)`` on uint8
pixels).
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from torch import nn

from cnnforge.data.loading import DataInfo
from cnnforge.errors import CnnforgeError, ConfigError, DataError
from cnnforge.training import rundir

#: the input description of a run (classes, channels, size, normalisation), written when it ends
DATA_INFO = "data_info.json"
BEST = "best.safetensors"
CHECKPOINTS = ("best", "last")

ImageLike = Union[str, "os.PathLike[str]", np.ndarray]


def save_data_info(run_dir: Path, info: DataInfo) -> None:
    """Keep the data description with the run, so predicting never needs the training data."""
    rundir.write_json(run_dir / DATA_INFO, asdict(info))


def load_data_info(run_dir: Path, recipe: Any) -> DataInfo:
    """The run's :class:`DataInfo`; a run that never finished gets it by opening its dataset again."""
    path = run_dir / DATA_INFO
    if not path.exists():
        from cnnforge.data.loading import build_splits

        return build_splits(recipe).info
    raw = rundir.read_json(path)
    try:
        return DataInfo(classes=list(raw["classes"]), mean=tuple(raw["mean"]), std=tuple(raw["std"]),
                        channels=int(raw["channels"]), image_size=(int(raw["image_size"][0]), int(raw["image_size"][1])))
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise CnnforgeError(f"not a data description ({type(exc).__name__}: {exc})", where=str(path)) from None


def resolve_checkpoint(run_dir: Path, checkpoint: str | None) -> str:
    """``best`` or ``last``; ``None`` means what the run was tested with (best when it was kept)."""
    if checkpoint is None:
        return "best" if (run_dir / rundir.CHECKPOINTS / BEST).exists() else "last"
    if checkpoint not in CHECKPOINTS:
        raise ConfigError(f"unknown checkpoint {checkpoint!r}", where="--checkpoint", hint="use best or last")
    return checkpoint


def weights_file(run_dir: Path, checkpoint: str) -> Path:
    """The safetensors file behind ``best`` (best validation epoch) or ``last`` (final weights).

    ``last`` of an interrupted run, which has no final weights yet, is its newest complete checkpoint.
    """
    from cnnforge.training import checkpoint as ckpt

    if checkpoint == "best":
        path = run_dir / rundir.CHECKPOINTS / BEST
        if not path.exists():
            raise CnnforgeError("the run kept no best weights", where=str(path), hint="use --checkpoint last")
        return path
    final = run_dir / rundir.WEIGHTS
    if final.exists():
        return final
    newest = ckpt.latest_valid(run_dir / rundir.CHECKPOINTS)
    if newest is None:
        raise CnnforgeError("the run has no final weights and no complete checkpoint", where=str(run_dir))
    return newest / "model.safetensors"


def read_image(path: str | os.PathLike[str], channels: int) -> np.ndarray:
    """An image file as uint8 HxWxC with ``channels`` (1: grey, 3: RGB), as OpenCV reads it in seed 004."""
    import cv2

    p = Path(path)
    if not p.is_file():
        raise DataError("is a directory, not an image" if p.is_dir() else "no such image file", where=str(p))
    if channels not in (1, 3):
        raise DataError(f"the model takes {channels}-channel images; image files give 1 (grey) or 3 (RGB)", where=str(p))
    try:
        raw = np.fromfile(p, dtype=np.uint8)
        image = cv2.imdecode(raw, cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR) if raw.size else None
    except (OSError, cv2.error) as exc:
        raise DataError(f"cannot read the image ({type(exc).__name__})", where=str(p)) from None
    if image is None:
        raise DataError("not a readable image", where=str(p), hint="give a PNG, JPEG, BMP, TIFF or WebP file")
    return image[..., None] if channels == 1 else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


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
    classes. An image is a file path or a uint8 array (HxW, HxWx1 or HxWx3 RGB).
    """

    def __init__(self, model: nn.Module, info: DataInfo, *, transform: Any = None, device: str | torch.device = "cpu",
                 run_dir: Path | None = None, checkpoint: str | None = None) -> None:
        self.info, self.transform, self.run_dir, self.checkpoint = info, transform, run_dir, checkpoint
        self.model = model.eval()
        self.to(device)

    @property
    def classes(self) -> list[str]:
        return list(self.info.classes)

    def to(self, device: str | torch.device) -> Predictor:
        self.device = torch.device(device)
        self.model.to(self.device)
        shape = (1, -1, 1, 1)
        self.mean = torch.tensor(self.info.mean, device=self.device).view(shape) * 255.0
        self.inv_std = 1.0 / (torch.tensor(self.info.std, device=self.device).view(shape) * 255.0)
        return self

    # ----------------------------------------------------------------------------------- preprocessing
    def preprocess(self, image: ImageLike) -> torch.Tensor:
        """One image -> uint8 CHW tensor of the run's channels and size, after the eval pipeline."""
        import cv2

        from cnnforge.data.pipeline import seed_pipeline

        source = str(image) if isinstance(image, (str, os.PathLike)) else "image"
        array = read_image(image, self.info.channels) if isinstance(image, (str, os.PathLike)) else self._array(image)
        if self.transform is not None:
            seed_pipeline(self.transform, np.random.default_rng(0))  # random eval ops give the same answer every call
            try:
                array = self.transform(image=array)["image"]
            except Exception as exc:  # e.g. a center crop larger than the image
                raise DataError(f"augment.eval cannot transform this {array.shape[1]}x{array.shape[0]} image "
                                f"({type(exc).__name__}: {exc})", where=source) from None
        h, w = self.info.image_size
        if array.shape[:2] != (h, w):
            # linear, as evaluation's resize; area averaging when shrinking a photo a lot, which linear would alias
            far = array.shape[0] >= 2 * h and array.shape[1] >= 2 * w
            array = cv2.resize(array, (w, h), interpolation=cv2.INTER_AREA if far else cv2.INTER_LINEAR)
        return torch.from_numpy(np.ascontiguousarray(array.reshape(h, w, -1))).permute(2, 0, 1)

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
        if array.shape[-1] != self.info.channels:
            code = cv2.COLOR_GRAY2RGB if self.info.channels == 3 else cv2.COLOR_RGB2GRAY
            array = cv2.cvtColor(array, code).reshape(*array.shape[:2], self.info.channels)
        return array

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 NCHW -> the model's float input; the same arithmetic as the trainer's ``prepare_input``."""
        x = x.to(self.device).float()
        return (x - self.mean) * self.inv_std

    # ----------------------------------------------------------------------------------- inference
    @torch.no_grad()
    def probabilities(self, images: ImageLike | Iterable[ImageLike], batch_size: int = 256) -> np.ndarray:
        """Class probabilities, one row per image, columns in the order of :attr:`classes`."""
        batch = [self.preprocess(image) for image in _as_list(images)]
        out = [torch.softmax(self.model(self.normalise(torch.stack(batch[i:i + batch_size]))).float(), 1).cpu()
               for i in range(0, len(batch), batch_size)]
        return torch.cat(out).numpy() if out else np.zeros((0, len(self.classes)), dtype=np.float32)

    def predict(self, images: ImageLike | Iterable[ImageLike], topk: int = 3) -> list[Prediction]:
        """The ``topk`` most likely classes of every image, most likely first."""
        items = _as_list(images)
        probs = self.probabilities(items)
        k = max(1, min(topk, len(self.classes)))
        results = []
        for i, (item, row) in enumerate(zip(items, probs)):
            best = np.argsort(-row, kind="stable")[:k]
            top = [(self.classes[j], float(row[j])) for j in best]
            source = str(item) if isinstance(item, (str, os.PathLike)) else f"<array {i}>"
            results.append(Prediction(source, top[0][0], top[0][1], top))
        return results

    def __call__(self, image: ImageLike) -> str:
        """The predicted class name of one image (what seed 004's ``infer_image`` returns)."""
        return self.predict([image], topk=1)[0].label


def _as_list(images: ImageLike | Iterable[ImageLike]) -> list[ImageLike]:
    if isinstance(images, (str, os.PathLike)):
        return [images]
    if isinstance(images, np.ndarray):
        return list(images) if images.ndim == 4 else [images]
    return list(images)


def load_predictor(run_dir: str | os.PathLike[str], *, checkpoint: str | None = None,
                   device: str | torch.device | None = None) -> Predictor:
    """Load a run directory for inference: its model, weights (``best`` or ``last``) and preprocessing.

    Without ``checkpoint`` the weights are the ones the run was tested with. The device defaults
    to CUDA when available.
    """
    from cnnforge.data.pipeline import build_pipeline
    from cnnforge.recipe import check_recipe, load_recipe
    from cnnforge.training import checkpoint as ckpt
    from cnnforge.training.setup import model_for

    path = Path(run_dir)
    if not rundir.is_run_dir(path):
        raise ConfigError("not a run directory (no recipe.yaml and manifest.json)", where=str(path))
    recipe = check_recipe(load_recipe(path / rundir.RECIPE))
    name = resolve_checkpoint(path, checkpoint)
    weights_path = weights_file(path, name)
    info = load_data_info(path, recipe)
    model = model_for(recipe, info)
    weights = ckpt.load_weights(weights_path)
    ckpt.check_compatible(model, weights, str(weights_path))
    model.load_state_dict(weights)
    transform = build_pipeline(recipe.augment.eval, recipe.source, "eval").transform
    device = device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    return Predictor(model, info, transform=transform, device=device, run_dir=path, checkpoint=name)
