"""``cnnforge embed RUN_DIR``: penultimate-layer embeddings as a t-SNE or PCA scatter plot (seed 000)."""
from __future__ import annotations

import argparse
from typing import Any


def add(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("embed", parents=[common], help="t-SNE/PCA plot of a run's penultimate-layer embeddings",
                       description="Embed samples of a split with a run's model and plot them in 2-D, coloured by "
                                   "class; the vectors and coordinates are kept in embedding_<method>.npz.")
    p.add_argument("run_dir", help="run directory")
    p.add_argument("--method", choices=("tsne", "pca"), default="tsne", help="projection (default tsne)")
    p.add_argument("--n", type=int, default=2000, help="samples to embed, a seeded random subset (default 2000)")
    p.add_argument("--split", default="test", choices=("test", "val", "train"), help="split to embed (default test)")
    p.add_argument("--checkpoint", choices=("best", "last"), default=None,
                   help="weights (default: what the run was tested with)")
    p.add_argument("--force", action="store_true",
                   help="use the split even if it differs from the run's data (into a report folder of its own)")
    p.set_defaults(func=_embed)


def _embed(args: argparse.Namespace) -> int:
    from cnnforge.evaluation import embed_run

    png = embed_run(args.run_dir, method=args.method, n=args.n, split=args.split, checkpoint=args.checkpoint,
                    quiet=args.quiet, force=args.force)
    if png is not None:
        print(f"embedding plot: {png}")
        print(f"embedding data: {png.with_suffix('.npz')} (features, labels, classes, coords)")
    return 0
