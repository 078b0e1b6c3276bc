"""Preemption: seconds from SIGTERM to the exit of a ``cifar_vgg_bn`` run on the CPU, checkpoint included.

Slurm warns a job 60-120 s before it kills it (``--signal``, or its preemption grace time); torch elastic
gives its ranks 30 s after it forwards a signal. The run is the packaged ``cifar_vgg_bn`` recipe (its
VGG with BatchNorm, batch 128, two loader workers) on synthetic CIFAR-10 files, started with
``--run-dir``; once it has trained a few seconds it gets SIGTERM (one process: the process itself; DDP:
the ``accelerate launch`` process, which forwards it to both gloo ranks). Measured: the time to exit (the
optimizer step in flight, under DDP up to ``preemption.CHECK_EVERY`` steps more, the checkpoint, the exit),
the exit code (75: preempted; 143: the launcher's own after a SIGTERM), and the checkpoint's size.

    python -m benchmarks.preempt            # 3 rounds per setup
"""
from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

from benchmarks.common import ROOT, ddp_launch, parser, report, write_cifar


def _stop_once(launch: list[str], data: Path, run_dir: Path, trained_s: float, epochs: int) -> dict[str, Any]:
    """Start a run, SIGTERM it ``trained_s`` seconds after its run directory exists; seconds to exit and more."""
    cmd = [*launch, "run", "cifar_vgg_bn", f"data.root={data}", f"train.epochs={epochs}", "train.plots=false",
           "--run-dir", str(run_dir)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 900
    while not (run_dir / "manifest.json").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the run did not start: {proc.communicate()[1][-2000:]}")
        time.sleep(0.05)
    time.sleep(trained_s)
    sent = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=900)
    exit_s = time.perf_counter() - sent
    checkpoints = sorted((run_dir / "checkpoints").glob("ckpt-*"))
    if not checkpoints or "stopped with checkpoint" not in out:
        raise RuntimeError(f"no checkpoint after SIGTERM (exit {proc.returncode}): {err[-2000:]}")
    size = sum(f.stat().st_size for f in checkpoints[-1].iterdir())
    return {"exit_s": exit_s, "code": proc.returncode, "checkpoint_mb": size / 2**20, "at": checkpoints[-1].name}


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    rounds = args.repeats or (1 if args.tiny else 3)
    setups = {"1 process": [sys.executable, "-m", "cnnforge"],
              "2 processes (gloo DDP)": ddp_launch(2)}
    if args.tiny:
        setups = {"1 process": setups["1 process"]}
    rows, result = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        data = write_cifar(Path(tmp) / "data", n_train=200 if args.tiny else 5000, n_test=50)
        for name, launch in setups.items():
            stops = [_stop_once(launch, data, Path(tmp) / f"{name}-{i}".replace(" ", "_"), 1.0 if args.tiny else 8.0,
                                20 if args.tiny else 3) for i in range(rounds)]
            times = [s["exit_s"] for s in stops]
            rows.append({"setup": name, "rounds": rounds, "median_exit_s": median(times), "max_exit_s": max(times),
                         "exit_codes": ",".join(sorted({str(s["code"]) for s in stops})),
                         "checkpoint_mb": stops[-1]["checkpoint_mb"], "stopped_at": stops[-1]["at"]})
            result[name] = {"exit_s": times, "codes": [s["code"] for s in stops]}
    report("preempt", rows, {"setups": result}, tiny=args.tiny)


if __name__ == "__main__":
    main()
