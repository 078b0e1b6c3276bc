"""``cnnforge viz filters RUN_DIR`` and ``cnnforge viz kernel IMAGE``: convolution kernels as pictures."""
from __future__ import annotations

import argparse
from typing import Any


def add(sub: Any, common: argparse.ArgumentParser) -> None:
    v = sub.add_parser("viz", parents=[common], help="pictures of conv filters and fixed-kernel convolutions",
                       description="Learned filters of a run (seed 002) or a fixed kernel applied to an "
                                   "image (seed 000).")
    what = v.add_subparsers(dest="what", metavar="WHAT", required=True, parser_class=type(v))

    f = what.add_parser("filters", parents=[common], help="a run's conv filters as an image grid",
                        description="Plot the kernels of a conv layer (the first by default) into the run's reports/.")
    f.add_argument("run_dir", help="run directory")
    f.add_argument("--layer", type=int, default=0, help="conv layer index, 0 = first, -1 = last (default 0)")
    f.add_argument("--per-channel", action="store_true", help="one grey tile per input channel, also for RGB layers")
    f.add_argument("--checkpoint", choices=("best", "last"), default=None,
                   help="weights (default: what the run was tested with)")
    f.set_defaults(func=_filters)

    k = what.add_parser("kernel", parents=[common], help="convolve an image with a fixed kernel (edges, blur)",
                        description="Convolve a grey image with a named kernel or your own, e.g. "
                                    "--kernel '[[0,1,0],[1,-4,1],[0,1,0]]', and save input, kernel and response as a "
                                    "PNG.")
    k.add_argument("image", help="image file")
    k.add_argument("--kernel", required=True, metavar="NAME|ROWS",
                   help="sobel_x, sobel_y, sobel (magnitude), laplace, blur, or a list of rows")
    k.add_argument("--out", help="PNG to write (default: <image name>_<kernel>.png in the current folder)")
    k.set_defaults(func=_kernel)


def _filters(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cnnforge import rundir
    from cnnforge.predict import load_predictor
    from cnnforge.reports.kernels import filter_grid, resolve_layer

    predictor = load_predictor(args.run_dir, checkpoint=args.checkpoint, device="cpu")
    layer = resolve_layer(predictor.model, args.layer)  # --layer -1 and --layer 2 of 3 write the same file
    out = Path(args.run_dir) / rundir.REPORTS
    out.mkdir(exist_ok=True)
    suffix = "_channels" if args.per_channel else ""
    png = filter_grid(predictor.model, out / f"filters_layer{layer}{suffix}.png", layer=layer,
                      per_channel=args.per_channel, title=f"{predictor.checkpoint} weights, ")
    print(f"filters: {png}")
    return 0


def _kernel(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cnnforge.errors import ConfigError
    from cnnforge.reports.kernels import kernel_demo, parse_kernel

    name, _ = parse_kernel(args.kernel)  # a bad kernel is reported before the image is read
    out = Path(args.out) if args.out else Path.cwd() / f"{Path(args.image).stem}_{name}.png"
    if out.resolve() == Path(args.image).resolve():
        raise ConfigError("would overwrite the input image", where=f"--out {out}")
    if out.suffix.lower() != ".png":
        raise ConfigError("must name a .png file", where=f"--out {out}")
    print(f"kernel demo: {kernel_demo(args.image, args.kernel, out)}")
    return 0
