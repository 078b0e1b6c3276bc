"""No host sync and no collective of cnnforge's own in a steady-state training step (issue 19).

On a CPU a host sync costs nothing, so it is counted instead of timed: a ``TorchDispatchMode`` sees
every ``aten::_local_scalar_dense`` (``.item()``, ``float(t)``, ``bool(t)``), and wrappers count
``Tensor.tolist/cpu/numpy`` (device-to-host copies on a GPU) and ``torch.distributed`` collectives
(DDP's own gradient all-reduce runs in C++ and is not among them). Counts are grouped by the
training step they follow; the steps after which an epoch ends are the sync points and left out.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cnnforge.training.preemption import CHECK_EVERY
from tests.conftest import DDP_LAUNCH, ROOT

COUNTER = '''
"""Counts host reads and collectives per training step, then trains (one process or one rank of several)."""
import json
import os
import sys
from collections import Counter

import torch
import torch.distributed as dist
from torch.utils._python_dispatch import TorchDispatchMode

import cnnforge
from cnnforge.training import loop, progress

steps = []  # one Counter per training step: what happened since the step before it started


class Syncs(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default and steps:
            steps[-1]["item"] += 1
        return func(*args, **(kwargs or {}))


def counted(kind, fn):
    def wrapper(*args, **kwargs):
        if steps:
            steps[-1][kind] += 1
        return fn(*args, **kwargs)
    return wrapper


for name in ("tolist", "cpu", "numpy"):
    setattr(torch.Tensor, name, counted(name, getattr(torch.Tensor, name)))
for name in ("all_reduce", "all_gather", "all_gather_object", "broadcast", "broadcast_object_list", "barrier",
             "reduce", "gather", "scatter", "all_to_all"):
    setattr(dist, name, counted("collective", getattr(dist, name)))

step = loop.TrainStep.__call__


def train_step(*args, **kwargs):
    steps.append(Counter())
    return step(*args, **kwargs)


loop.TrainStep.__call__ = train_step
if os.environ.get("LIVE_BAR"):  # a bar that refreshes after every step: one read each, no more
    progress._interactive = lambda: True
    progress.REFRESH_S = 0.0
out, overrides = sys.argv[1], sys.argv[2:]
with Syncs():
    cnnforge.train(os.environ["RECIPE"], overrides, quiet=False)
if int(os.environ.get("RANK", "0")) == 0:
    with open(out, "w") as f:
        json.dump([dict(c) for c in steps], f)
'''

DIGITS = str(ROOT / "recipes" / "digits_convnet.yaml")
STEPS_PER_EPOCH = 34  # 1,078 training digits in batches of 32


def _counts(tmp_path: Path, *overrides: str, launch: list[str] | None = None,
            env: dict[str, str] | None = None) -> list[dict[str, int]]:
    script, out = tmp_path / "count_syncs.py", tmp_path / "steps.json"
    script.write_text(COUNTER)
    cmd = [*(launch or [sys.executable]), str(script), str(out), "train.epochs=2", "train.checkpoint_every=1",
           f"train.out_dir={tmp_path / 'runs'}", *overrides]
    # no time-based step lines: on a loaded machine one could fall between any two steps
    full_env = {**os.environ, "RECIPE": DIGITS, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
                "CNNFORGE_LOG_EVERY": "0", **(env or {})}
    proc = subprocess.run(cmd, cwd=tmp_path, env=full_env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def _steady(steps: list[dict[str, int]], per_epoch: int) -> list[dict[str, int]]:
    """The steps after which no epoch ends (the epoch's end is a sync point: metrics, checkpoint)."""
    return [counts for i, counts in enumerate(steps) if (i + 1) % per_epoch]


def test_single_process_step_has_no_host_sync(tmp_path: Path) -> None:
    steps = _counts(tmp_path, "train.ema=0.9", "train.on_nan=skip", "train.lookahead={every: 2}",
                    "optim.bias_lr_mult=4")  # lookahead updates every other step, reading nothing from the device
    assert len(steps) == 2 * STEPS_PER_EPOCH
    steady = _steady(steps, STEPS_PER_EPOCH)
    assert all(not counts for counts in steady), [c for c in steady if c][:3]
    assert any(steps[STEPS_PER_EPOCH - 1].values())  # the count sees the epoch end's reads: it can fail


@pytest.mark.parametrize("balance", ["loss", "sampler"])
def test_balanced_step_with_stops_pending_has_no_host_sync(tmp_path: Path, balance: str) -> None:
    """Class weights in the loss, or the balanced draws (on the device), with an early stop and a time budget
    that decide only at the epoch's end."""
    steps = _counts(tmp_path, f"data.balance={balance}", "train.early_stop={metric: val/balanced_acc}",
                    "train.max_time=1h")
    assert len(steps) == 2 * STEPS_PER_EPOCH
    steady = _steady(steps, STEPS_PER_EPOCH)
    assert all(not counts for counts in steady), [c for c in steady if c][:3]

def test_mixup_and_cutmix_add_no_host_sync(tmp_path: Path) -> None:
    """``augment.batch`` draws on the host from its own generator and builds the soft targets on the device."""
    steps = _counts(tmp_path, "augment.batch=[{name: mixup, prob: 0.5}, {name: cutmix, prob: 0.5}]",
                    "train.label_smoothing=0.1", "augment.mode=batch", "augment.train=[{name: hflip}]")
    steady = _steady(steps, STEPS_PER_EPOCH)
    assert len(steps) == 2 * STEPS_PER_EPOCH and all(not counts for counts in steady), [c for c in steady if c][:3]


def test_a_live_bar_reads_once_per_refresh(tmp_path: Path) -> None:
    steps = _counts(tmp_path, env={"LIVE_BAR": "1"})
    steady = _steady(steps, STEPS_PER_EPOCH)
    assert all(counts == {"tolist": 1} for counts in steady), [c for c in steady if c != {"tolist": 1}][:3]


@pytest.mark.slow
def test_ddp_step_has_no_host_sync_or_extra_collective(tmp_path: Path) -> None:
    steps = _counts(tmp_path, "train.on_nan=stop", "train.lookahead={every: 2}", launch=DDP_LAUNCH)
    per_rank = STEPS_PER_EPOCH // 2  # each rank trains every other batch
    assert len(steps) == 2 * per_rank
    # the ranks agree on a stop signal (train.signals) every CHECK_EVERY optimizer steps in the first epoch, then at
    # a cadence of their measured step time: one all-reduce of a CPU flag, and nothing in the steps between
    first = [i for i in range(per_rank - 1) if (i + 1) % CHECK_EVERY == 0]
    assert first and all(steps[i] == {"collective": 1} for i in first), [steps[i] for i in first]
    steady = _steady(steps, per_rank)
    assert all(counts in ({}, {"collective": 1}) for counts in steady), [c for c in steady if c][:3]
    assert sum(not counts for counts in steady[:per_rank - 1]) == per_rank - 1 - len(first)


def test_registered_parts_and_an_epoch_level_callback_add_no_sync_to_a_step(tmp_path: Path) -> None:
    """Loss, optimizer and schedule come from the registries; swa's work happens at the epoch ends (sync points)."""
    steps = _counts(tmp_path, "train.loss={name: focal}", "optim={name: sgd, lr: 0.05}",
                    "schedule={name: cosine_restarts}", "callbacks=[{name: swa, start_epoch: 1}]")
    assert len(steps) == 2 * STEPS_PER_EPOCH
    steady = _steady(steps, STEPS_PER_EPOCH)
    assert all(not counts for counts in steady), [c for c in steady if c][:3]
    assert any(steps[STEPS_PER_EPOCH - 1].values())
