"""The end of a run: the final weights, the test evaluation, ``summary.json`` and the reports.

The summary says why training ended (``stopped``), which weights were tested and whether every DDP rank ended
with the same weights (checked, not assumed).
"""
from __future__ import annotations

import hashlib
from typing import Any

import torch

from cnnforge import rundir
from cnnforge.rundir import checkpoint as ckpt
from cnnforge.training.state import TrainState


def finish(trainer: Any, state: TrainState) -> dict[str, Any]:
    """Final weights, the test evaluation (with the weights ``rundir.tested_weights`` names), summary.json and the
    reports; the summary, on every rank."""
    recipe, acc, run_dir = trainer.recipe, trainer.acc, trainer.run_dir
    if acc.is_main_process:
        ckpt.save_weights(trainer.weights_module().state_dict(), run_dir / rundir.WEIGHTS)
    acc.wait_for_everyone()
    tested_with = rundir.tested_weights(run_dir)
    if tested_with == "best":
        trainer.weights_module().load_state_dict(ckpt.load_weights(rundir.weights_file(run_dir, "best")))
    test = trainer.evaluate("test")
    in_sync = _ranks_in_sync(trainer.bare_model(), acc)
    history = rundir.read_metrics(run_dir) if acc.is_main_process else []
    metric = recipe.train.best_metric
    summary: dict[str, Any] = {
        "test/acc": test.acc, "test/loss": test.loss, "test/balanced_acc": test.balanced_acc,
        "test/macro_f1": test.macro_f1, f"best/{metric}": state.best_value, "best/epoch": state.best_epoch,
        "stopped": state.stopped or "epochs", "stopped_epoch": state.epoch,
        "test/weights": tested_with, "epochs": state.epoch, "steps": state.global_step,
        "train/time_s": round(state.train_time, 3), "world_size": acc.num_processes,
        "test/samples": int(len(test.y_true)),
        "ranks_in_sync": in_sync,
    }
    if history:
        summary.update({f"final/{k}": v for k, v in history[-1].items() if k.startswith(("train/", "val/"))})
    if state.stop_reason:
        summary["stop_reason"] = state.stop_reason
    if recipe.train.on_nan != "stop":
        summary["train/skipped_steps"] = state.skipped_steps
        summary["train/rollbacks"] = state.rollbacks
    if acc.is_main_process:
        from cnnforge.training.run_reports import write_run_reports

        rundir.write_json(run_dir / rundir.SUMMARY, summary)
        write_run_reports(run_dir, test, trainer.info, history, split="test", checkpoint=tested_with,
                          images=trainer.loaders["test"].dataset, plots=recipe.train.plots)
    acc.wait_for_everyone()
    return summary


def _ranks_in_sync(model: Any, acc: Any) -> bool:
    """Whether every rank ends with bit-identical weights (DDP's promise, checked rather than assumed)."""
    if acc.num_processes == 1:
        return True
    from accelerate.utils import gather_object

    digest = hashlib.sha256()
    for key, tensor in model.state_dict().items():
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().to(torch.float64).numpy().tobytes())
    return len(set(gather_object([digest.hexdigest()]))) == 1
