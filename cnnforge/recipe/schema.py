"""The recipe's schema: the YAML that describes a run, validated by pydantic before anything heavy starts.

Each top-level key is a section model; a section whose ``name`` picks a registered builder keeps its other
keys as that builder's params (checked against the registry by :mod:`cnnforge.recipe.checks`).
"""
from __future__ import annotations

import os
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, Strict, field_validator, model_validator

from cnnforge.recipe.section import Bool, Fraction, Positive, Section
from cnnforge.recipe.stopping import Duration, EarlyStopConfig
from cnnforge.recipe.tricks import EvalConfig, LookaheadConfig, WhitenConfig, switch
from cnnforge.recipe.tune import TuneConfig


class _Named(BaseModel):
    """A section whose ``name`` picks a registered builder and whose other keys are its params."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    name: str

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class DataConfig(_Named):
    name: str = "digits"
    root: str = Field(default_factory=lambda: os.environ.get("CNNFORGE_DATA", "data"))
    batch_size: Positive = 64
    eval_batch_size: Positive | None = None
    num_workers: Annotated[int, Strict(), Field(ge=0)] = 2
    val_fraction: Fraction = 0.1
    split: tuple[Fraction, Fraction, Fraction] = (0.6, 0.2, 0.2)
    download: Bool = False
    on_device: Literal["auto"] | Bool = "auto"  # hold the images on the device (training/batches.py)
    balance: Literal["none", "loss", "sampler"] = "none"  # class imbalance (data/balance.py)

    @field_validator("split")
    @classmethod
    def _split_sums_to_one(cls, split: tuple[float, float, float]) -> tuple[float, float, float]:
        if abs(sum(split) - 1.0) > 1e-6:
            raise ValueError(f"split ratios must add up to 1, got {list(split)} (sum {sum(split):g})")
        return split

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class OpSpec(_Named):
    """One augmentation op: ``{name: rotate, limit: 20}``."""


class MixSpec(Section):
    """One op of ``augment.batch`` (data/batch_mix.py): a batch is mixed by it with probability ``prob``.

    ``mixup_cutmix`` is timm's ``Mixup`` in one entry: a mixed batch is cut (``cutmix_alpha``) with probability
    ``switch_prob``, else blended (``alpha``)."""

    name: Literal["mixup", "cutmix", "mixup_cutmix"]
    alpha: Annotated[float, Field(gt=0)] = 1.0  # lambda ~ Beta(alpha, alpha)
    prob: Annotated[float, Field(gt=0, le=1)] = 1.0
    switch_prob: Annotated[float, Field(ge=0, le=1)] | None = None  # mixup_cutmix only (default 0.5)
    cutmix_alpha: Annotated[float, Field(gt=0)] | None = None  # mixup_cutmix only (default 1.0)

    @model_validator(mode="after")
    def _switch_keys_need_both_ops(self) -> MixSpec:
        for key in ("switch_prob", "cutmix_alpha"):
            if self.name != "mixup_cutmix" and getattr(self, key) is not None:
                raise ValueError(f"{key} belongs to {{name: mixup_cutmix}} (timm's Mixup: MixUp or CutMix per "
                                 f"batch), not to {self.name}")
        return self

    def draws(self) -> list[tuple[str, float, float]]:
        """(op, alpha, probability) of each way this entry mixes a batch."""
        if self.name != "mixup_cutmix":
            return [(self.name, self.alpha, self.prob)]
        switch = 0.5 if self.switch_prob is None else self.switch_prob
        cut_alpha = 1.0 if self.cutmix_alpha is None else self.cutmix_alpha
        return [("mixup", self.alpha, self.prob * (1 - switch)), ("cutmix", cut_alpha, self.prob * switch)]


class AugmentConfig(Section):
    train: list[OpSpec] | str | None = None
    eval: list[OpSpec] | str | None = None
    mode: Literal["sample", "batch"] = "sample"
    batch: list[MixSpec] = Field(default_factory=list)  # at most one of them mixes each training batch

    @field_validator("batch")
    @classmethod
    def _one_op_per_batch(cls, batch: list[MixSpec]) -> list[MixSpec]:
        if sum(op.prob for op in batch) > 1 + 1e-9:
            raise ValueError(f"the probs add up to {sum(op.prob for op in batch):g}; each batch is mixed by at most "
                             "one op, so they must add up to 1 at most (e.g. 0.5 each)")
        return batch


class ModelConfig(_Named):
    name: str = "convnet"


class OptimConfig(_Named):
    """``optim``: ``name`` is a registered optimizer (``cnnforge list optimizers``); the keys here are cnnforge's
    and apply to any optimizer (the parameter groups of training/parts.py), every other key is the optimizer's."""

    model_config = ConfigDict(extra="allow", validate_assignment=True, allow_inf_nan=False)
    name: str = "sgd"
    # auto: the LR range test picks it before training (training/lr_finder.py); the run records the value
    lr: Annotated[float, Field(gt=0)] | Literal["auto"] = 0.01
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    head_lr: Annotated[float, Field(gt=0)] | None = None
    bias_lr_mult: Annotated[float, Field(gt=0)] = 1.0  # lr x this for biases and norm params (training/parts.py)

    @model_validator(mode="after")
    def _auto_lr_alone(self) -> OptimConfig:
        if self.lr == "auto" and self.head_lr is not None:  # the range test sweeps one learning rate, not two
            raise ValueError("lr: auto cannot be combined with head_lr; set optim.lr to a number, "
                             "or run `cnnforge lr-find` and pick both")
        return self


