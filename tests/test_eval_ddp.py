"""``cnnforge eval`` under 2-process CPU DDP counts every sample once, in dataset order."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

import cnnforge
from cnnforge.data.loading import build_splits
from tests.conftest import DDP_LAUNCH, ROOT

DIGITS = str(ROOT / "recipes" / "digits_convnet.yaml")
EVAL_BATCH = 50


@pytest.mark.slow
def test_ddp_eval_gathers_without_padding_duplicates(tmp_path: Path) -> None:
    run = cnnforge.train(DIGITS, ["train.epochs=1", "data.num_workers=0", f"data.eval_batch_size={EVAL_BATCH}",
                                  f"train.out_dir={tmp_path}"], quiet=True).run_dir
    test = build_splits(cnnforge.load_recipe(run / "recipe.yaml")).test
    # 2 ranks x 50 do not divide the split: Accelerate pads the last batch with repeated samples
    assert len(test) % (2 * EVAL_BATCH) != 0
    single = (run / "reports" / "predictions.csv").read_text()
    (run / "reports" / "predictions.csv").unlink()

    proc = subprocess.run([*DDP_LAUNCH, "-m", "cnnforge", "eval",
                           str(run)], cwd=tmp_path, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("report:") == 1  # only the main process prints and writes
    assert f"{len(test)} samples" in proc.stdout and "2 process(es)" in proc.stdout

    metrics = json.loads((run / "reports" / "metrics.json").read_text())
    assert metrics["samples"] == len(test)
    assert sum(map(sum, metrics["confusion_matrix"])) == len(test)
    assert sum(r["support"] for r in metrics["per_class"].values()) == len(test)
    rows = [r.split(",") for r in (run / "reports" / "predictions.csv").read_text().splitlines()[1:]]
    assert [int(r[1]) for r in rows] == test.labels.tolist()  # dataset order, each sample once
    alone = [r.split(",") for r in single.splitlines()[1:]]
    assert [r[2] for r in rows] == [r[2] for r in alone]  # the same answers as one process
    assert max(abs(float(a[3]) - float(b[3])) for a, b in zip(rows, alone, strict=False)) < 1e-5
