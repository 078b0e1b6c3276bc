"""Experiment trackers through Accelerate's integrations; wandb stays offline unless logged in."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cnnforge.recipe import Recipe


def wandb_logged_in() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


def trackers_for(recipe: Recipe, run_dir: Path) -> tuple[list[str], dict[str, Any]]:
    """(``log_with`` for the Accelerator, ``init_kwargs`` for ``init_trackers``)."""
    backend = recipe.tracking.backend
    if backend == "wandb":
        if not wandb_logged_in():
            os.environ.setdefault("WANDB_MODE", "offline")
        os.environ.setdefault("WANDB_SILENT", "true")
        kwargs = {"dir": str(run_dir), "name": f"{recipe.name}/{run_dir.name}", "group": recipe.tracking.group,
                  "entity": recipe.tracking.entity, "reinit": "create_new"}
        return ["wandb"], {"wandb": {k: v for k, v in kwargs.items() if v is not None}}
    if backend == "tensorboard":
        return ["tensorboard"], {}
    return [], {}  # csv: metrics.jsonl and metrics.csv are written for every run anyway
