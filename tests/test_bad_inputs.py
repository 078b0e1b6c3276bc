"""The bad-input table: every user mistake is one line naming the file/key/path, the right exit
code, no traceback, and nothing created or changed in existing run directories."""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import cli, one_error_line
from tests.datafiles import write_cifar10

DIGITS = "recipes/digits_convnet.yaml"


@dataclass
class Case:
    id: str
    args: list[str]
    code: int
    expect: list[str]  # substrings of the error line
    files: dict[str, str] = field(default_factory=dict)  # recipe files to write into the case folder


CASES = [
    # ---- recipe files
    Case("yaml-syntax", ["check", "{d}/bad.yaml"], 2, ["bad.yaml:4:", "invalid YAML"],
         {"bad.yaml": "name: bad\ndata:\n  name: digits\n batch_size: 4\n"}),
    Case("recipe-missing", ["check", "{d}/nope.yaml"], 2, ["nope.yaml", "no such recipe file"]),
    Case("recipe-not-mapping", ["check", "{d}/list.yaml"], 2, ["list.yaml", "mapping"], {"list.yaml": "- a\n- b\n"}),
    Case("unknown-top-key", ["check", "{d}/r.yaml"], 2, ["r.yaml: trian: unknown key", "did you mean train"],
         {"r.yaml": "trian: {epochs: 2}\n"}),
    Case("unknown-nested-key", ["check", DIGITS, "train.epoch=3"], 2, ["train.epoch: unknown key", "epochs"]),
    Case("base-missing", ["check", "{d}/child.yaml"], 2, ["child.yaml: base", "not found"],
         {"child.yaml": "base: parent.yaml\n"}),
    Case("base-cycle", ["check", "{d}/a.yaml"], 2, ["cycle"], {"a.yaml": "base: b.yaml\n", "b.yaml": "base: a.yaml\n"}),
    Case("bad-name", ["check", DIGITS, "name=../x"], 2, ["name:", "pattern"]),
    # ---- types and ranges
    Case("epochs-not-int", ["check", DIGITS, "train.epochs=ten"], 2, ["train.epochs", "integer"]),
    Case("epochs-zero", ["check", DIGITS, "train.epochs=0"], 2, ["train.epochs", "greater than or equal to 1"]),
    Case("lr-negative", ["check", DIGITS, "optim.lr=-0.1"], 2, ["optim.lr", "greater than 0"]),
    Case("batch-size-zero", ["check", DIGITS, "data.batch_size=0"], 2, ["data.batch_size"]),
    Case("val-fraction-range", ["check", DIGITS, "data.val_fraction=1.5"], 2, ["data.val_fraction"]),
    Case("split-sum", ["check", DIGITS, "data.split=[0.5, 0.2, 0.2]"], 2, ["data.split", "add up to 1"]),
    Case("precision-choice", ["check", DIGITS, "train.precision=fp8"], 2, ["train.precision"]),
    Case("optimizer-choice", ["check", DIGITS, "optim.name=sgdd"], 2, ["optim.name", "did you mean sgd"]),
    Case("on-nan-choice", ["check", DIGITS, "train.on_nan=ignore"], 2, ["train.on_nan"]),
    # ---- registry names and builder params
    Case("unknown-model", ["check", DIGITS, "model.name=vgg_nb"], 2, ["model.name: unknown model 'vgg_nb'", "vgg_bn"]),
    Case("model-param-typo", ["check", DIGITS, "model.dropuot=0.2"], 2, ["model.dropuot", "did you mean dropout"]),
    Case("model-param-value", ["check", DIGITS, "model.activation=relux"], 2, ["model.activation"]),
    Case("unknown-dataset", ["check", DIGITS, "data.name=cifar11"], 2, ["data.name", "cifar10"]),
    Case("unknown-augmentation", ["check", DIGITS, "augment.train=[{name: hflp}]"], 2,
         ["augment.train[0].name", "hflip"]),
    Case("augmentation-param", ["check", DIGITS, "augment.train=[{name: rotate, limt: 10}]"], 2,
         ["augment.train[0].limt", "'rotate'", "did you mean limit"]),
    Case("best-metric", ["check", DIGITS, "train.best_metric=val/accuracy"], 2, ["train.best_metric", "val/acc"]),
    Case("tune-metric", ["check", DIGITS, "tune={metric: val/top5}"], 2, ["tune.metric", "not a metric the trainer"]),
    Case("tune-grid-value", ["check", DIGITS, "tune.grid={model.activation: [relu, relux]}"], 2,
         ["tune.grid.model.activation", "'relux'"]),
    # ---- overrides and command-line usage
    Case("override-no-equals", ["check", DIGITS, "optim.lr"], 2, ["override 'optim.lr'", "key.path=value"]),
    Case("override-bad-yaml", ["check", DIGITS, "optim.lr=[0.1"], 2, ["override 'optim.lr=[0.1'", "YAML"]),
    Case("override-into-scalar", ["check", DIGITS, "optim.lr.x=1"], 2, ["optim.lr", "not a mapping"]),
    Case("unknown-command", ["trian", DIGITS], 2, ["invalid choice: 'trian'"]),
    Case("list-kind", ["list", "modelz"], 2, ["invalid choice: 'modelz'"]),
    Case("run-without-recipe", ["run"], 2, ["cnnforge run", "required"]),
    # ---- data and model/data mismatches (caught before training starts)
    Case("cifar-missing", ["run", "recipes/cifar_vgg_bn.yaml", "data.root={d}/empty"], 1,
         ["empty", "cifar-10-batches-py", "data.download: true"]),
    Case("cifar-truncated", ["run", "recipes/cifar_vgg_bn.yaml", "data.root={d}/cifar"], 1,
         ["data_batch_1", "not a readable dataset pickle"]),
    Case("channel-mismatch", ["run", DIGITS, "model.in_channels=3"], 2, ["model.in_channels", "1 channel"]),
    Case("class-mismatch", ["run", DIGITS, "model.num_classes=5"], 2, ["model.num_classes", "10 classes"]),
    Case("out-dir-is-a-file", ["run", DIGITS, "train.out_dir={d}/file.txt/runs"], 1, ["train.out_dir", "not a folder"],
         {"file.txt": "not a folder\n"}),
    # ---- resume
    Case("resume-not-a-run", ["resume", "{d}"], 2, ["not a run directory"]),
    Case("resume-changed-recipe", ["resume", "{changed}"], 2, ["recipe.yaml changed", "--force"]),
    Case("resume-other-torch", ["resume", "{oldtorch}"], 2, ["manifest.json", "torch 1.0.0", "--force"]),
    Case("resume-other-model", ["resume", "--force", "{other}"], 1, ["ckpt-e0001",
                                                                     "layer 'features.0.weight' has shape (4, 1, 3, "
                                                                     "3) in the checkpoint"]),
]


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def precious(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run that no failing command may touch."""
    out = tmp_path_factory.mktemp("precious")
    proc = cli("run", DIGITS, "train.epochs=1", "train.checkpoint_every=1", f"train.out_dir={out}")
    assert proc.returncode == 0, proc.stderr
    return next(out.rglob("manifest.json")).parent


def _prepare(case: Case, d: Path, precious: Path) -> dict[str, str]:
    """Write only what ``case`` refers to: recipe files, broken data, altered copies of the precious run."""
    for name, text in case.files.items():
        (d / name).write_text(text)
    used = " ".join(case.args)
    if "{d}/empty" in used:
        (d / "empty").mkdir()
    if "{d}/cifar" in used:
        write_cifar10(d / "cifar", n_train=10, n_test=10)
        batch = d / "cifar" / "cifar-10-batches-py" / "data_batch_1"
        batch.write_bytes(batch.read_bytes()[:100])  # truncated
    names = {"d": str(d)}
    if "{changed}" in used:
        changed = shutil.copytree(precious, d / "changed")
        (changed / "recipe.yaml").write_text((changed / "recipe.yaml").read_text().replace("lr: 0.01", "lr: 0.02"))
        names["changed"] = str(changed)
    if "{oldtorch}" in used:  # made with other kernels: resuming would not be bit-exact
        old = shutil.copytree(precious, d / "oldtorch")
        manifest = json.loads((old / "manifest.json").read_text())
        (old / "manifest.json").write_text(json.dumps({**manifest, "torch": "1.0.0"}))
        names["oldtorch"] = str(old)
    if "{other}" in used:  # a recipe naming another model, with the old checkpoints
        other = shutil.copytree(precious, d / "other")
        (other / "recipe.yaml").write_text((other / "recipe.yaml").read_text().replace("name: convnet", "name: vgg_bn"))
        names["other"] = str(other)
    return names


def _fill(arg: str, names: dict[str, str]) -> str:
    for key, value in names.items():
        arg = arg.replace(f"{{{key}}}", value)
    return arg


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path: Path, precious: Path) -> None:
    names = _prepare(case, tmp_path, precious)
    before = _snapshot(precious)
    out = tmp_path / "runs"
    args = [_fill(a, names) for a in case.args]
    if args[0] == "run" and len(args) > 1 and not any(a.startswith("train.out_dir=") for a in args):
        args.append(f"train.out_dir={out}")
    proc = cli(*args)
    assert proc.returncode == case.code, proc.stderr
    line = one_error_line(proc)
    for text in case.expect:
        assert text in line, (text, line)
    assert _snapshot(precious) == before  # existing run directories are untouched
    assert not out.exists() or not any(out.rglob("manifest.json"))  # and no new run was started


def test_there_are_at_least_thirty_cases() -> None:
    assert len(CASES) >= 30
