"""Everything the loop needs, built from a recipe: accelerator, model, optimizer, LR schedule and loss, and
:func:`build_parts`, which assembles them with the data for a run (and for the LR finder)."""
from __future__ import annotations

import logging
import math
import os
from typing import Any

import torch
from torch import nn

from cnnforge.data.loading import DataInfo
from cnnforge.errors import CnnforgeError, ConfigError, recipe_source
from cnnforge.launcher_env import env_int
from cnnforge.recipe import Recipe
from cnnforge.recipe.schema import OptimConfig, ScheduleConfig, TrainConfig
from cnnforge.training.state import TrainParts

log = logging.getLogger("cnnforge")


def make_accelerator(train: TrainConfig) -> Any:
    """An Accelerator that is real DDP on CPUs too, and refuses to run unsynchronised.

    Without CUDA a bare ``Accelerator()`` under ``accelerate launch --multi_gpu`` gives independent
    processes that all think they are rank 0; ``cpu=True`` makes it use gloo instead.
    """
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs

    cuda = torch.cuda.is_available()
    precision = train.precision
    if precision == "fp16" and not cuda:
        log.warning("train.precision: fp16 needs CUDA; training in fp32 on this machine")
        precision = "no"
    launcher_world = env_int("WORLD_SIZE", 1)
    if train.parallel == "none" and launcher_world > 1:
        raise ConfigError(f"is 'none' but the launcher started {launcher_world} processes", where="train.parallel")
    if launcher_world > 1 and not all(os.environ.get(k) for k in ("RANK", "MASTER_ADDR", "MASTER_PORT")):
        raise CnnforgeError(f"WORLD_SIZE={launcher_world} is set but no launcher started the other ranks "
                            "(RANK/MASTER_ADDR/MASTER_PORT missing)", where="environment",
                            hint="start several processes with `accelerate launch --multi_gpu --num_processes N`")
    if launcher_world == 1:  # a second run in one process (a notebook, a sweep worker) may change precision
        from cnnforge.compat.accelerate_internals import reset_accelerator_state

        reset_accelerator_state()
    acc = Accelerator(
        cpu=not cuda, mixed_precision=precision, gradient_accumulation_steps=train.grad_accum,
        kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=True)],
        dataloader_config=DataLoaderConfiguration(non_blocking=cuda),  # the loaders pin memory on CUDA
    )
    if acc.num_processes != launcher_world:
        raise CnnforgeError(
            f"the launcher started {launcher_world} processes but Accelerate sees {acc.num_processes}; "
            "the runs would not be synchronised", where="accelerate launch",
            hint="check `accelerate config` and the --multi_gpu/--num_processes flags")
    return acc


def model_for(recipe: Recipe, info: DataInfo) -> nn.Module:
    """Build the recipe's model for the data; a channel mismatch is caught here, before training."""
    from cnnforge.models.build import build_model

    params = recipe.model.params
    declared = params.pop("in_channels", None)
    if declared is not None and declared != info.channels:
        raise ConfigError(f"is {declared} but {recipe.data.name} images have {info.channels} channel(s)",
                          where=f"{recipe.source}: model.in_channels")
    declared_classes = params.pop("num_classes", None)
    if declared_classes is not None and declared_classes != len(info.classes):
        raise ConfigError(f"is {declared_classes} but {recipe.data.name} has {len(info.classes)} classes",
                          where=f"{recipe.source}: model.num_classes")
    model = build_model(recipe.model.name, num_classes=len(info.classes), in_channels=info.channels,
                        image_size=info.image_size, where=f"{recipe.source}: model", **params)
    _materialize_lazy(model, info)
    return model


def _materialize_lazy(model: nn.Module, info: DataInfo) -> None:
    """Give lazy layers (``nn.LazyLinear`` ...) their shapes with one dry forward: DDP and optimizers need them."""
    from torch.nn.parameter import UninitializedParameter

    if not any(isinstance(p, UninitializedParameter) for p in model.parameters()):
        return
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(2, info.channels, *info.image_size))
    model.train(was_training)


def use_channels_last(recipe: Recipe, model: nn.Module, device: torch.device) -> bool:
    """``train.channels_last``; unset, it is on for conv nets on a CPU and off elsewhere.

    benchmarks/speed_knobs.py measured NHWC 1.15-1.4x faster for every seed conv net on a CPU (oneDNN)
    and no gain for MLPs; on CUDA it is not measured yet, so it stays opt-in there (docs/benchmarks.md).
    """
    if recipe.train.channels_last is not None:
        return recipe.train.channels_last
    return device.type == "cpu" and any(isinstance(m, nn.Conv2d) for m in model.modules())


