"""The built-in losses of ``train.loss``: ``cross_entropy`` (the default) and ``focal``, registered like a plugin's.

A loss builder receives what cnnforge knows when it declares it: ``weight`` (per-class weights, a float
tensor on the device, or None) and ``label_smoothing`` (``train.label_smoothing``). It returns
``loss(logits, target) -> scalar tensor``, where ``target`` is class indices (N,) or class
probabilities (N, C) (mixup, cutmix and distillation give soft targets), so every loss takes both.
Nothing here imports torch until a loss is built: ``cnnforge check`` and ``cnnforge list`` stay light.
"""
from __future__ import annotations

import functools
from typing import Annotated, Any

from pydantic import Field

from cnnforge.registry import register_loss


@register_loss
def cross_entropy(*, weight: Any = None, label_smoothing: float = 0.0) -> Any:
    """torch's cross-entropy: class indices or probabilities as targets, class weights, label smoothing."""
    from torch import nn

    return nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)


@register_loss
def focal(*, weight: Any = None, label_smoothing: float = 0.0,
          gamma: Annotated[float, Field(ge=0)] = 2.0) -> Any:
    """Multiclass focal loss (Lin et al. 2017): cross-entropy scaled by (1 - p)^gamma, for skewed classes.

    torchvision's ``sigmoid_focal_loss`` is the binary (one-vs-rest) form; this is the softmax form.
    ``gamma: 0`` is cross-entropy.
    """
    return functools.partial(focal_loss, gamma=gamma, weight=weight, label_smoothing=label_smoothing)


def focal_loss(logits: Any, target: Any, *, gamma: float, weight: Any = None, label_smoothing: float = 0.0) -> Any:
    """The mean over samples of ``-sum_c w_c t_c (1 - p_c)^gamma log p_c`` (``t``: the smoothed target distribution).

    Class weights scale each sample's term without renormalising the mean by them (RetinaNet's alpha).
    """
    import torch

    log_p = torch.log_softmax(logits.float(), dim=1)
    classes = logits.shape[1]
    if target.ndim == 1:  # one-hot by scatter: F.one_hot checks the labels' range with two host reads
        target = torch.zeros_like(log_p).scatter_(1, target[:, None], 1.0)
    if label_smoothing:
        target = target * (1.0 - label_smoothing) + label_smoothing / classes
    terms = -target * (1.0 - log_p.exp()).pow(gamma) * log_p
    if weight is not None:
        terms = terms * weight
    return terms.sum(1).mean()
