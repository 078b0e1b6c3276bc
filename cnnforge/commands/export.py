"""``cnnforge export RUN_DIR --format torchscript|safetensors``: a run's model for use without cnnforge.

Both formats carry the preprocessing (class names, channels, image size, mean and std) as JSON:
inside the file (TorchScript extra file ``cnnforge.json``, safetensors metadata key ``cnnforge``)
and beside it (``<file>.json``). The TorchScript module includes the normalisation, so it takes
raw pixels: uint8 or float in 0..255, shape N x C x H x W at the run's size, and returns logits.
"""
from __future__ import annotations

import argparse
from typing import Any

FORMATS = {"torchscript": ".pt", "safetensors": ".safetensors"}


def add(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("export", parents=[common], help="export a run's model as TorchScript or safetensors",
                       description="Write a run's model for use without cnnforge, with its preprocessing as JSON.")
    p.add_argument("run_dir", help="run directory")
    p.add_argument("--format", required=True, choices=tuple(FORMATS), help="torchscript (model + normalisation) or "
                   "safetensors (weights only)")
    p.add_argument("--checkpoint", choices=("best", "last"), default=None,
                   help="weights (default: what the run was tested with)")
    p.add_argument("--out", help="file to write (default: RUN_DIR/export/<name>-<checkpoint><ext>)")
    p.add_argument("--force", action="store_true", help="replace an existing file")
    p.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from cnnforge import rundir
    from cnnforge._version import __version__
    from cnnforge.errors import CnnforgeError
    from cnnforge.predict import load_predictor
    from cnnforge.recipe import load_recipe

    predictor = load_predictor(args.run_dir, checkpoint=args.checkpoint, device="cpu")
    run_dir = Path(args.run_dir)
    recipe = load_recipe(run_dir / rundir.RECIPE)
    ext = FORMATS[args.format]
    out = Path(args.out) if args.out else run_dir / "export" / f"{recipe.name}-{predictor.checkpoint}{ext}"
    sidecar = out.with_name(out.name + ".json")
    for path in (out, sidecar):
        if path.exists() and not args.force:
            raise CnnforgeError("already exists", where=str(path), hint="use --force to replace it")
    info = predictor.info
    meta = {"format": args.format, "classes": info.classes, "channels": info.channels,
            "image_size": list(info.image_size),
            "mean": list(info.mean), "std": list(info.std), "input": _INPUT[args.format],
            "dataset_image_shape": list(predictor.stored_shape), "augment_eval": recipe.to_dict()["augment"]["eval"],
            "model": recipe.to_dict()["model"],
            "run": str(run_dir.resolve()), "checkpoint": predictor.checkpoint, "cnnforge": __version__}
    text = json.dumps(meta, indent=2)
    out.parent.mkdir(parents=True, exist_ok=True)
    (_torchscript if args.format == "torchscript" else _safetensors)(predictor, out, text)
    sidecar.write_text(text + "\n")
    print(f"{args.format}: {out}\npreprocessing: {sidecar}")
    return 0


_INPUT = {
    "torchscript": "raw pixels, uint8 or float in 0..255, N x C x H x W at image_size; returns logits (normalisation "
                   "inside)",
    "safetensors": "state_dict of the model; its input is (pixels/255 - mean) / std, N x C x H x W at image_size",
}


def _torchscript(predictor: Any, out: Any, meta: str) -> None:
    import warnings

    import torch

    from cnnforge.atomic_write import save_file_atomic

    info = predictor.info
    # the run's normalisation in front of the model, so the exported file takes raw pixels
    wrapped = torch.nn.Sequential(predictor.normalize, predictor.model).eval()
    example = torch.zeros(1, info.channels, *info.image_size, dtype=torch.uint8)
    with warnings.catch_warnings():
        # torch marks TorchScript deprecated; the format is still asked for
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(wrapped, example)
        save_file_atomic(out, lambda tmp: torch.jit.save(traced, str(tmp), _extra_files={"cnnforge.json": meta}))


def _safetensors(predictor: Any, out: Any, meta: str) -> None:
    from safetensors.torch import save_file

    from cnnforge.atomic_write import save_file_atomic

    tensors = {k: v.detach().cpu().contiguous() for k, v in predictor.model.state_dict().items()}
    save_file_atomic(out, lambda tmp: save_file(tensors, str(tmp), metadata={"cnnforge": meta}))
