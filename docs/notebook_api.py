# %% [markdown]
# # cnnforge from Python: train, sweep, predict
#
# The CLI's three jobs as functions that return objects with the metrics and the paths, for notebooks
# and scripts. This file is a notebook in Jupytext's "percent" format: VS Code and JupyterLab (with
# jupytext) open it cell by cell, and `python docs/notebook_api.py` runs it top to bottom from the
# repository root in about five minutes on two CPU cores. Everything uses scikit-learn's bundled 8x8
# digits, so nothing is downloaded. In a notebook, training shows a live progress bar.

# %%
from pathlib import Path
from tempfile import mkdtemp

import numpy as np
from sklearn.datasets import load_digits

import cnnforge

RECIPES = Path("recipes")
OUT = Path(mkdtemp(prefix="cnnforge-notebook-"))  # keep the repository's runs/ clean

# %% [markdown]
# ## Train
# `cnnforge.train` takes a recipe file, a dict or a `Recipe`, plus the same dotted overrides as the
# CLI. The `RunResult` holds the final metrics (`summary.json`), the per-epoch history
# (`metrics.jsonl`) and the run directory.

# %%
run = cnnforge.train(RECIPES / "digits_convnet.yaml", ["train.epochs=5", f"train.out_dir={OUT}"])
print(f"test accuracy {run['test/acc']:.3f}, best val accuracy {run['best/val/acc']:.3f}")
print("run directory:", run.run_dir)
print("weights:", run.weights)
print("last epoch:", {k: round(v, 4) for k, v in run.history[-1].items() if k.startswith(("train/", "val/"))})

# %% [markdown]
# ## Sweep
# `cnnforge.tune` runs a recipe's `tune:` section with Ray Tune (locally here; `address="auto"` on a
# cluster). The `TuneResult` lists every trial, best first, and the resolved recipe of the best one.

# %%
sweep = cnnforge.tune(RECIPES / "sweep_digits.yaml",
                      ["tune.grid={optim.lr: [0.003, 0.03]}", "train.epochs=2", f"train.out_dir={OUT}"])
for trial in sweep.trials:
    print(f"{trial.params}  {sweep.metric}={trial.value}  {trial.status}")
print("best:", sweep.best.params if sweep.best else None, "->", sweep.best_recipe)

# %% [markdown]
# ## Predict
# `cnnforge.load_predictor` rebuilds a run's model with its preprocessing and class names. A
# predictor takes file paths or arrays (uint8, or floats in [0, 1]); several images are a list or an NxHxWxC array.

# %%
predictor = cnnforge.load_predictor(run.run_dir, device="cpu")
digits = load_digits()
images = np.rint(digits.images[:8] * (255 / 16)).astype(np.uint8)  # the 0-16 scale of the data set as pixels
for prediction, truth in zip(predictor.predict(list(images), topk=2), digits.target[:8], strict=False):
    top = ", ".join(f"{label} {p:.2f}" for label, p in prediction.topk)
    print(f"true {truth}  predicted {prediction.label}  (top-2: {top})")
