"""Data at scale on image folders: memory independent of the folder's size, decode speed, cached start-up, data wait.

Four measurements, each with its contenders in the same run:

* **peak resident memory** of a whole ``cnnforge run`` (the main process and its loader
  workers' PSS, summed over the process tree every 100 ms) on a folder of ``--small`` vs
  ``--large`` JPEGs, with ``data.cache: none`` and ``disk`` (the disk run builds its cache), and on
  the same JPEGs packed as WebDataset shards (``cnnforge data pack``) read with ``cache: none``, alone
  and under 2-process CPU DDP (``accelerate launch``; each rank's processes counted apart); these
  resize to 16 px before the model. Two more rows train at the images' own size (``cache: none``,
  ``num_workers`` 0 and 2), where a model's step allocates and frees batch-sized buffers. The
  growth from small to large must stay under 10 % of the growth of the decoded data (what
  ``memory`` would hold). ``private`` is the USS, the pages no other process shares;
* **decode + augment throughput** per loader worker: cnnforge's lazy dataset (``cache: none``)
  with seed 002's pipeline (``cifar_standard``) against torchvision's ``ImageFolder`` with the
  same ops as torchvision transforms, both in a ``DataLoader`` with ``--workers`` workers over
  the same files, interleaved; target >= 1.0x;
* **listing** the large folder: an ``os.scandir`` walk, then the listing cache;
* **start-up** (listing, decoding or mapping, statistics: ``build_splits``) of a second run on
  the large folder with ``cache: disk`` against the first, which builds the cache; target >= 10x;
* **data wait** of ``recipes/cifar_vgg_bn.yaml`` reading CIFAR-sized JPEGs with ``cache: none``
  (decoding in its loader workers); target < 5 % of step time, last epoch.

    python -m benchmarks.data_scale [--small 5000 --large 50000 --side 128 --workers 2 --repeats 2]
    python -m benchmarks.data_scale --small 2000 --large 20000 --repeats 1 --memory-only \
        "none, model at image size, 0 workers" "none, model at image size, 2 workers"

The images are 128 px by default so that the decoded growth (2.1 GiB from 5k to 50k) stands well above
the run-to-run noise of a whole run's peak (tens of MiB: which loader workers overlap when); at 64 px
the 10 % target is about that noise.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, best, cifar_array, ddp_launch, interleaved, parser, report

CLASSES = 10
RUN_RECIPE = ROOT / "recipes" / "digits_convnet.yaml"
VGG_RECIPE = ROOT / "recipes" / "cifar_vgg_bn.yaml"


def write_jpegs(root: Path, n: int, side: int, seed: int = 0) -> Path:
    """``n`` JPEGs of ``side`` px in ``CLASSES`` class folders: a colour per class plus noise."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, (CLASSES, 3))
    for c in range(CLASSES):
        (root / f"class{c}").mkdir(parents=True, exist_ok=True)

    def write(i: int) -> None:
        noise = np.random.default_rng([seed, i]).integers(-60, 60, (side, side, 3))
        pixels = np.clip(colours[i % CLASSES] + noise, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / f"class{i % CLASSES}" / f"{i:07d}.jpg", quality=90)

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(write, range(n)))
    return root


def write_cifar_jpegs(root: Path, n: int) -> Path:
    """``n`` synthetic CIFAR-10 images (32x32) as JPEGs in class folders."""
    from PIL import Image

    images, labels = cifar_array(n)
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        folder = root / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:06d}.jpg", quality=95)
    return root


# ------------------------------------------------------------------------------------------ peak RSS

def tree_memory(proc: Any) -> dict[str, tuple[int, int]]:
    """(PSS, USS) summed over ``proc`` and all its descendants, in total and per DDP rank.

    PSS is the RSS with each shared page divided among the processes sharing it: the sum is the
    whole run's resident memory, where a sum of RSS would count the pages forked loader workers
    share with the main process once per worker. USS counts the pages only one process holds. A
    process belongs to the rank in its ``LOCAL_RANK`` (loader workers inherit it); launchers to none.
    """
    import psutil

    sums: dict[str, list[int]] = {"total": [0, 0]}
    for p in [proc, *proc.children(recursive=True)]:
        try:
            mem, rank = p.memory_full_info(), p.environ().get("LOCAL_RANK")
        except psutil.Error:  # a worker that just exited
            continue
        for key in ("total", f"rank{rank}") if rank is not None else ("total",):
            pair = sums.setdefault(key, [0, 0])
            pair[0] += mem.pss
            pair[1] += mem.uss
    return {key: (pss, uss) for key, (pss, uss) in sums.items()}