class ScheduleConfig(_Named):
    """``schedule``: a registered LR schedule (``cnnforge list schedules``) and its params."""

    model_config = ConfigDict(extra="allow", validate_assignment=True, allow_inf_nan=False)
    name: str = "none"


class LossConfig(_Named):
    """``train.loss``: a registered loss (``cnnforge list losses``) and its params."""

    name: str = "cross_entropy"


class CallbackSpec(_Named):
    """One of ``callbacks:``, a registered callback (``cnnforge list callbacks``) and its params."""


class TrainConfig(Section):
    epochs: Positive = 10
    precision: Literal["no", "bf16", "fp16"] = "no"
    parallel: Literal["auto", "ddp", "dp", "none"] = "auto"
    grad_accum: Positive = 1
    clip_grad_norm: Annotated[float, Field(gt=0)] | None = None
    label_smoothing: Fraction = 0.0  # given to the loss, when it takes it
    loss: LossConfig = Field(default_factory=LossConfig)
    class_weights: list[Annotated[float, Field(gt=0)]] | None = None  # the loss's weight per class (data/balance.py)
    # decay of a moving average of the weights that evaluation uses
    ema: Annotated[float, Field(gt=0, lt=1)] | None = None
    lookahead: switch(LookaheadConfig) = None  # pulls the training weights to a slow average (training/lookahead.py)
    whiten_init: switch(WhitenConfig) = None  # the first conv from data patches (training/whiten.py)
    checkpoint_every: Annotated[int, Strict(), Field(ge=0)] = 1
    checkpoint_every_steps: Annotated[int, Strict(), Field(ge=0)] = 0
    keep_checkpoints: Positive = 2
    best_metric: str = "val/acc"
    best_mode: Literal["max", "min"] = "max"
    early_stop: switch(EarlyStopConfig) = None  # training/stopping.py
    max_time: Duration | None = None  # seconds, or "1h30m": training ends at the last epoch boundary that fits
    on_nan: Literal["stop", "skip", "rollback"] = "stop"
    channels_last: Bool | None = None  # None: auto, on for conv nets on a CPU (benchmarks/speed_knobs.py)
    compile: Bool = False
    plots: Bool = True  # the report's PNGs; metrics.json, summary.md and predictions.csv are always written
    out_dir: str = "runs"
    # one fixed run directory instead of out_dir/<name>/<time>: rerunning the command continues it (training/requeue.py)
    run_dir: str | None = None
    # signals that stop the run at the next optimizer step with a checkpoint (training/preemption.py); [] turns it off
    signals: list[Literal["TERM", "USR1", "USR2", "HUP"]] = Field(default_factory=lambda: ["TERM", "USR1"])

    @field_validator("precision", mode="before")
    @classmethod
    def _yaml_no(cls, value: Any) -> Any:
        return "no" if value is False else value  # YAML reads a bare `no` (train.precision=no) as false


class TrackingConfig(Section):
    backend: Literal["wandb", "tensorboard", "csv", "none"] = "none"
    project: str = "cnnforge"
    entity: str | None = None
    group: str | None = None
    log_model: Bool = False


class Recipe(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    seed: Annotated[int, Strict(), Field(ge=0, lt=2**32)] = 0  # NumPy seeds are 32-bit
    data: DataConfig = Field(default_factory=DataConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    tune: TuneConfig | None = None
    callbacks: list[CallbackSpec] = Field(default_factory=list)

    #: where the recipe came from, for error messages (not part of the YAML)
    source: str = Field(default="<recipe>", exclude=True)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=False)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)
