"""Building timm models for a dataset: timm adapts the stem and loads weights; cnnforge finds them.

Transfer learning follows timm's own recipe: create the model with the head of the weights,
load them strictly (so a file from another architecture fails instead of leaving layers at
random), then ``reset_classifier`` for the dataset's classes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import timm
import torch
from timm.models import get_pretrained_cfg, split_model_name_tag
from torch import nn

from cnnforge.errors import did_you_mean
from cnnforge.models.transfer import apply_freeze, fetch, one_line, read_state_dict, weights_file

#: the files timm reads from a Hugging Face hub repository, in its order of preference
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def check_name(name: str) -> None:
    """A ValueError naming the closest architectures unless timm has ``name`` (with a tag such as ``.a1_in1k``)."""
    if not timm.is_model(name):
        hint = did_you_mean(split_model_name_tag(name)[0], timm.list_models())
        raise ValueError(f"timm has no model {name!r}" + (f" ({hint})" if hint else "")
                         + "; see `cnnforge list models 'timm/*'`")


def build(name: str, *, num_classes: int, in_channels: int, image_size: Any, pretrained: bool | str, freeze: str,
          **kwargs: Any) -> nn.Module:
    """``timm.create_model`` with the dataset's classes and channels, optionally pretrained and frozen.

    Models timm marks as fixed-size (ViTs) get the data's ``img_size`` unless the recipe sets one.
    """
    model_id = f"timm/{name}"
    check_name(name)
    cfg = get_pretrained_cfg(name)
    size = (image_size, image_size) if isinstance(image_size, int) else image_size
    if cfg is not None and cfg.fixed_input_size and size is not None and "img_size" not in kwargs:
        kwargs["img_size"] = tuple(size)
    if not pretrained:
        model = _create(name, model_id, num_classes=num_classes, in_chans=in_channels, **kwargs)
    else:
        if cfg is None:
            raise ValueError(f"timm has no pretrained configuration for {name!r} to load weights with")
        path = _weights(name, model_id, pretrained, cfg)
        state = read_state_dict(path)
        classifier = cfg.classifier if isinstance(cfg.classifier, str) else (cfg.classifier or ("",))[0]
        head = state.get(f"{classifier}.weight")
        source_classes = int(head.shape[0]) if head is not None else cfg.num_classes
        try:
            model = _create(name, model_id, pretrained=True, num_classes=source_classes, in_chans=in_channels,
                            pretrained_cfg_overlay={"state_dict": state, "num_classes": source_classes}, **kwargs)
        except RuntimeError as exc:  # the strict load: the file belongs to another architecture
            raise ValueError(f"weights from {path} do not fit {model_id}: {one_line(exc)}") from None
        model.pretrained_cfg.update(state_dict=None, file=str(path))  # (also default_cfg) keep no second copy
        if source_classes != num_classes:
            model.reset_classifier(num_classes)
    return apply_freeze(model, freeze, name=model_id)  # type: ignore[arg-type]


def _create(name: str, model_id: str, **kwargs: Any) -> nn.Module:
    try:
        return timm.create_model(name, **kwargs)
    except TypeError as exc:  # an option the model's constructor does not take
        raise ValueError(f"{model_id} does not accept these options: {one_line(exc)}") from None


def _weights(name: str, model_id: str, pretrained: bool | str, cfg: Any) -> Path:
    """The weights file: the user's, or timm's download for ``name`` from the Hugging Face or torch hub cache."""
    if isinstance(pretrained, str):
        return weights_file(pretrained)
    if not (cfg.hf_hub_id or cfg.url):
        raise ValueError(f"timm publishes no pretrained weights for {name!r}; set model.pretrained to a weights file")
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo = cfg.hf_hub_id
        files = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else HF_WEIGHT_FILES
        hits = [try_to_load_from_cache(repo, f) for f in files]
        cached = next((Path(h) for h in hits if isinstance(h, str)), None)
        return Path(fetch(model_id, cached, f"Hugging Face cache (repository {repo})",
                          lambda: _hf_download(repo, files)))
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(cfg.url).path).name

    def download() -> Path:
        cached.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(cfg.url, str(cached), progress=False)
        return cached

    return Path(fetch(model_id, cached, f"torch hub cache ({cached})", download))


def _hf_download(repo: str, files: tuple[str, ...]) -> str:
    """The first of ``files`` the repository has, downloaded into the Hugging Face cache (timm's order)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    for file in files[:-1]:
        try:
            return hf_hub_download(repo, file)
        except EntryNotFoundError:
            continue
    return hf_hub_download(repo, files[-1])
