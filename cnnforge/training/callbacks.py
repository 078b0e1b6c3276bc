"""Callbacks: code a recipe adds to training by name (``callbacks: [{name, ...}]``), through a small surface.

A callback subclasses :class:`Callback` and overrides what it needs (the base's hooks do nothing):

- ``on_fit_start(ctx)``: once per process start, before a checkpoint is restored (``ctx.epoch`` is then 0);
  the place to set ``ctx.objective`` (what the step minimises) or ``ctx.eval_model`` (what is evaluated and saved);
- ``on_epoch_end(ctx, metrics)``: after validation; may add keys to ``metrics`` (``metrics.jsonl``, trackers) and
  may call ``ctx.request_stop(reason)``;
- ``on_checkpoint(ctx) -> state`` / ``on_restore(ctx, state)``: the callback's state, saved inside every
  checkpoint (``callbacks.pt``, plain tensors and containers, loaded with ``weights_only=True``), so a resumed
  run continues exactly;
- ``on_fit_end(ctx, summary)``: after the test evaluation, ``summary.json`` and the reports;
- ``on_train_batch_end(ctx)``: only for a callback that defines it, after every optimizer step. The step itself
  never reads the device; a hook that does (``.item()``, ``float(t)``, ``.cpu()``) makes every step wait for
  the GPU. Without such a hook nothing is called per step.

Hooks run on the main process only unless the callback sets ``all_ranks = True`` (one that changes the
weights, the objective or evaluation must). A hook that raises is that callback's failure: it is named
with its package, the run writes a checkpoint and stops (at the end of the epoch for a per-step hook, so
that every rank stops at the same point), and ``cnnforge resume`` continues from that checkpoint.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from cnnforge.errors import CnnforgeError, ConfigError


class Callback:
    """Base of every callback; see the module's docstring for when each hook runs."""

    all_ranks: ClassVar[bool] = False

    def on_fit_start(self, ctx: FitContext) -> None:
        """Before training (and before a checkpoint is restored)."""

    def on_epoch_end(self, ctx: FitContext, metrics: dict[str, Any]) -> None:
        """After an epoch's validation; ``ctx.epoch`` epochs are complete."""

    def on_checkpoint(self, ctx: FitContext) -> Any:
        """The state to save in the checkpoint being written (None: nothing)."""
        return None

    def on_restore(self, ctx: FitContext, state: Any) -> None:
        """Take back the state :meth:`on_checkpoint` returned (never called with None)."""

    def on_fit_end(self, ctx: FitContext, summary: dict[str, Any]) -> None:
        """After the test evaluation; ``summary`` is what ``summary.json`` holds."""


@dataclass
class FitContext:
    """What a hook may read (and the three things it may change: ``objective``, ``eval_model``, a stop request)."""

    recipe: Any
    run_dir: Path
    acc: Any  # the Accelerator
    model: Any  # the trained nn.Module, unwrapped from DDP
    optimizer: Any
    info: Any  # DataInfo: classes, channels, image size, normalisation statistics
    objective: Callable[[Any, Any, Any], Any]  # objective(inputs, logits, target) -> loss the step minimises
    evaluate: Callable[[str], Any]  # evaluate("val") -> EvalResult (loss, acc) of the evaluated weights
    train_inputs: Callable[[int], Iterator[Any]]  # train_inputs(epoch): that epoch's normalised training inputs
    eval_model: Any = None  # set: these weights are evaluated and saved instead of ``model``'s (EMA, SWA)
    epoch: int = 0  # epochs complete
    global_step: int = 0  # optimizer steps so far
    stop_reason: str | None = None

    @property
    def is_main_process(self) -> bool:
        return bool(self.acc.is_main_process)

    def request_stop(self, reason: str) -> None:
        """End training after this epoch (with a checkpoint), then test as after the last epoch."""
        self.stop_reason = reason


@dataclass
class Attached:
    """A callback of the run: its recipe key (``callbacks[0]``, ``train.ema``: its state's key in checkpoints),
    where its errors point (the recipe file, the key, the callback's name and package) and the instance."""

    key: str
    where: str
    callback: Callback


@dataclass
class CallbackList:
    """The run's callbacks on this process, called in recipe order; failures are kept until every rank agrees."""

    attached: list[Attached]
    present: bool  # whether the run has callbacks on any rank: then every rank meets at their agreements
    failures: list[CnnforgeError] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.per_step = [a for a in self.attached if hasattr(a.callback, "on_train_batch_end")]

    def _run(self, a: Attached, hook: str, *args: Any, error: type[CnnforgeError] = CnnforgeError,
             detail: str = "") -> Any:
        """``a``'s ``hook(*args)``; when it raises, the failure is noted (and a per-step hook is not called again).

        The callback stays attached: the checkpoint the run then writes keeps its state, so a resume continues it.
        """
        from cnnforge.plugins import PluginFailure, guarded

        try:
            with guarded():
                return getattr(a.callback, hook)(*args)
        except (Exception, PluginFailure) as exc:
            reason = exc.one_line() if isinstance(exc, CnnforgeError) else str(exc) if isinstance(exc, PluginFailure) \
                else f"{type(exc).__name__}: {exc}"
            kind = ConfigError if isinstance(exc, ConfigError) else error  # a bad setting stays one (exit 2)
            self.failures.append(kind(f"{hook}{detail} failed: {reason}", where=a.where))
            self.per_step = [other for other in self.per_step if other is not a]
            return None

    def call(self, hook: str, *args: Any) -> None:
        """``hook(*args)`` of every callback, in order."""
        for a in self.attached:
            self._run(a, hook, *args)

    def after_step(self, ctx: FitContext) -> None:
        """``on_train_batch_end`` of the callbacks that define it (the trainer calls this only when there are any)."""
        for a in list(self.per_step):
            self._run(a, "on_train_batch_end", ctx)

    def states(self, ctx: FitContext) -> dict[str, Any]:
        """``{key: state}`` of every callback with a state to save."""
        states = {a.key: self._run(a, "on_checkpoint", ctx) for a in self.attached}
        return {key: state for key, state in states.items() if state is not None}

    def restore(self, ctx: FitContext, states: dict[str, Any], checkpoint: Path) -> None:
        """Hand each callback its state from ``checkpoint``; one that cannot take it is a configuration error."""
        for a in self.attached:
            if a.key in states:
                self._run(a, "on_restore", ctx, states[a.key], error=ConfigError,
                          detail=f" with its state in {checkpoint}")

    def agree(self, acc: Any, stop_reason: str | None = None) -> tuple[str | None, CnnforgeError | None]:
        """(a stop request, the first failure) of any rank, on every rank: one collective under DDP, so a rank
        whose callback failed or asked to stop never waits alone for the others."""
        mine = (stop_reason, [(type(f) is ConfigError, f.one_line()) for f in self.failures])
        ranks = [mine]
        if self.present and acc.num_processes > 1:
            from accelerate.utils import gather_object

            ranks = gather_object([mine])
        reason = next((r for r, _ in ranks if r), None)
        failures = [f for _, fs in ranks for f in fs]
        if not failures:
            return reason, None
        config, line = failures[0]
        return reason, (ConfigError if config else CnnforgeError)(line)

    def settle(self, acc: Any) -> None:
        """Raise the first failure of any rank on every rank."""
        _, failure = self.agree(acc)
        if failure is not None:
            raise failure
