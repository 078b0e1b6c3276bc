"""The GPU suite of issue 19: trainer overhead, speed knobs, cifar_fast throughput and DDP scaling, in one call.

Run by ``benchmarks/gpu_suite.sh`` (under 8 minutes on one GPU); each section reuses its benchmark's code:

* **overhead**: cnnforge against the plain loop (``light_step``'s contenders: data held on the device,
  bf16 by autocast, the clock read after ``torch.cuda.synchronize``) for LeNet (a light step) and
  vgg_bn (a heavy one), fp32 and bf16: training samples/s of the best epoch, the ratio of the median
  epochs round by round (``common.median_ratio``), and whether the weights
  are ``torch.equal`` (expected on a CPU; cuDNN's kernel choice may break it on a GPU);
* **knobs**: samples/s of every seed model's training step with ``channels_last`` and ``compile``
  against plain fp32 (``speed_knobs.measure``);
* **cifar_fast**: training samples/s of recipes/cifar_fast.yaml on CIFAR-shaped synthetic data drawn
  on the device (real CIFAR-10 cannot be downloaded on the GPU machines), after a one-epoch warm-up
  that fills torch.compile's cache;
* **ddp**: cifar_fast's samples/s in 1 and in N processes (``accelerate launch --multi_gpu``; both on
  the DataLoader path, which DDP needs) when there are N >= 2 GPUs, or N given by ``--ddp``.

Everything but the table and the ``BENCH`` line goes to stderr, so stdout is the result.

    bash benchmarks/gpu_suite.sh                      # on a GPU machine
    bash benchmarks/gpu_suite.sh --device cpu --tiny  # the test suite's end-to-end check
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, best, ddp_launch, median_ratio, parser, report, weights_equal, write_cifar

Section = tuple[list[dict[str, Any]], dict[str, Any]]  # table rows and JSON results of one section


def _row(section: str, case: str, rate: float, reference: float, note: str = "") -> dict[str, Any]:
    return {"section": section, "case": case, "samples/s": rate, "x ref": rate / reference, "note": note}


def overhead(work: Path, *, tiny: bool, repeats: int, device: str) -> Section:
    """cnnforge against the plain loop per model and precision; the reference is the plain loop."""

    from benchmarks import light_step

    root = write_cifar(work / "overhead", n_train=640 if tiny else 11_000, n_test=200 if tiny else 1000, device=device)
    rows, out = [], {}
    for model in ["lenet"] if tiny else ["lenet", "vgg_bn"]:
        for precision in ("no", "bf16"):
            recipe = light_step.recipe(root, work / "runs", tiny=tiny, epochs=2 if tiny else 3)
            recipe["model"]["name"], recipe["train"]["precision"] = model, precision
            runs: dict[str, list[dict[str, Any]]] = {"plain": [], "cnnforge": []}
            for _ in range(repeats):  # interleaved rounds
                runs["plain"].append(light_step.plain(recipe))
                runs["cnnforge"].append(light_step.cnnforge_run(recipe))
            samples = runs["plain"][0]["samples"]
            rate = {name: samples / best([t for run in rs for t in run["epoch_s"]]) for name, rs in runs.items()}
            theirs, ours = runs["plain"][0]["weights"], runs["cnnforge"][0]["weights"]
            equal = weights_equal(theirs, ours)
            case = f"{model} {'fp32' if precision == 'no' else precision}"
            ratio = median_ratio(*([run["epoch_s"] for run in runs[name]] for name in ("plain", "cnnforge")))
            out[case] = {"samples_per_s": rate, "ratio": ratio, "weights_equal": equal}
            rows += [_row("overhead", f"{case} plain", rate["plain"], rate["plain"]),
                     _row("overhead", f"{case} cnnforge", rate["cnnforge"], rate["plain"],
                          f"median of rounds {ratio:.3f}x; weights equal: {equal}")]
    return rows, out


def knobs(*, tiny: bool, repeats: int, device: str, compile: bool) -> Section:
    """Every seed model with and without channels_last and compile; the reference is its plain fp32 step."""
    import torch

    from benchmarks import speed_knobs

    names = ["convnet"] if tiny else list(speed_knobs.SEED_MODELS)
    variants = ["fp32", "channels_last", *(["compile"] if compile else [])]
    rows, result = speed_knobs.measure(names, variants, batch_size=8 if tiny else 256, steps=2 if tiny else 20,
                                       repeats=repeats, device=torch.device(device))
    return [_row("knobs", f"{r['model']} {r['variant']}", r["samples/s"], r["samples/s"] / r["x fp32"])
            for r in rows], result


def cifar_fast(work: Path, root: Path, n_train: int, *, device: str, compile: bool) -> Section:
    """Training samples/s of cifar_fast (on a GPU compiled unless ``compile`` is off); the reference is itself."""
    from benchmarks import cifar_fast as fast

    gpu = device == "cuda"  # on a CPU, cifar_fast's correctness settings (no compile)
    overrides = [f"train.out_dir={work / 'runs'}", f"data.root={root}",
                 *(fast.CPU_OVERRIDES if not gpu else [] if compile else ["train.compile=false"])]
    if gpu and compile:  # one epoch compiles every shape a run meets (full and last batches, training and evaluation)
        fast.train_runs([*overrides, "train.epochs=1"], runs=1, warmups=0)
    [result] = fast.train_runs(overrides, runs=1, warmups=0)
    rate = n_train * result["epochs"] / result["train/time_s"]
    out = {"samples_per_s": rate, "train_s": result["train/time_s"], "epochs": result["epochs"],
           "test_acc_synthetic": result["test/acc"], "overrides": overrides[1:]}
    return [_row("cifar_fast", f"fastnet {n_train} images x {result['epochs']} epochs", rate, rate,
                 "synthetic data: accuracy means nothing")], out


def ddp(work: Path, root: Path, n_train: int, *, processes: int, device: str) -> Section:
    """cifar_fast in 1 and ``processes`` processes (no compile: the same work in both); the reference is 1 process."""
    from benchmarks import cifar_fast as fast

    if processes < 2:
        return [], {"skipped": "fewer than 2 GPUs (--ddp N runs it anyway)"}
    overrides = [f"data.root={root}", "data.on_device=false", "train.compile=false",
                 *(["train.epochs=2"] if device == "cuda" else fast.CPU_OVERRIDES)]
    rates = {}
    for n in (1, processes):
        launch = [sys.executable, "-m", "cnnforge"] if n == 1 else ddp_launch(n)
        out = work / f"ddp-{n}"
        proc = subprocess.run([*launch, "run", str(fast.RECIPE), *overrides, f"train.out_dir={out}"], cwd=ROOT,
                              capture_output=True, text=True, timeout=1200)
        if proc.returncode != 0:
            raise SystemExit(f"gpu_suite: the {n}-process cifar_fast run failed:\n{proc.stderr[-3000:]}")
        summary = json.loads(next(out.rglob("summary.json")).read_text())
        rates[n] = n_train * summary["epochs"] / summary["train/time_s"]
    efficiency = rates[processes] / (processes * rates[1])
    rows = [_row("ddp", f"cifar_fast {n} process(es)", rate, rates[1], f"efficiency {efficiency:.2f}" if n > 1 else "")
            for n, rate in rates.items()]
    return rows, {"processes": processes, "samples_per_s": rates, "scaling_efficiency": efficiency}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--no-compile", action="store_true", help="leave out torch.compile (the slowest part to warm up)")
    p.add_argument("--ddp", type=int, default=None, help="processes of the DDP section (default: the GPUs, if 2+)")
    args = p.parse_args(argv)
    if args.device == "cpu":  # before torch starts: cnnforge trains wherever torch sees a device
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_suite: no CUDA device is visible; use --device cpu (with --tiny for a quick check)")
    if args.device == "cpu":
        torch.set_num_threads(1)  # steadier on a shared machine, as every CPU benchmark here
    compile_ = not args.no_compile and not (args.tiny and args.device == "cpu")  # inductor on a CPU: minutes
    repeats = args.repeats or (1 if args.tiny else 3)
    processes = args.ddp if args.ddp is not None else (torch.cuda.device_count() if args.device == "cuda" else 0)
    n_train, start = (100 if args.tiny else 50_000), time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cnnforge-gpu-suite-") as tmp, contextlib.redirect_stdout(sys.stderr):
        work = Path(tmp)
        root = write_cifar(work / "cifar", n_train=n_train, n_test=40 if args.tiny else 10_000, device=args.device)
        sections = {"overhead": overhead(work, tiny=args.tiny, repeats=repeats, device=args.device),
                    "knobs": knobs(tiny=args.tiny, repeats=repeats, device=args.device, compile=compile_),
                    "cifar_fast": cifar_fast(work, root, n_train, device=args.device, compile=compile_),
                    "ddp": ddp(work, root, n_train, processes=processes, device=args.device)}
    rows = [row for section_rows, _ in sections.values() for row in section_rows]
    device = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    result = {"device": device, "compile": compile_, "repeats": repeats, "total_s": time.perf_counter() - start,
              "sections": {name: out for name, (_, out) in sections.items()}, "targets": {"total_s": 480}}
    return report("gpu_suite", rows, result, tiny=args.tiny)


if __name__ == "__main__":
    main()
