"""Losses, optimizers, LR schedules and callbacks found by name (issue 29), through the CLI and the Python API."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import cnnforge
from tests.conftest import ROOT, cli, cli_here, one_error_line

DIGITS = str(ROOT / "recipes" / "digits_convnet.yaml")
SHAPES = str(ROOT / "plugins/cnnforge-example/cnnforge_example/recipes/shapes_gap_net.yaml")


def _quick(tmp: Path, *extra: str) -> list[str]:
    return ["data.num_workers=0", "data.batch_size=64", "train.epochs=1", f"train.out_dir={tmp}", *extra]


@pytest.mark.parametrize(("kind", "names"), [("losses", {"cross_entropy", "focal"}),
                                             ("optimizers", {"sgd", "adam", "adamw", "timm/*"}),
                                             ("schedules", {"none", "step", "cosine", "onecycle", "cosine_restarts",
                                                            "timm/*"}),
                                             ("callbacks", {"ema", "swa", "distill", "example_stop_at_accuracy"})])
def test_list_shows_every_registry_with_its_packages(capsys: pytest.CaptureFixture[str], kind: str,
                                                     names: set[str]) -> None:
    proc = cli_here(capsys, "list", kind)
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line.split()[1] for line in proc.stdout.splitlines()[1:]}
    assert names <= set(rows)
    assert rows.get("focal", rows.get("sgd", rows.get("none", rows.get("swa")))) == "cnnforge"
    assert all(package == "cnnforge-timm" for name, package in rows.items() if name.startswith("timm/"))


@pytest.mark.parametrize(("override", "expect"), [
    ("train.loss.name=focl", ["train.loss.name: unknown loss 'focl'", "did you mean focal"]),
    ("optim.name=adamm", ["optim.name: unknown optimizer 'adamm'", "did you mean adam"]),
    ("optim.momentun=0.8", ["optim.momentun: unknown parameter of 'adam'"]),
    ("optim={name: sgd, momentun: 0.8}", ["optim.momentun: unknown parameter of 'sgd'", "did you mean momentum"]),
    ("optim.head_rl=0.1", ["optim.head_rl", "did you mean head_lr"]),
    ("optim={name: sgd, momentum: 1.5}", ["optim.momentum", "less than 1"]),
    ("schedule={name: cosine_restart}", ["schedule.name", "did you mean cosine_restarts"]),
    ("schedule={name: step, gama: 0.5}", ["schedule.gama", "did you mean gamma"]),
    ("schedule={name: onecycle, warmup_epochs: 2}", ["schedule.warmup_epochs: unknown parameter of 'onecycle'"]),
    ("callbacks=[{name: swaa}]", ["callbacks[0].name: unknown callback 'swaa'", "did you mean swa"]),
    ("callbacks=[{name: swa, start: 2}]", ["callbacks[0].start", "did you mean start_epoch"]),
    ("callbacks=[{name: distill}]", ["callbacks[0].teacher", "required"]),
    ("train.loss={name: focal, gamma: -1}", ["train.loss.gamma", "greater than or equal to 0"]),
    ("callbacks={name: swa}", ["callbacks", "list"]),
])
def test_unknown_names_and_params_are_one_line_with_exit_2(capsys: pytest.CaptureFixture[str], override: str,
                                                           expect: list[str]) -> None:
    proc = cli_here(capsys, "check", DIGITS, override)
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert all(part in line for part in expect), line
    assert "digits_convnet.yaml" in line


def test_schema_completes_the_new_names(capsys: pytest.CaptureFixture[str]) -> None:
    schema = json.loads(cli_here(capsys, "schema").stdout)["$defs"]
    assert {"focal", "cross_entropy"} <= set(schema["LossConfig"]["properties"]["name"]["enum"])
    assert "swa" in schema["CallbackSpec"]["properties"]["name"]["enum"]
    optim = schema["OptimConfig"]
    assert {"sgd", "adam"} <= set(optim["properties"]["name"]["anyOf"][0]["enum"])  # and timm/* as a pattern
    sgd = next(r["then"] for r in optim["allOf"] if r["if"]["properties"]["name"]["const"] == "sgd")
    assert {"lr", "head_lr", "momentum", "nesterov"} <= set(sgd["properties"]) and not sgd["additionalProperties"]


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_focal_at_gamma_zero_is_cross_entropy_for_hard_and_soft_targets(smoothing: float) -> None:
    torch.manual_seed(0)
    logits, hard = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    soft = torch.softmax(torch.randn(6, 4), 1)
    focal = cnnforge.registry.losses.get("focal").fn
    ce = cnnforge.registry.losses.get("cross_entropy").fn(label_smoothing=smoothing)
    for target in (hard, soft):
        assert torch.allclose(focal(gamma=0.0, label_smoothing=smoothing)(logits, target), ce(logits, target))
    confident = torch.tensor([[8.0, 0.0, 0.0, 0.0]])  # an easy example counts far less than in cross-entropy
    assert focal(gamma=2.0)(confident, hard[:1]) < 1e-3 * ce(confident, hard[:1])


def test_cosine_restarts_restarts_every_period() -> None:
    from cnnforge.recipe.schema import ScheduleConfig
    from cnnforge.training.assemble import make_schedule

    optimizer = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=1.0)
    schedule = make_schedule(optimizer, ScheduleConfig(name="cosine_restarts", period_epochs=1), epochs=3,
                             steps_per_epoch=4)
    lrs = []
    for _ in range(8):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert lrs[0] == lrs[4] == 1.0 and lrs[3] < lrs[2] < 1.0


def test_swa_averages_the_last_epochs_and_reports_them(tmp_path: Path) -> None:
    result = cnnforge.train(DIGITS, _quick(tmp_path, "train.epochs=3", "callbacks=[{name: swa, start_epoch: 2}]"),
                            quiet=True)
    rows = result.history
    assert "swa/averaged" not in rows[0] and [r["swa/averaged"] for r in rows[1:]] == [1, 2]
    ckpt = sorted((result.run_dir / "checkpoints").glob("ckpt-e0003*"))[-1]
    state = torch.load(ckpt / "callbacks.pt", weights_only=True)["callbacks[0]"]
    assert int(state["n_averaged"]) == 2
    final = cnnforge.load_predictor(result.run_dir, checkpoint="last").model.state_dict()
    assert all(torch.equal(final[k], state[f"module.{k}"]) for k in final if "running" not in k
               and "num_batches" not in k)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("teacher")
    return cnnforge.train(DIGITS, _quick(out, "train.epochs=2"), quiet=True).run_dir


def test_distill_trains_towards_the_teacher(tmp_path: Path, teacher: Path) -> None:
    alone = cnnforge.train(DIGITS, _quick(tmp_path / "alone"), quiet=True)
    taught = cnnforge.train(DIGITS, _quick(tmp_path / "taught", f"callbacks=[{{name: distill, teacher: '{teacher}'}}]"),
                            quiet=True)
    assert taught.history[0]["train/loss"] != alone.history[0]["train/loss"]  # the objective is not the plain loss
    assert 0.0 <= taught["test/acc"] <= 1.0


def test_distill_refuses_a_teacher_of_other_classes(tmp_path: Path) -> None:
    shapes = cnnforge.train(SHAPES, ["data.samples=60", "train.epochs=1", f"train.out_dir={tmp_path / 't'}"],
                            quiet=True).run_dir
    proc = cli("run", DIGITS, *_quick(tmp_path / "s", f"callbacks=[{{name: distill, teacher: '{shapes}'}}]"))
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert "callbacks[0] (distill from cnnforge" in line and "classes [circle, square, triangle] (3)" in line


OUTSIDE = '''
"""Written from docs/plugins.md only: a loss, an optimizer and a callback, registered by entry point."""
from typing import Any

import cnnforge
from cnnforge.training.callbacks import Callback


@cnnforge.register_loss
def outside_ce(*, weight: Any = None, label_smoothing: float = 0.0, scale: float = 1.0) -> Any:
    """Cross-entropy times scale."""
    import torch

    ce = torch.nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)
    return lambda logits, target: scale * ce(logits, target)


@cnnforge.register_optimizer
def outside_sgd(params: Any, *, lr: float, weight_decay: float = 0.0, momentum: float = 0.0) -> Any:
    """Plain, unfused SGD."""
    import torch

    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


@cnnforge.register_callback("outside_counter")
class Counter(Callback):
    """Counts epochs across resumes; fails on purpose at fail_at; refuses a state of another version."""

    def __init__(self, *, fail_at: int = 0, version: int = 1) -> None:
        self.fail_at, self.version, self.epochs = fail_at, version, 0

    def on_epoch_end(self, ctx, metrics):
        self.epochs += 1
        metrics["outside/epochs"] = self.epochs
        if self.epochs == self.fail_at:
            raise RuntimeError("failing on purpose")

    def on_checkpoint(self, ctx):
        return {"epochs": self.epochs, "version": self.version}

    def on_restore(self, ctx, state):
        if state["version"] != self.version:
            raise ValueError(f"state of version {state['version']}, expected {self.version}")
        self.epochs = state["epochs"]
'''


@pytest.fixture(scope="module")
def outside_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The outside package built and installed into a folder of its own (no network, this environment untouched)."""
    tmp = tmp_path_factory.mktemp("outside")
    src = tmp / "src"
    (src / "outside_parts").mkdir(parents=True)
    (src / "outside_parts" / "__init__.py").write_text(OUTSIDE)
    (src / "pyproject.toml").write_text(textwrap.dedent('''
        [build-system]
        requires = ["setuptools>=68"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "outside-parts"
        version = "0.3.0"
        dependencies = ["cnnforge"]
        [project.entry-points."cnnforge.plugins"]
        outside = "outside_parts"
        [tool.setuptools]
        packages = ["outside_parts"]
    '''))
    site = tmp / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--quiet",
                           "--target", str(site), str(src)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return site