def speed_up(model: nn.Module, recipe: Recipe, device: torch.device) -> nn.Module:
    """channels_last (:func:`use_channels_last`) and ``train.compile``, applied before Accelerate wraps the model.

    channels_last stores conv weights NHWC (the trainer feeds NHWC inputs to match). compile uses
    ``nn.Module.compile``, in place, so parameter names and checkpoints stay those of the eager model
    (``torch.compile(model)`` would prefix them with ``_orig_mod.``); it is off by default: on a CPU it
    costs minutes of compilation, was slower than eager for two of the four seed models measured and
    behind channels_last for the other two.
    """
    if use_channels_last(recipe, model, device):
        model = model.to(memory_format=torch.channels_last)
    if recipe.train.compile:
        model.compile()
    return model


def wrap_parallel(model: nn.Module, train: TrainConfig, num_processes: int) -> nn.Module:
    """``train.parallel: dp`` is cnnforge's single-process nn.DataParallel; Accelerate never uses it."""
    if train.parallel != "dp":
        return model
    gpus = torch.cuda.device_count()
    if num_processes > 1:
        raise ConfigError("dp is single-process; under `accelerate launch` with several processes use ddp",
                          where="train.parallel")
    if gpus < 2:
        log.warning("train.parallel: dp does nothing here: %d CUDA device(s) visible (it needs 2 or more)", gpus)
        return model
    log.warning("train.parallel: dp wraps the model in nn.DataParallel over %d GPUs", gpus)
    return nn.DataParallel(model)


