"""``cnnforge export RUN_DIR --format onnx|torchscript|safetensors``: a run's model for use without cnnforge.

Every format carries the preprocessing (class names, channels, image size, mean and std) as JSON:
inside the file (ONNX ``metadata_props``, TorchScript extra file ``cnnforge.json``, safetensors
metadata key ``cnnforge``) and beside it (``<file>.json``). ONNX and TorchScript include the
normalisation, so they take raw pixels, N x C x H x W at the run's size, and return logits:
TorchScript takes uint8 or float in 0..255; an ONNX graph has one input type, ``--dtype`` (uint8 by
default, or float32 in 0..255). ONNX has a dynamic batch axis and is what ONNX Runtime, TensorRT
and OpenVINO read; TorchScript is deprecated upstream.
"""
from __future__ import annotations

import argparse
from typing import Any

FORMATS = {"onnx": ".onnx", "torchscript": ".pt", "safetensors": ".safetensors"}
DTYPES = ("uint8", "float32")


def add(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("export", parents=[common], help="export a run's model as ONNX, TorchScript or safetensors",
                       description="Write a run's model for use without cnnforge, with its preprocessing as JSON.")
    p.add_argument("run_dir", help="run directory")
    p.add_argument("--format", required=True, choices=tuple(FORMATS),
                   help="onnx or torchscript (model + normalisation, raw pixels in, logits out) or safetensors "
                        "(weights only)")
    p.add_argument("--dtype", choices=DTYPES, help="ONNX input type: uint8 (default) or float32 pixels in 0..255")
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
    from cnnforge.errors import CnnforgeError, ConfigError
    from cnnforge.predict import load_predictor
    from cnnforge.recipe import load_recipe

    if args.dtype and args.format != "onnx":
        raise ConfigError(f"applies to --format onnx only (a {args.format} export takes uint8 or float pixels)",
                          where="--dtype")
    if args.format == "onnx":
        from cnnforge.optional_deps import require

        require("onnx", where="cnnforge export --format onnx")
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
            "mean": list(info.mean), "std": list(info.std), "input": _input(args),
            "dataset_image_shape": list(predictor.stored_shape), "augment_eval": recipe.to_dict()["augment"]["eval"],
            "model": recipe.to_dict()["model"],
            "run": str(run_dir.resolve()), "checkpoint": predictor.checkpoint, "cnnforge": __version__}
    text = json.dumps(meta, indent=2)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.format == "onnx":
        _onnx(predictor, out, meta, args.dtype or "uint8")
    else:
        (_torchscript if args.format == "torchscript" else _safetensors)(predictor, out, meta)
    sidecar.write_text(text + "\n")
    print(f"{args.format}: {out}\npreprocessing: {sidecar}")
    return 0


def _input(args: argparse.Namespace) -> str:
    if args.format == "safetensors":
        return "state_dict of the model; its input is (pixels/255 - mean) / std, N x C x H x W at image_size"
    onnx = args.format == "onnx"
    pixels = f"{args.dtype or 'uint8'} pixels in 0..255" if onnx else "raw pixels, uint8 or float in 0..255"
    return f"{pixels}, N x C x H x W at image_size; returns logits (normalisation inside)"


def _normalised(predictor: Any) -> Any:
    """The model behind the run's normalisation, so the exported file takes raw pixels."""
    import torch

    # the run's normalisation (the trainer's own module) in front of the model
    return torch.nn.Sequential(predictor.normalize, predictor.model).eval()


def _example(predictor: Any, dtype: str) -> Any:
    import torch

    info = predictor.info
    return torch.zeros(1, info.channels, *info.image_size, dtype=getattr(torch, dtype))


def _torchscript(predictor: Any, out: Any, meta: dict[str, Any]) -> None:
    import json
    import warnings

    import torch

    from cnnforge.atomic_write import save_file_atomic

    with warnings.catch_warnings():
        # torch marks TorchScript deprecated; the format is still asked for
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(_normalised(predictor), _example(predictor, "uint8"))
        extra = {"cnnforge.json": json.dumps(meta, indent=2)}
        save_file_atomic(out, lambda tmp: torch.jit.save(traced, str(tmp), _extra_files=extra))


def _onnx(predictor: Any, out: Any, meta: dict[str, Any], dtype: str) -> None:
    """TorchScript-based ONNX export (no onnxscript needed), then the metadata as ``metadata_props``."""
    import io
    import json
    import warnings

    import onnx
    import torch

    from cnnforge.atomic_write import save_file_atomic

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter is deprecated upstream, and says so
        torch.onnx.export(_normalised(predictor), (_example(predictor, dtype),), buffer, input_names=["pixels"],
                          output_names=["logits"], dynamic_axes={"pixels": {0: "batch"}, "logits": {0: "batch"}},
                          dynamo=False)
    model = onnx.load_from_string(buffer.getvalue())
    onnx.helper.set_model_props(model, {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()})
    onnx.checker.check_model(model)
    save_file_atomic(out, lambda tmp: onnx.save(model, str(tmp)))


def _safetensors(predictor: Any, out: Any, meta: dict[str, Any]) -> None:
    import json

    from safetensors.torch import save_file

    from cnnforge.atomic_write import save_file_atomic

    tensors = {k: v.detach().cpu().contiguous() for k, v in predictor.model.state_dict().items()}
    text = json.dumps(meta, indent=2)
    save_file_atomic(out, lambda tmp: save_file(tensors, str(tmp), metadata={"cnnforge": text}))

