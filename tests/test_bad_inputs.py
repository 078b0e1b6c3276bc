"""The bad-input table: every user mistake is one line naming the file/key/path, the right exit
code, no traceback, and nothing created or changed in existing run directories."""
from __future__ import annotations

import gzip
import hashlib
import json
import pickle
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, cli_here, one_error_line
from tests.datafiles import write_cifar10, write_idx, write_image_folder, write_mnist

DIGITS = "recipes/digits_convnet.yaml"


@dataclass
class Case:
    id: str
    args: list[str]
    code: int
    expect: list[str]  # substrings of the error line
    files: dict[str, str] = field(default_factory=dict)  # recipe files to write into the case folder
    damage: Callable[[Path], None] | None = None  # applied to a copy of the finished run, "{run}" in args
    data: Callable[[Path], None] | None = None  # writes broken data into the case folder


# ---- damage done to a copy of a finished run ("{run}"); paths are relative to the run, CKPT is its checkpoint
def _path(run: Path, rel: str) -> Path:
    return run / rel.replace("CKPT", next((run / "checkpoints").glob("ckpt-*")).name)


def _write(rel: str, data: bytes | str) -> Callable[[Path], None]:
    """Replace a file; inside a checkpoint its checksum is fixed up, so only the content is at fault."""
    def damage(run: Path) -> None:
        target = _path(run, rel)
        target.write_bytes(data.encode() if isinstance(data, str) else data)
        if target.parent.name.startswith("ckpt-") and target.name != "checksums.json":
            _edit_json(str(target.parent.relative_to(run) / "checksums.json"), lambda m: m["files"].update(
                {target.name: hashlib.sha256(target.read_bytes()).hexdigest()}))(run)
    return damage


def _edit_json(rel: str, change: Callable[[dict], object]) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        target = _path(run, rel)
        data = json.loads(target.read_text())
        change(data)
        _write(rel, json.dumps(data))(run)
    return damage


def _flip(rel: str) -> Callable[[Path], None]:
    """One bit flipped in the tensor data at the end of a weights file."""
    def damage(run: Path) -> None:
        target = _path(run, rel)
        data = bytearray(target.read_bytes())
        data[-7] ^= 0x10
        target.write_bytes(bytes(data))
    return damage


def _strip_checksum(rel: str) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        from safetensors.torch import load_file, save_file

        target = _path(run, rel)
        save_file(load_file(str(target)), str(target))
    return damage


def _truncate(rel: str) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        target = _path(run, rel)
        target.write_bytes(target.read_bytes()[:200])
    return damage


def _symlink(rel: str, to: str) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        target = _path(run, rel)
        target.unlink()
        target.symlink_to(to)
    return damage


# ---- broken data written into the case folder ("{d}")
def _mnist(change: Callable[[Path], None]) -> Callable[[Path], None]:
    def data(d: Path) -> None:
        write_mnist(d, n_train=60, n_test=20, gz=False)
        change(d / "MNIST" / "raw")
    return data


def _idx_header(name: str, ndim: int, dims: list[int], payload: bytes = b"") -> Callable[[Path], None]:
    return _mnist(lambda raw: (raw / name).write_bytes(bytes([0, 0, 8, ndim]) + struct.pack(f">{len(dims)}I", *dims)
                                                        + payload))


def _gzip_bomb(raw: Path) -> None:
    (raw / "t10k-images-idx3-ubyte").unlink()
    with gzip.open(raw / "t10k-images-idx3-ubyte.gz", "wb", compresslevel=9) as f:
        f.write(bytes([0, 0, 8, 3]) + struct.pack(">3I", 20, 28, 28))
        for _ in range(64):
            f.write(bytes(1 << 20))  # 64 MiB of zeros past the 15,680 bytes the header declares


def _cifar(change: Callable[[Path], None]) -> Callable[[Path], None]:
    def data(d: Path) -> None:
        write_cifar10(d / "cifar", n_train=20, n_test=10)
        change(d / "cifar" / "cifar-10-batches-py")
    return data


