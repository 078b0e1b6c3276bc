"""What every benchmark shares: its command line, timing, synthetic CIFAR data and the report it prints.

Run them from the repository root as ``python -m benchmarks.<name>`` (they reuse the test suite's
synthetic data writers in ``tests/datafiles.py``). A benchmark prints a table for people and one
JSON line (prefixed ``BENCH``) for scripts; every ratio in it is measured in the same process and
run, with the contenders interleaved, so that the noise of a shared machine affects them alike.
``--tiny`` shrinks everything for the test suite: it checks that a benchmark runs, not its numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from statistics import median
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

ROOT = Path(__file__).resolve().parents[1]


def ddp_launch(processes: int) -> list[str]:
    """``accelerate launch`` of ``python -m cnnforge`` in ``processes`` ranks on a port Accelerate finds free
    (its default 29500 may be held by another launch on the machine, a test run's for one)."""
    accelerate = str(Path(sys.executable).parent / "accelerate")
    return [accelerate, "launch", "--multi_gpu", "--num_processes", str(processes), "--main_process_port", "0",
            "-m", "cnnforge"]


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--tiny", action="store_true", help="seconds-long smoke run (what the test suite does)")
    p.add_argument("--repeats", type=int, default=None, help="interleaved rounds per contender (best one counts)")
    return p


def machine() -> dict[str, Any]:
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "torch_threads": torch.get_num_threads()}


def interleaved(contenders: dict[str, Callable[[], Any]], repeats: int, *,
                clock: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    """Seconds of each contender over ``repeats`` rounds, run A, B, C, A, B, C, ...

    ``clock=time.process_time`` measures CPU time instead of wall time: for single-threaded work on
    a machine shared with others it is what the work costs, not how long the neighbours kept the core.
    """
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            start = clock()
            fn()
            times[name].append(clock() - start)
    return times


def best(times: Sequence[float]) -> float:
    """The fastest round: on a shared machine the others mostly measure the neighbours."""
    return min(times)


def median_ratio(theirs: Sequence[Sequence[float]], ours: Sequence[Sequence[float]]) -> float:
    """``ours``' throughput relative to ``theirs``: per round the ratio of their median epoch times, then the median
    over rounds. A round's runs follow each other within seconds, while a shared VM's speed drifts by more than
    the gap measured over a minute: a ratio of two bests mostly measures which contender was lucky."""
    return median(median(t) / median(o) for t, o in zip(theirs, ours, strict=True))


def weights_equal(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Same parameter and buffer names, every tensor ``torch.equal``: the contenders did exactly the same work."""
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def write_cifar(root: Path, n_train: int, n_test: int, seed: int = 0, device: str | None = None) -> Path:
    """Synthetic CIFAR-10 files (class-dependent colour bands plus noise) in torchvision's layout.

    With ``device`` the images are drawn by torch there (:func:`device_images`): CIFAR-10's 60,000 in
    milliseconds on a GPU, where the per-image NumPy loop takes seconds.
    """
    from tests.datafiles import cifar_images, write_cifar10

    draw = cifar_images if device is None else device_images(device)
    return write_cifar10(root, n_train=n_train, n_test=n_test, seed=seed, draw=draw)


def device_images(device: str) -> Callable[[int, Any], tuple[Any, list[int]]]:
    """``tests.datafiles.cifar_images``' bands plus noise, as one batch of torch ops on ``device``."""
    import torch

    def draw(n: int, rng: Any) -> tuple[Any, list[int]]:
        g = torch.Generator(device).manual_seed(int(rng.integers(2**62)))
        labels = torch.randint(0, 10, (n,), generator=g, device=device)
        noise = torch.randint(0, 80, (n, 3, 32, 32), generator=g, device=device, dtype=torch.int16)
        channel, row, col = (torch.arange(k, device=device) for k in (3, 32, 32))
        top = (labels // 3 * 8).view(-1, 1, 1, 1)
        band = ((channel.view(1, 3, 1, 1) == (labels % 3).view(-1, 1, 1, 1)) & (row.view(1, 1, 32, 1) >= top)
                & (row.view(1, 1, 32, 1) < top + 10) & (col >= 4) & (col < 28))
        images = (noise + 150 * band).clamp(0, 255).to(torch.uint8)
        return images.reshape(n, 3072).cpu().numpy(), labels.tolist()

    return draw


def cifar_array(n: int, seed: int = 0) -> tuple[Any, Any]:
    """``n`` synthetic 32x32 RGB uint8 images (N, H, W, C) and their labels, in memory."""
    import numpy as np

    from tests.datafiles import cifar_images

    flat, labels = cifar_images(n, np.random.default_rng(seed))
    return flat.reshape(n, 3, 32, 32).transpose(0, 2, 3, 1).copy(), np.asarray(labels)


def table(rows: list[dict[str, Any]]) -> str:
    """A plain text table of ``rows`` (same keys), floats with 4 significant digits."""
    def cell(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    header = list(rows[0])
    cells = [[cell(r[k]) for k in header] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=False))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) for row in cells]
    return "\n".join(lines)


def report(name: str, rows: list[dict[str, Any]], result: dict[str, Any], *, tiny: bool) -> dict[str, Any]:
    """Print the table and the ``BENCH {json}`` line; returns the JSON object."""
    out = {"benchmark": name, "tiny": tiny, **result, "machine": machine()}
    print(f"\n{name}{' (tiny: numbers mean nothing)' if tiny else ''}")
    print(table(rows))
    print("BENCH " + json.dumps(out, sort_keys=False), flush=True)
    return out
