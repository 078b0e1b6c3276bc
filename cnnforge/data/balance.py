"""Class imbalance: ``data.balance: loss`` (class weights in the loss) or ``sampler`` (class-balanced draws).

``loss`` weights the cross-entropy by scikit-learn's ``compute_class_weight("balanced")`` of the
training split (``n / (classes × count)``), or by ``train.class_weights``. ``sampler`` draws each
epoch's ``len(train)`` samples with replacement, each with probability proportional to one over its
class's count (``torch.multinomial``, what torch's ``WeightedRandomSampler`` draws with, without its
per-index Python iterator), from a generator seeded by (seed, epoch): the
draws are a function of the epoch like :class:`~cnnforge.data.loading.EpochSampler`'s shuffle, so
Accelerate shards them across DDP ranks the same way and a resume from the middle of an epoch
continues them exactly. Both need the training labels without decoding every image (an array on the
dataset); both leave validation and test alone, so their metrics describe the data as it is.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from cnnforge.data.loading import training_labels
from cnnforge.errors import ConfigError

#: the largest class is this many times the smallest (or more): a run says so at its start
IMBALANCE_RATIO = 3.0


def class_weights(recipe: Any, train: Any, num_classes: int) -> torch.Tensor | None:
    """The cross-entropy's weight per class: ``train.class_weights``, or with ``data.balance: loss`` the
    ``balanced`` weights of the training split; None when the loss is unweighted.

    A class missing from the training split keeps weight 1 (it is never a target, so only label
    smoothing sees it); scikit-learn refuses to weigh a class it has no sample of.
    """
    given = recipe.train.class_weights
    if given is not None:
        if len(given) != num_classes:
            raise ConfigError(f"has {len(given)} value(s) but the dataset has {num_classes} classes",
                              where="train.class_weights", hint="give one positive weight per class, in class order")
        return torch.tensor(given, dtype=torch.float32)
    if recipe.data.balance != "loss":
        return None
    from sklearn.utils.class_weight import compute_class_weight

    labels = training_labels(train)
    present = np.unique(labels)
    weights = np.ones(num_classes)
    weights[present] = compute_class_weight("balanced", classes=present, y=labels)
    return torch.tensor(weights, dtype=torch.float32)


def balance_notes(balance: str, labels: np.ndarray, classes: Sequence[str]) -> tuple[list[str], str | None]:
    """(a warning per class without training images, the imbalance line or None) of the training ``labels``.

    The imbalance line names the largest and the smallest class with their counts when the first is
    :data:`IMBALANCE_RATIO` times the second or more, and the keys that help.
    """
    counts = np.bincount(labels, minlength=len(classes))
    missing = [f"class {classes[i]!r} has no training images (after data.split): the model cannot learn it; "
               "it is still scored on the test split" for i in np.flatnonzero(counts == 0)]
    present = np.flatnonzero(counts)
    big, small = present[np.argmax(counts[present])], present[np.argmin(counts[present])]
    ratio = counts[big] / counts[small]
    if ratio < IMBALANCE_RATIO:
        return missing, None
    head = (f"class imbalance: {classes[big]!r} has {counts[big]} training images, {classes[small]!r} "
            f"{counts[small]} ({ratio:.1f}x)")
    if balance == "none":
        return missing, (f"{head}; consider data.balance: loss or sampler (or train.class_weights), "
                         "train.loss: {name: focal} and train.best_metric: val/balanced_acc")
    return missing, f"{head}; data.balance: {balance} is on; judge runs by val/balanced_acc or val/macro_f1"