def _cifar_test_batch(**values: object) -> Callable[[Path], None]:
    def change(folder: Path) -> None:
        rng = np.random.default_rng(0)
        batch = {b"data": rng.integers(0, 255, (10, 3072)).astype(np.uint8), b"labels": [0] * 10}
        batch.update({k.encode(): v for k, v in values.items()})
        (folder / "test_batch").write_bytes(pickle.dumps(batch))
    return _cifar(change)


def _folder(change: Callable[[Path], None] | None = None,
            classes: tuple[str, ...] = ("cat", "dog")) -> Callable[[Path], None]:
    def data(d: Path) -> None:
        write_image_folder(d / "images", classes=classes, per_class=4, size=8)
        if change is not None:
            change(d / "images")
    return data


# nine levels of nine aliases: ~400 bytes that expand to 9**9 values
_LEVELS = [f"&{c} [{', '.join(['*' + p] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi", strict=True)]
ALIAS_BOMB = ("name: bomb\ntune:\n  sample:\n    optim.lr:\n      choice: &j ["
              + ", ".join(["&a [x, x, x, x, x, x, x, x, x]", *_LEVELS]) + "]\n")
IMAGES = "data={name: imagefolder, root: '{d}/images'}"


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
    Case("early-stop-metric", ["check", DIGITS, "train.early_stop={metric: val/f1}"], 2,
         ["train.early_stop.metric", "not a metric the trainer reports", "val/macro_f1"]),
    Case("early-stop-patience", ["check", DIGITS, "train.early_stop={patience: 0}"], 2, ["train.early_stop.patience"]),
    Case("max-time-unparsable", ["check", DIGITS, "train.max_time=1h30x"], 2,
         ["train.max_time", "cannot read '1h30x'"]),
    Case("max-time-zero", ["run", DIGITS, "train.max_time=0"], 2, ["train.max_time", "more than 0 seconds"]),
    Case("max-time-negative", ["check", DIGITS, "train.max_time=-5m"], 2, ["train.max_time", "cannot read '-5m'"]),
    Case("balance-choice", ["check", DIGITS, "data.balance=oversample"], 2, ["data.balance", "sampler"]),
    Case("class-weights-zero", ["check", DIGITS, "train.class_weights=[1, 0]"], 2,
         ["train.class_weights.1", "greater than 0"]),
    Case("class-weights-with-sampler", ["check", DIGITS, "data.balance=sampler", "train.class_weights=[1, 2]"], 2,
         ["train.class_weights", "data.balance: sampler"]),
    Case("class-weights-length", ["run", DIGITS, "train.class_weights=[1, 2]"], 2,
         ["digits_convnet.yaml: train.class_weights", "2 value(s)", "10 classes"]),
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
    # ---- weights read back are verified by every reader; nothing in the run changes when they are not
    Case("eval-flipped-best", ["eval", "{run}"], 1, ["best.safetensors", "do not match their checksum"],
         damage=_flip("checkpoints/best.safetensors")),
    Case("predict-flipped-best", ["predict", "{run}", "{d}/x.png"], 1, ["best.safetensors", "checksum"],
         damage=_flip("checkpoints/best.safetensors")),
    Case("predict-json-flipped-best", ["predict", "--json", "{run}", "{d}/x.png"], 1, ["best.safetensors", "checksum"],
         damage=_flip("checkpoints/best.safetensors")),
    Case("embed-flipped-best", ["embed", "{run}", "--method", "pca", "--n", "20"], 1, ["best.safetensors", "checksum"],
         damage=_flip("checkpoints/best.safetensors")),
    Case("viz-flipped-best", ["viz", "filters", "{run}"], 1, ["best.safetensors", "checksum"],
         damage=_flip("checkpoints/best.safetensors")),
    Case("export-flipped-final", ["export", "{run}", "--format", "safetensors", "--checkpoint", "last"], 1,
         ["model.safetensors", "checksum"], damage=_flip("model.safetensors")),
    Case("eval-last-flipped-final", ["eval", "{run}", "--checkpoint", "last"], 1, ["model.safetensors", "checksum"],
         damage=_flip("model.safetensors")),
    Case("resume-flipped-best", ["resume", "{run}"], 1, ["best.safetensors", "checksum"],
         damage=_flip("checkpoints/best.safetensors")),
    Case("eval-weights-without-checksum", ["eval", "{run}"], 1, ["best.safetensors", "no checksum"],
         damage=_strip_checksum("checkpoints/best.safetensors")),
    Case("predict-truncated-weights", ["predict", "{run}", "{d}/x.png"], 1,
         ["best.safetensors", "not a readable safetensors"],
         damage=_truncate("checkpoints/best.safetensors")),
    # ---- checkpoints: their own run only, their file list from the writer, never a path outside the folder
    Case("resume-foreign-checkpoint", ["resume", "{run}"], 2, ["CKPT", "belongs to another run", "--force"],
         damage=_edit_json("checkpoints/CKPT/checksums.json", lambda m: m["run"].update(run_id="f" * 32))),
    Case("resume-checkpoint-other-recipe", ["resume", "{run}"], 2, ["belongs to another recipe", "--force"],
         damage=_edit_json("checkpoints/CKPT/checksums.json", lambda m: m["run"].update(recipe_sha256="0" * 16))),
    Case("resume-checkpoint-without-identity", ["resume", "{run}"], 2, ["records no run identity", "--force"],
         damage=_edit_json("checkpoints/CKPT/checksums.json", lambda m: m.pop("run"))),
    Case("resume-emptied-manifest", ["resume", "{run}"], 1, ["checkpoints", "no complete checkpoint"],
         damage=_edit_json("checkpoints/CKPT/checksums.json", lambda m: m.update(files={}))),
    Case("resume-manifest-escapes-folder", ["resume", "{run}"], 1, ["no complete checkpoint"],
         damage=_edit_json("checkpoints/CKPT/checksums.json", lambda m: m["files"].update(
             {"../../../../../../dev/zero": "0" * 64}))),
    Case("resume-checkpoint-file-symlinked", ["resume", "{run}"], 1, ["no complete checkpoint"],
         damage=_symlink("checkpoints/CKPT/optimizer.pt", "/dev/zero")),
    Case("resume-checkpoint-file-missing", ["resume", "{run}"], 1, ["no complete checkpoint"],
         damage=lambda run: _path(run, "checkpoints/CKPT/ranks.pt").unlink()),
    Case("resume-manifest-wrong-type", ["resume", "{run}"], 1, ["no complete checkpoint"],
         damage=_write("checkpoints/CKPT/checksums.json", "[1, 2, 3]")),
    Case("resume-state-unknown-field", ["resume", "{run}"], 1, ["state.json", "colour: unknown field"],
         damage=_edit_json("checkpoints/CKPT/state.json", lambda s: s.update(colour="red"))),
    Case("resume-state-wrong-type", ["resume", "{run}"], 1, ["state.json", "epoch"],
         damage=_edit_json("checkpoints/CKPT/state.json", lambda s: s.update(epoch="one"))),
    Case("resume-state-not-an-object", ["resume", "{run}"], 1, ["state.json", "checkpoint state"],
         damage=_write("checkpoints/CKPT/state.json", '["epoch", 1]')),
    Case("resume-state-not-utf8", ["resume", "{run}"], 1, ["state.json", "Invalid JSON"],
         damage=_write("checkpoints/CKPT/state.json", b'{"epoch": "\xff\xfe"}')),
    # ---- run files: one line naming the file
    Case("resume-manifest-a-list", ["resume", "{run}"], 1, ["manifest.json", "not a valid run manifest"],
         damage=_write("manifest.json", "[1, 2]")),
    Case("resume-manifest-not-utf8", ["resume", "{run}"], 1, ["manifest.json", "Invalid JSON"],
         damage=_write("manifest.json", b"\xff\xfe{}")),
    Case("resume-manifest-unknown-field", ["resume", "{run}"], 1, ["manifest.json", "colour: unknown field"],
         damage=_edit_json("manifest.json", lambda m: m.update(colour="red"))),
    Case("resume-manifest-wrong-field-type", ["resume", "{run}"], 1, ["manifest.json", "torch"],
         damage=_edit_json("manifest.json", lambda m: m.update(torch=2))),
    Case("resume-recipe-not-utf8", ["resume", "{run}"], 2, ["recipe.yaml", "UnicodeDecodeError"],
         damage=_write("recipe.yaml", b"name: \xff\xfe\n")),
    Case("predict-recipe-a-list", ["predict", "{run}", "{d}/x.png"], 2, ["recipe.yaml", "mapping"],
         damage=_write("recipe.yaml", "- a\n- b\n")),
    Case("predict-data-info-huge-shape", ["predict", "{run}", "{d}/x.png"], 1, ["data_info.json", "stored_shape"],
         damage=_edit_json("data_info.json", lambda i: i.update(stored_shape=[10**9, 10**9, 3]))),
    Case("predict-data-info-a-string", ["predict", "{run}", "{d}/x.png"], 1, ["data_info.json", "data description"],
         damage=_write("data_info.json", '"classes"')),
    Case("eval-data-info-not-utf8", ["eval", "{run}"], 1, ["data_info.json", "Invalid JSON"],
         damage=_write("data_info.json", b"\xff\xfe")),
    Case("export-data-info-unknown-field", ["export", "{run}", "--format", "torchscript"], 1,
         ["data_info.json", "colour: unknown field"],
         damage=_edit_json("data_info.json", lambda i: i.update(colour=1))),
    Case("viz-data-info-disagrees", ["viz", "filters", "{run}"], 1, ["data_info.json", "do not agree"],
         damage=_edit_json("data_info.json", lambda i: i.update(channels=3))),
    Case("predict-data-info-nan-mean", ["predict", "{run}", "{d}/x.png"], 1, ["data_info.json", "mean"],
         damage=_edit_json("data_info.json", lambda i: i.update(mean=[float("nan")]))),
    # ---- recipes: bounded YAML, strict types, the same checks in `check` as in run/tune
    Case("yaml-alias-bomb", ["check", "{d}/bomb.yaml"], 2, ["bomb.yaml:", "expands to more than"],
         {"bomb.yaml": ALIAS_BOMB}),
    Case("yaml-deep-nesting", ["check", "{d}/deep.yaml"], 2, ["deep.yaml", "nested too deeply"],
         {"deep.yaml": "name: deep\ntune: " + "[" * 20000 + "]" * 20000 + "\n"}),
    Case("yaml-recursive-alias", ["check", "{d}/loop.yaml"], 2, ["loop.yaml:", "contains it"],
         {"loop.yaml": "name: loop\nmodel: &m {name: convnet, x: *m}\n"}),
    Case("yaml-huge-document", ["check", "{d}/huge.yaml"], 2, ["huge.yaml", "a recipe is at most"],
         {"huge.yaml": "name: huge\n" + "# padding\n" * 120_000}),
    Case("yaml-duplicate-key", ["check", "{d}/dup.yaml"], 2, ["dup.yaml:3:", "duplicate key 'train'"],
         {"dup.yaml": "name: dup\ntrain: {epochs: 1}\ntrain: {epochs: 2}\n"}),
    Case("yaml-duplicate-nested-key", ["check", "{d}/dup2.yaml"], 2, ["dup2.yaml:4:", "duplicate key 'lr'"],
         {"dup2.yaml": "name: dup2\noptim:\n  lr: 0.1\n  lr: 0.2\n"}),
    Case("override-duplicate-key", ["check", DIGITS, "optim={lr: 0.1, lr: 0.2}"], 2,
         ["override", "duplicate key 'lr'"]),
    Case("epochs-bool", ["check", DIGITS, "train.epochs=true"], 2, ["train.epochs", "valid integer"]),
    Case("batch-size-float", ["check", DIGITS, "data.batch_size=32.5"], 2, ["data.batch_size", "valid integer"]),
    Case("plots-not-bool", ["check", DIGITS, "train.plots=1"], 2, ["train.plots", "valid boolean"]),
    Case("seed-too-big", ["check", DIGITS, "seed=4294967296"], 2, ["seed", "less than 4294967296"]),
    Case("seed-bool", ["run", DIGITS, "seed=true"], 2, ["seed", "valid integer"]),
    Case("lr-infinite", ["check", DIGITS, "optim.lr=.inf"], 2, ["optim.lr", "finite"]),
    Case("lr-nan", ["run", DIGITS, "optim.lr=.nan"], 2, ["optim.lr", "finite"]),
    Case("weight-decay-infinite", ["check", DIGITS, "optim.weight_decay=.inf"], 2, ["optim.weight_decay", "finite"]),
    Case("tune-sample-choice-in-check", ["check", DIGITS, "tune={sample: {model.activation: {choice: [relu, relux]}}}"],
         2, ["tune.sample.model.activation", "'relux'"]),
    Case("tune-sample-range-in-run", ["run", DIGITS, "tune={sample: {optim.lr: {uniform: [0.1, 0.01]}}}"], 2,
         ["tune.sample.optim.lr", "not a range"]),
    Case("tune-sample-value-invalid", ["check", DIGITS, "tune={sample: {optim.lr: {uniform: [-0.1, 0.1]}}}"], 2,
         ["tune.sample.optim.lr", "value -0.1 is invalid"]),
    Case("tune-sample-empty-choice", ["check", DIGITS, "tune={sample: {optim.lr: {choice: []}}}"], 2,
         ["tune.sample.optim.lr.choice", "is empty"]),
    Case("tune-grid-empty-list", ["check", DIGITS, "tune={grid: {optim.lr: []}}"], 2,
         ["tune.grid.optim.lr", "is empty"]),
    Case("tune-grid-none-value", ["tune", DIGITS, "tune={grid: {optim.lr: [0.1, null]}}"], 2,
         ["tune.grid.optim.lr", "value None is invalid"]),
    Case("tune-grid-unknown-key", ["check", DIGITS, "tune={grid: {optim.lrr: [0.1]}}"], 2,
         ["tune.grid.optim.lrr", "unknown parameter of 'adam'", "did you mean lr"]),
    Case("tune-grace-period-in-check",
         ["check", DIGITS, "tune={grid: {optim.lr: [0.1]}, scheduler: {name: asha, grace_period: 99}}"],
         2, ["tune.scheduler.grace_period", "longer than train.epochs"]),
    Case("image-size-too-big", ["check", DIGITS, "data={name: imagefolder, root: x, image_size: 100000}"], 2,
         ["data.image_size", "less than or equal to 8192"]),
    # ---- data: every split checked before training, every bad file named
    Case("mnist-test-labels-out-of-range", ["run", DIGITS, "data={name: mnist, root: '{d}'}"], 1,
         ["test split", "labels must lie in 0..9, found 250..250"],
         data=_mnist(lambda raw: write_idx(raw / "t10k-labels-idx1-ubyte", np.full(20, 250, dtype=np.uint8)))),
    Case("cifar-test-label-negative", ["run", "recipes/cifar_vgg_bn.yaml", "data.root={d}/cifar"], 1,
         ["test split", "found -3..0"], data=_cifar_test_batch(labels=[-3] + [0] * 9)),
    Case("cifar-label-overflow", ["run", "recipes/cifar_vgg_bn.yaml", "data.root={d}/cifar"], 1,
         ["test_batch", "OverflowError"], data=_cifar_test_batch(labels=[2**70] * 10)),
    Case("cifar-pixel-overflow", ["run", "recipes/cifar_vgg_bn.yaml", "data.root={d}/cifar"], 1,
         ["test_batch", "not a CIFAR batch"], data=_cifar_test_batch(data=[[300] * 3072] * 10)),
    Case("cifar-pickle-allocation-bomb", ["run", "recipes/cifar_vgg_bn.yaml", "data.root={d}/cifar"], 1,
         ["test_batch", "not a readable dataset pickle"],
         data=_cifar(lambda f: (f / "test_batch").write_bytes(b"\x80\x04\x8e" + struct.pack("<Q", 1 << 40) + b"abc"))),
    Case("idx-255-dimensions", ["run", DIGITS, "data={name: mnist, root: '{d}'}"], 1,
         ["t10k-images-idx3-ubyte", "255 dimensions"], data=_idx_header("t10k-images-idx3-ubyte", 255, [1] * 255)),
    Case("idx-absurd-size", ["run", DIGITS, "data={name: mnist, root: '{d}'}"], 1,
         ["t10k-images-idx3-ubyte", "declares [4294967295, 4294967295, 4294967295]"],
         data=_idx_header("t10k-images-idx3-ubyte", 3, [2**32 - 1] * 3)),
    Case("idx-gzip-bomb", ["run", DIGITS, "data={name: mnist, root: '{d}'}"], 1,
         ["t10k-images-idx3-ubyte.gz", "padded"], data=_mnist(_gzip_bomb)),
    Case("zero-byte-image", ["run", DIGITS, IMAGES], 1, ["001.png", "empty (0 bytes)"],
         data=_folder(lambda root: (root / "dog" / "001.png").write_bytes(b""))),
    Case("opencv-decompression-bomb", ["run", DIGITS, IMAGES], 1, ["big.ppm", "OpenCV refused"],
         data=_folder(lambda root: (root / "dog" / "big.ppm").write_bytes(b"PF\n14000 14000\n-1.0\n" + bytes(4096)))),
    Case("one-class-dataset", ["run", DIGITS, IMAGES], 1, ["one class ('cat')", "at least two"],
         data=_folder(classes=("cat",))),
]


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file's checksum; the lock file (which holds the last holder's PID) and links are left out."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink() and p.name != ".lock"}