def _outside_env(site: Path) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


def _outside_recipe(tmp: Path, callback: str) -> list[str]:
    return [DIGITS, *_quick(tmp, "train.epochs=2", "train.loss={name: outside_ce, scale: 2.0}",
                            "optim={name: outside_sgd, lr: 0.05, momentum: 0.5}", f"callbacks=[{callback}]")]


def test_an_outside_package_trains_a_recipe_naming_its_loss_optimizer_and_callback(outside_site: Path,
                                                                                   tmp_path: Path) -> None:
    listed = cli("list", "callbacks", env=_outside_env(outside_site))
    assert any(line.split()[:3] == ["outside_counter", "outside-parts", "0.3.0"] for line in listed.stdout.splitlines())
    proc = cli("run", *_outside_recipe(tmp_path, "{name: outside_counter}"), "-q", env=_outside_env(outside_site))
    assert proc.returncode == 0, proc.stderr
    run = next(tmp_path.rglob("summary.json")).parent
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["outside/epochs"] for r in rows] == [1, 2]
    assert json.loads((run / "manifest.json").read_text())["plugins"]["outside-parts"] == "0.3.0"


def test_a_failing_callback_stops_with_a_checkpoint_and_resumes(outside_site: Path, tmp_path: Path) -> None:
    env = _outside_env(outside_site)
    proc = cli("run", *_outside_recipe(tmp_path, "{name: outside_counter, fail_at: 1}"), env=env)
    assert proc.returncode == 1
    line = one_error_line(proc)
    assert "callbacks[0] (outside_counter from outside-parts 0.3.0): on_epoch_end failed" in line
    assert "RuntimeError: failing on purpose" in line and "training stopped with checkpoint" in line
    run = next(tmp_path.rglob("manifest.json")).parent
    assert [p.name for p in (run / "checkpoints").glob("ckpt-*")] == ["ckpt-e0001-b000000"]
    resumed = cli("resume", str(run), env=env)  # the state says one epoch was counted: the next is the 2nd
    assert resumed.returncode == 0, resumed.stderr
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["outside/epochs"] for r in rows] == [1, 2]


def test_a_callback_state_it_cannot_read_names_the_checkpoint(outside_site: Path, tmp_path: Path) -> None:
    env = _outside_env(outside_site)
    proc = cli("run", *_outside_recipe(tmp_path, "{name: outside_counter, fail_at: 1, version: 2}"), env=env)
    assert proc.returncode == 1
    run = next(tmp_path.rglob("manifest.json")).parent
    recipe = run / "recipe.yaml"
    recipe.write_text(recipe.read_text().replace("version: 2", "version: 1"))
    proc = cli("resume", str(run), "--force", env=env)
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert "callbacks[0] (outside_counter from outside-parts 0.3.0): on_restore with its state in" in line
    assert "ckpt-e0001-b000000 failed: ValueError: state of version 2, expected 1" in line
