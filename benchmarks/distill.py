"""Knowledge distillation on the digits: a ``convnet`` student taught by a ``vgg_bn`` teacher vs the student alone.

The teacher (vgg_bn, 82k parameters) trains once; then for each seed the student (convnet, 2.4k
parameters) trains the same epochs alone and with ``callbacks: [{name: distill, teacher: <run>}]``
(temperature ``--temperature``, weight ``--alpha`` of the KL term). The digits' test split has 360
images (one image is 0.28 points): the mean over seeds and the per-seed pairs both matter.

    python -m benchmarks.distill --seeds 3
"""
from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, parser, report

RECIPE = str(ROOT / "recipes" / "digits_convnet.yaml")


def train(out_dir: Path, *overrides: str) -> Any:
    """One digits run with ``overrides`` over recipes/digits_convnet.yaml (no plots, no intermediate checkpoints)."""
    import cnnforge

    common = ["data.num_workers=0", "train.checkpoint_every=0", "train.plots=false", f"train.out_dir={out_dir}"]
    return cnnforge.train(RECIPE, [*common, *overrides], quiet=True)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=None, help="student seeds (default 3; 1 with --tiny)")
    p.add_argument("--epochs", type=int, default=None, help="student epochs (default 10; 1 with --tiny)")
    p.add_argument("--teacher-epochs", type=int, default=None, help="teacher epochs (default 20; 1 with --tiny)")
    p.add_argument("--temperature", type=float, default=4.0)
    p.add_argument("--alpha", type=float, default=0.5)
    args = p.parse_args(argv)
    seeds = args.seeds or (1 if args.tiny else 3)
    epochs, teacher_epochs = args.epochs or (1 if args.tiny else 10), args.teacher_epochs or (1 if args.tiny else 20)
    with tempfile.TemporaryDirectory(prefix="cnnforge-distill-") as tmp:
        teacher = train(Path(tmp) / "teacher", "model={name: vgg_bn}", f"train.epochs={teacher_epochs}")
        distill = f"callbacks=[{{name: distill, teacher: '{teacher.run_dir}', temperature: {args.temperature}, " \
                  f"alpha: {args.alpha}}}]"
        runs: dict[str, list[float]] = {"student alone": [], "student + distill": []}
        for seed in range(seeds):
            student = [f"seed={seed}", f"train.epochs={epochs}"]
            runs["student alone"].append(train(Path(tmp) / "alone", *student)["test/acc"])
            runs["student + distill"].append(train(Path(tmp) / "taught", *student, distill)["test/acc"])
    rows = [{"run": "teacher vgg_bn", "test acc": teacher["test/acc"], "seeds": 1, "per seed": ""}]
    rows += [{"run": name, "test acc": statistics.fmean(accs), "seeds": seeds,
              "per seed": " ".join(f"{a:.3f}" for a in accs)} for name, accs in runs.items()]
    result = {"dataset": "digits 8x8", "teacher": {"model": "vgg_bn", "epochs": teacher_epochs,
                                                   "test_acc": teacher["test/acc"]},
              "student": {"model": "convnet", "epochs": epochs}, "temperature": args.temperature, "alpha": args.alpha,
              "test_acc_per_seed": runs, "mean_gain": statistics.fmean(runs["student + distill"])
              - statistics.fmean(runs["student alone"])}
    return report("distill", rows, result, tiny=args.tiny)


if __name__ == "__main__":
    main()