@pytest.fixture(scope="module")
def precious(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run that no failing command may touch."""
    import cnnforge

    out = tmp_path_factory.mktemp("precious")
    return cnnforge.train(str(ROOT / DIGITS), ["train.epochs=1", "train.checkpoint_every=1", f"train.out_dir={out}"],
                          quiet=True).run_dir


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
    if case.data is not None:
        case.data(d)
    if "{run}" in used:  # a copy of the finished run, damaged
        run = shutil.copytree(precious, d / "run", symlinks=True)
        assert case.damage is not None
        case.damage(run)
        names["run"] = str(run)
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
def test_bad_input(case: Case, tmp_path: Path, precious: Path, capfd: pytest.CaptureFixture[str],
                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Each case through ``cnnforge.cli.main`` in this process (a new interpreter per case would cost seconds of
    imports each); ``capfd`` captures what reaches the process's stdout and stderr, loader workers' included."""
    monkeypatch.chdir(ROOT)  # where `cnnforge` runs in the other tests: the recipes' relative paths
    names = _prepare(case, tmp_path, precious)
    before = _snapshot(precious)
    out = tmp_path / "runs"
    args = [_fill(a, names) for a in case.args]
    if args[0] == "run" and len(args) > 1 and not any(a.startswith("train.out_dir=") for a in args):
        args.append(f"train.out_dir={out}")
    damaged = _snapshot(tmp_path / "run") if "run" in names else None
    proc = cli_here(capfd, *args)
    assert proc.returncode == case.code, proc.stderr
    line = one_error_line(proc)
    for text in case.expect:
        assert _fill(text.replace("CKPT", "ckpt-"), names) in line, (text, line)
    assert _snapshot(precious) == before  # existing run directories are untouched
    if damaged is not None:  # no report or file of the damaged run replaced by a failed command
        assert _snapshot(tmp_path / "run") == damaged
    assert not out.exists() or not any(out.rglob("manifest.json"))  # and no new run was started


def test_the_table_has_more_than_eighty_cases() -> None:
    assert len(CASES) > 80
    assert len({c.id for c in CASES}) == len(CASES)