def peak_rss(folder: Path, cache: str, side: int, workers: int, tmp: Path,
             dataset: str = "imagefolder", ranks: int = 1, attempt: int = 0,
             model_side: int | None = 16) -> dict[str, float]:
    """Run one epoch on ``folder`` (under ``accelerate launch`` when ``ranks`` > 1), sampling its memory until it exits.

    ``model_side`` resizes the images before the model (None: the model trains at ``side``, the images' size).
    Returns the peak PSS and USS of the whole process tree and, under DDP, each rank's peak PSS.
    """
    import psutil

    launch = ddp_launch(ranks) if ranks > 1 else [str(Path(sys.executable).parent / "cnnforge")]
    cmd = [*launch, "run", str(RUN_RECIPE), f"data.name={dataset}",
           f"data.root={folder}", f"data.cache={cache}", f"data.image_size={side}", f"data.num_workers={workers}",
           "data.batch_size=256", "train.epochs=1", "train.plots=false", f"train.out_dir={tmp / 'runs'}",
           *([f"augment.train=[{{name: resize, size: {model_side}}}]"] if model_side else [])]
    # a cache folder of its own: every attempt with cache: disk builds its cache, and no run reuses a shard index
    env = {**os.environ, "CNNFORGE_CACHE": str(tmp / f"cache-{folder.name}-{cache}-{ranks}-{attempt}")}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    watched, peaks = psutil.Process(proc.pid), {}
    while proc.poll() is None:
        for key, (pss, uss) in tree_memory(watched).items():
            old = peaks.get(key, (0, 0))
            peaks[key] = (max(old[0], pss), max(old[1], uss))
        time.sleep(0.1)
    err = proc.communicate()[1]
    if proc.returncode != 0:
        raise SystemExit(f"cnnforge run failed: {err[-2000:]}")
    mib = 2**20
    per_rank = [peaks[f"rank{r}"][0] / mib for r in range(ranks)] if ranks > 1 else []
    return {"pss_mib": peaks["total"][0] / mib, "uss_mib": peaks["total"][1] / mib, "rank_pss_mib": per_rank,
            "run_s": time.perf_counter() - start}


def packed(folder: Path) -> Path:
    """``folder`` as WebDataset shards beside it, written by ``cnnforge data pack``."""
    out = folder.with_name(f"{folder.name}-shards")
    subprocess.run([str(Path(sys.executable).parent / "cnnforge"), "data", "pack", str(folder), str(out), "--format",
                    "webdataset", "-q"], cwd=ROOT, check=True)
    return out


#: what the memory rows run: (data.cache, data.name, DDP ranks, loader workers (None: --workers), the model's input
#: side (None: the images' own)); the 2-rank row is each rank of a 2-process run. The "model at image size" rows
#: train at the images' size, as a user does; the others resize to 16 px first, so the model's step is cheap
MEMORY_CASES = {"none": ("none", "imagefolder", 1, None, 16), "disk": ("disk", "imagefolder", 1, None, 16),
                "webdataset": ("none", "webdataset", 1, None, 16),
                "webdataset, 2 DDP ranks, per rank": ("none", "webdataset", 2, None, 16),
                "none, model at image size, 0 workers": ("none", "imagefolder", 1, 0, None),
                "none, model at image size, 2 workers": ("none", "imagefolder", 1, 2, None)}


