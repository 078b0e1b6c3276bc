"""What a trainer writes into a checkpoint and reads back from one: the weights, the optimizer, schedule, scaler,
lookahead and callbacks' states, and every rank's RNG and metric sums, which is what makes a resumed run the
uninterrupted one to the last bit. The folder format itself (manifest, checksums, atomic writes, pruning) is
:mod:`cnnforge.rundir.checkpoint`'s; this module decides what goes in it.
"""
from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from cnnforge.errors import CnnforgeError
from cnnforge.rundir import checkpoint as ckpt
from cnnforge.training.assemble import adopt_hyperparameters
from cnnforge.training.state import TrainState


def save(trainer: Any, state: TrainState) -> Path | None:
    """Every rank contributes its RNG and metric sums; the main process writes the folder (and gets its path)."""
    from accelerate.utils import gather_object

    acc = trainer.acc
    mine = {"torch": torch.get_rng_state(), "sums": trainer.sums.cpu().clone()}
    if torch.cuda.is_available():
        mine["cuda"] = torch.cuda.get_rng_state(acc.device)
    ranks = gather_object([mine]) if acc.num_processes > 1 else [mine]
    path = None
    if acc.is_main_process:
        path = ckpt.save_checkpoint(trainer.ckpt_dir, f"e{state.epoch:04d}-b{state.batch:06d}",
                                    model=trainer.bare_model().state_dict(), tensors=_tensors(trainer, ranks),
                                    state=asdict(state), keep=trainer.recipe.train.keep_checkpoints,
                                    identity=trainer.parts.identity)
    acc.wait_for_everyone()
    return path


def _tensors(trainer: Any, ranks: list[dict[str, Any]]) -> dict[str, Any]:
    tensors: dict[str, Any] = {"optimizer": trainer.optimizer.state_dict(), "scheduler": trainer.schedule.state_dict(),
                               "ranks": ranks}
    if trainer.acc.scaler is not None:
        tensors["scaler"] = trainer.acc.scaler.state_dict()
    states = trainer.callbacks.states(trainer.ctx)
    if states:
        tensors["callbacks"] = states
    lookahead = trainer.lookahead.state_dict() if trainer.lookahead is not None else None
    if lookahead is not None:
        tensors["lookahead"] = lookahead
    return tensors


def restore(trainer: Any, path: Path) -> TrainState:
    """Load the checkpoint folder ``path`` into ``trainer`` on every rank; the :class:`TrainState` it was saved at."""
    acc = trainer.acc
    weights, tensors, state = ckpt.load_checkpoint(path, TrainState)
    ckpt.check_compatible(trainer.bare_model(), weights, str(path))
    trainer.bare_model().load_state_dict(weights)
    trainer.optimizer.load_state_dict(tensors["optimizer"])
    trainer.schedule.load_state_dict(tensors["scheduler"])
    if "scaler" in tensors and acc.scaler is not None:
        acc.scaler.load_state_dict(tensors["scaler"])
    if trainer.lookahead is not None:  # absent from the checkpoint: it had not started there
        trainer.lookahead.load_state_dict(tensors.get("lookahead"), acc.device)
    ranks = tensors["ranks"]
    if len(ranks) != acc.num_processes:
        raise CnnforgeError(f"checkpoint was written by {len(ranks)} process(es), this run has {acc.num_processes}",
                            where=str(path), hint="launch with the same --num_processes")
    mine = ranks[acc.process_index]
    torch.set_rng_state(mine["torch"])
    if "cuda" in mine and torch.cuda.is_available():
        torch.cuda.set_rng_state(mine["cuda"], acc.device)
    trainer.sums = mine["sums"].to(acc.device)
    trainer.ctx.epoch, trainer.ctx.global_step = state.epoch, state.global_step
    trainer.callbacks.restore(trainer.ctx, tensors.get("callbacks", {}), path)  # none saved (resume --force): anew
    trainer.callbacks.settle(acc)
    return state


def warm_start(trainer: Any, path: Path) -> TrainState:
    """Continue from another run's checkpoint with this recipe's hyperparameters (population-based training).

    The weights, the optimizer's state (momentum, Adam's moments), the schedule's position and the epoch
    are the checkpoint's; the learning rate, weight decay and the like are this recipe's, or the perturbed
    values would be overwritten by the ones the checkpoint was trained with. The best epoch and the early
    stop's count are this run's own: the other run's best weights are not in its checkpoint.
    """
    own = [{k: v for k, v in group.items() if k != "params"} for group in trainer.optimizer.param_groups]
    state = restore(trainer, path)
    adopt_hyperparameters(trainer.schedule, own, state.lr_scale)
    return replace(state, best_value=None, best_epoch=None, best_tiebreak=None, stop_best=None, stale_evals=0,
                   stopped=None)