def param_groups(model: nn.Module, optim: OptimConfig) -> list[dict[str, Any]]:
    """One group, or two when ``optim.head_lr`` gives the classifier head its own learning rate; each
    split once more by ``optim.bias_lr_mult`` (:func:`_bias_groups`)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if optim.head_lr is None:
        groups: list[dict[str, Any]] = [{"params": params}]
    else:
        head = _head_parameters(model)
        if not head:
            raise ConfigError("the model has no recognisable classifier head (fc, head, heads, classifier)",
                              where="optim.head_lr")
        head_ids = {id(p) for p in head}
        body = [p for p in params if id(p) not in head_ids]
        groups = [{"params": body}, {"params": [p for p in head if p.requires_grad], "lr": optim.head_lr}]
    return groups if optim.bias_lr_mult == 1.0 else _bias_groups(groups, optim)


def _bias_groups(groups: list[dict[str, Any]], optim: OptimConfig) -> list[dict[str, Any]]:
    """Each group's biases and normalisation parameters (every 1-D parameter: timm's no-decay rule) in a group
    of their own, at ``lr x bias_lr_mult`` and ``weight_decay / bias_lr_mult``.

    airbench94 trains its BatchNorm biases 64x faster; dividing the decay keeps its product with the
    learning rate (the decay per step of SGD and AdamW) that of the other parameters, as airbench does.
    """
    k, out = optim.bias_lr_mult, []
    for group in groups:
        weights = [p for p in group["params"] if p.ndim > 1]
        biases = [p for p in group["params"] if p.ndim <= 1]
        if weights:
            out.append({**group, "params": weights})
        if biases:
            out.append({"params": biases, "lr": group.get("lr", optim.lr) * k, "weight_decay": optim.weight_decay / k})
    if all(p.ndim > 1 for group in groups for p in group["params"]):
        raise ConfigError("the model has no trainable biases or normalisation parameters to scale",
                          where="optim.bias_lr_mult", hint="remove optim.bias_lr_mult")
    return out


def _head_parameters(model: nn.Module) -> list[nn.Parameter]:
    from cnnforge.models.transfer import classifier_of  # the same head that `freeze: backbone` keeps trainable

    head = classifier_of(model)
    return list(head.parameters()) if head is not None else []


def make_optimizer(model: nn.Module, optim: OptimConfig) -> torch.optim.Optimizer:
    """The registered optimizer ``optim.name`` over ``model``'s trainable parameters, in cnnforge's parameter groups."""
    from cnnforge.training.builders import build_part

    context = {"params": param_groups(model, optim), "lr": optim.lr, "weight_decay": optim.weight_decay}
    return build_part("optimizers", optim.name, optim.params, context, "optim", torch.optim.Optimizer)


def make_loss(train: TrainConfig, weight: torch.Tensor | None = None, label_smoothing: float | None = None) -> Any:
    """``train.loss``: the registered loss, given the class weights and the label smoothing (``train.label_smoothing``
    unless the caller folded it into soft targets already)."""
    from cnnforge.training.builders import build_part

    smoothing = train.label_smoothing if label_smoothing is None else label_smoothing
    context = {"weight": weight, "label_smoothing": smoothing}
    return build_part("losses", train.loss.name, train.loss.params, context, "train.loss", None,
                      required=("weight",) if weight is not None else ())


def check_skippable(optimizer: torch.optim.Optimizer, train: TrainConfig) -> None:
    """``train.on_nan: skip`` needs an optimizer that honours ``found_inf`` (torch's fused ones) to skip a step."""
    if train.on_nan == "skip" and not optimizer.defaults.get("fused"):
        raise ConfigError(f"skip needs a fused optimizer (sgd, adam, adamw); {type(optimizer).__name__} would "
                          "apply the non-finite step", where="train.on_nan", hint="use stop or rollback")


def stepped_optimizer(prepared: Any, acc: Any) -> Any:
    """The optimizer the training step calls: Accelerate's wrapper only when it has a loss scaler to run (fp16).

    Otherwise the wrapper adds nothing the step needs (the step gates on ``acc.sync_gradients``
    itself) but costs ~80 us a step: it looks for an optional package on ``sys.path`` twice per
    ``step()`` (``is_lomo_available``) and inspects ``zero_grad``'s signature per call.
    """
    return prepared if acc.scaler is not None else prepared.optimizer


def steps_per_epoch(batches: int, grad_accum: int) -> int:
    """Optimizer steps in an epoch of ``batches`` batches: the last accumulation steps even when it is short."""
    return math.ceil(batches / grad_accum)


def make_schedule(optimizer: torch.optim.Optimizer, schedule: ScheduleConfig, epochs: int,
                  steps_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler:
    """The registered LR schedule ``schedule.name``, stepped after every optimizer step (training/schedules.py)."""
    from cnnforge.training.builders import build_part

    context = {"optimizer": optimizer, "epochs": epochs, "steps_per_epoch": steps_per_epoch}
    return build_part("schedules", schedule.name, schedule.params, context, "schedule",
                      torch.optim.lr_scheduler.LRScheduler)


def constant_lr(schedule: ScheduleConfig) -> bool:
    """Whether the schedule's factor is 1 at every step (``none`` without warmup): nothing to step then."""
    return schedule.name == "none" and not schedule.params.get("warmup_epochs")


def scale_lr(schedule: torch.optim.lr_scheduler.LRScheduler, scale: float) -> None:
    """Multiply the schedule's base learning rates by ``scale`` (relative to the recipe's), keeping its position.

    A ``LambdaLR`` recomputes each LR from its factor; another schedule's LRs scale with their base.
    """
    groups = schedule.optimizer.param_groups
    old, schedule.base_lrs = schedule.base_lrs, [g["initial_lr"] * scale for g in groups]
    factors = getattr(schedule, "lr_lambdas", None)
    for i, (group, base) in enumerate(zip(groups, schedule.base_lrs, strict=False)):
        group["lr"] = base * factors[i](schedule.last_epoch) if factors else group["lr"] * base / old[i]


def adopt_hyperparameters(schedule: torch.optim.lr_scheduler.LRScheduler, groups: list[dict[str, Any]],
                          lr_scale: float) -> None:
    """Put ``groups`` (the optimizer's param-group settings as this recipe built them) back after loading another
    run's checkpoint, keeping the loaded optimizer state and the schedule's position; ``lr_scale`` as in
    :func:`scale_lr`."""
    for group, own in zip(schedule.optimizer.param_groups, groups, strict=True):
        group.update(own)
    scale_lr(schedule, lr_scale)


def build_parts(recipe: Recipe, acc: Any, *, evaluate: bool = True) -> TrainParts:
    """The model, optimizer, schedule and batches of ``recipe``, prepared by Accelerate; the run directory and what
    depends on it are the caller's. ``evaluate=False`` (the LR finder) leaves the validation and test batches out."""
    from cnnforge.data.loading import build_splits, split_loader
    from cnnforge.training.batches import eval_batches, train_batches
    from cnnforge.training.whiten import whiten_first_conv

    splits = build_splits(recipe)
    with recipe_source(recipe.source):  # data.balance: sampler needs the training labels
        loaders = {split: split_loader(getattr(splits, split), recipe.data, recipe.seed, train=split == "train")
                   for split in ("train", "val", "test")}
    sampler = loaders["train"].sampler
    with recipe_source(recipe.source):
        model = model_for(recipe, splits.info)
        if recipe.train.whiten_init is not None:  # before the optimizer: frozen whitening weights are not its params
            whiten_first_conv(model, splits.train, splits.info, recipe.train.whiten_init)
        model = speed_up(model, recipe, acc.device)
        model = wrap_parallel(model, recipe.train, acc.num_processes)
        optimizer = make_optimizer(model, recipe.optim)
        check_skippable(optimizer, recipe.train)
    model, optimizer, loaders["train"], loaders["val"], loaders["test"] = acc.prepare(
        model, optimizer, loaders["train"], loaders["val"], loaders["test"])
    optimizer = stepped_optimizer(optimizer, acc)
    with recipe_source(recipe.source):
        schedule = make_schedule(optimizer, recipe.schedule, recipe.train.epochs,
                                 steps_per_epoch(len(loaders["train"]), recipe.train.grad_accum))
    batches = train_batches(recipe, splits.train, loaders["train"], sampler, acc)
    evals = eval_batches(recipe, splits, loaders, batches, acc) if evaluate else {}
    return TrainParts(acc, model, optimizer, schedule, batches, evals, loaders, splits)