def memory_rows(folders: dict[str, tuple[Path, int]], side: int, workers: int, tmp: Path,
                repeats: int, cases: list[str]) -> tuple[list, dict]:
    """Each case's peak memory on the small and the large folder: the lowest peak of ``repeats`` runs (a run's
    peak catches transients, such as the moment the last loader workers and the test loader's overlap)."""
    n_small, n_large = folders["small"][1], folders["large"][1]
    decoded_growth = (n_large - n_small) * side * side * 3 / 2**20
    rows, result = [], {"decoded_growth_mib": decoded_growth}
    shards = {name: packed(folder) for name, (folder, _) in folders.items()} \
        if any(MEMORY_CASES[c][1] == "webdataset" for c in cases) else {}
    for case in cases:
        cache, dataset, ranks, case_workers, model_side = MEMORY_CASES[case]
        at = {name: min((peak_rss(shards[name] if dataset == "webdataset" else folder, cache, side,
                                  workers if case_workers is None else case_workers, tmp, dataset=dataset,
                                  ranks=ranks, attempt=r, model_side=model_side) for r in range(repeats)),
                        key=lambda m: m["pss_mib"]) for name, (folder, _) in folders.items()}
        if ranks > 1:  # the mean of the ranks' peaks stands for "one rank"; USS is not split by rank
            for m in at.values():
                m["pss_mib"], m["uss_mib"] = sum(m["rank_pss_mib"]) / ranks, None
        growth = {key: None if at["small"][key] is None else (at["large"][key] - at["small"][key]) / decoded_growth
                  for key in ("pss_mib", "uss_mib")}
        result[case] = {**{f"{name}_{k}": v for name, m in at.items() for k, v in m.items()},
                        "growth_ratio": growth["pss_mib"], "private_growth_ratio": growth["uss_mib"]}
        rows.append({"cache": case, f"MiB {n_small}": at["small"]["pss_mib"], f"MiB {n_large}": at["large"]["pss_mib"],
                     "growth / decoded growth": result[case]["growth_ratio"],
                     "USS growth / decoded growth": result[case]["private_growth_ratio"] if ranks == 1 else ""})
    return rows, result


# ------------------------------------------------------------------------------- decode throughput

def throughput(folder: Path, workers: int, repeats: int) -> dict[str, Any]:
    """Images/s per worker through a DataLoader: cnnforge's lazy dataset vs torchvision's ImageFolder."""
    import torch
    from torchvision import datasets
    from torchvision import transforms as T

    import cnnforge.bundled  # noqa: F401  (registers the ops)
    from cnnforge.data.image_folder import imagefolder
    from cnnforge.data.loading import AugmentedDataset, make_loader
    from cnnforge.data.pipeline import build_pipeline

    lazy = imagefolder(root=str(folder), split="train", cache="none")
    ours = AugmentedDataset(lazy, range(len(lazy)), build_pipeline("cifar_standard").transform, seed=0)
    theirs = datasets.ImageFolder(str(folder), transform=T.Compose([
        T.ColorJitter(hue=0.05, saturation=0.05), T.RandomHorizontalFlip(), T.RandomRotation(20), T.PILToTensor()]))

    def drain(loader: Any) -> None:
        for _ in loader:
            pass

    contenders = {
        "cnnforge": lambda: drain(make_loader(ours, batch_size=256, shuffle=True, seed=0, num_workers=workers)),
        "torchvision": lambda: drain(torch.utils.data.DataLoader(theirs, batch_size=256, shuffle=True,
                                                                 num_workers=workers)),
    }
    times = interleaved(contenders, repeats)
    per_worker = {name: len(lazy) / best(t) / max(workers, 1) for name, t in times.items()}
    return {"images": len(lazy), "images_per_s_per_worker": per_worker,
            "ratio": per_worker["cnnforge"] / per_worker["torchvision"]}


# --------------------------------------------------------------------------------------- start-up

def listing(folder: Path, tmp: Path) -> dict[str, float]:
    """Seconds to list ``folder``: walking it, then from the listing cache (files are stat'ed again both times)."""
    from cnnforge.data.listing import list_folder

    os.environ["CNNFORGE_CACHE"] = str(tmp / "listing-cache")
    seconds = []
    for _ in range(2):
        start = time.perf_counter()
        files = len(list_folder(folder))
        seconds.append(time.perf_counter() - start)
    return {"files": files, "walk_s": seconds[0], "cached_s": seconds[1], "us_per_file": seconds[1] / files * 1e6}


def startup(folder: Path, side: int, tmp: Path) -> dict[str, float]:
    """Seconds of ``build_splits`` with ``cache: disk``: first (lists and builds) and second (reuses) run."""
    import cnnforge
    from cnnforge.data.loading import build_splits

    os.environ["CNNFORGE_CACHE"] = str(tmp / "startup-cache")
    warm = write_jpegs(tmp / "warm", 20, side)
    data = ["data.name=imagefolder", f"data.image_size={side}", "data.cache=disk", "data.num_workers=0"]
    build_splits(cnnforge.load_recipe(RUN_RECIPE, [*data, f"data.root={warm}"]))  # imports done before timing
    seconds = []
    for _ in range(2):
        start = time.perf_counter()
        build_splits(cnnforge.load_recipe(RUN_RECIPE, [*data, f"data.root={folder}"]))
        seconds.append(time.perf_counter() - start)
    return {"first_s": seconds[0], "second_s": seconds[1], "ratio": seconds[0] / seconds[1]}


# -------------------------------------------------------------------------------------- data wait

def data_wait(images: int, tmp: Path) -> dict[str, Any]:
    import cnnforge

    folder = write_cifar_jpegs(tmp / "cifar-jpegs", images)
    recipe = cnnforge.load_recipe(VGG_RECIPE, ["data.name=imagefolder", f"data.root={folder}", "data.cache=none",
                                               "data.image_size=32", "data.split=[0.9, 0.05, 0.05]",
                                               f"train.out_dir={tmp / 'vgg-runs'}", "train.epochs=2"])
    history = cnnforge.train(recipe, quiet=True).history
    shares = [h["time/data_wait_s"] / h["time/epoch_s"] for h in history]
    return {"images": images, "num_workers": recipe.data.num_workers, "per_epoch": shares, "fraction": shares[-1]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--small", type=int, default=5000, help="images in the small folder (default 5000)")
    p.add_argument("--large", type=int, default=50000, help="images in the large folder (default 50000)")
    p.add_argument("--side", type=int, default=128, help="image side in pixels (default 128)")
    p.add_argument("--workers", type=int, default=2, help="loader workers (default 2)")
    p.add_argument("--wait-images", type=int, default=12000, help="CIFAR-sized JPEGs for the data wait (default 12000)")
    p.add_argument("--memory-only", nargs="*", metavar="CASE", default=None,
                   help=f"measure only peak memory, of these cases (default: all): {', '.join(MEMORY_CASES)}")
    args = p.parse_args(argv)
    unknown = set(args.memory_only or ()) - set(MEMORY_CASES)
    if unknown:
        p.error(f"unknown memory case(s) {sorted(unknown)}; choose from {list(MEMORY_CASES)}")
    small, large, side, wait_images = args.small, args.large, args.side, args.wait_images
    if args.tiny:
        small, large, side, wait_images = 100, 400, 16, 300
    repeats = args.repeats or (1 if args.tiny else 2)
    with tempfile.TemporaryDirectory(prefix="cnnforge-scale-") as name:
        tmp = Path(name)
        folders = {"small": (write_jpegs(tmp / "small", small, side), small),
                   "large": (write_jpegs(tmp / "large", large, side, seed=1), large)}
        rows, memory = memory_rows(folders, side, args.workers, tmp, repeats, args.memory_only or list(MEMORY_CASES))
        if args.memory_only is not None:
            return report("data_scale", rows, {"images": {"small": small, "large": large, "side": side},
                                               "memory": memory, "targets": {"growth_ratio": 0.10}}, tiny=args.tiny)
        speed = throughput(folders["small"][0], args.workers, repeats)
        listed = listing(folders["large"][0], tmp)
        start = startup(folders["large"][0], side, tmp)
        wait = data_wait(wait_images, tmp)
    rows += [{"cache": "throughput cnnforge / torchvision", f"MiB {small}": speed["ratio"]},
             {"cache": "start-up first / second (disk)", f"MiB {small}": start["ratio"]},
             {"cache": f"listing s, walk / cached ({large} files)", f"MiB {small}": listed["walk_s"],
              f"MiB {large}": listed["cached_s"]},
             {"cache": "data wait share (cifar_vgg_bn, none)", f"MiB {small}": wait["fraction"]}]
    rows = [{key: row.get(key, "") for key in rows[0]} for row in rows]
    result = {"images": {"small": small, "large": large, "side": side}, "workers": args.workers, "memory": memory,
              "throughput": speed, "listing": listed, "startup": start, "data_wait": wait,
              "targets": {"growth_ratio": 0.10, "throughput_ratio": 1.0, "startup_ratio": 10.0, "data_wait": 0.05}}
    return report("data_scale", rows, result, tiny=args.tiny)


if __name__ == "__main__":
    main()
