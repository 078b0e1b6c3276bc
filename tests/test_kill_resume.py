"""SIGKILL at random moments: checkpoints stay loadable and ``cnnforge resume`` is bit-exact.

Kill moments are random; the seed is printed so a failure can be replayed
(``CNNFORGE_KILL_SEED=<seed> pytest ...``). A run to be killed waits at the start of its last epoch
until the kill, so the kill lands mid-run however fast or loaded the machine is.
"""
from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import DDP_LAUNCH, ROOT, cli
from tests.datafiles import write_hf, write_shards
from tests.fake_dist import write_distribution
from tests.test_train import assert_same_weights

pytestmark = pytest.mark.slow

DIGITS = str(ROOT / "recipes" / "digits_convnet.yaml")
SEED = int(os.environ.get("CNNFORGE_KILL_SEED", time.time_ns() % 10**6))
#: the forward a run waits at: in its last epoch for every data set here (in batches of 32, 1,078 training
#: digits are 34 steps an epoch, 17 on each of 2 DDP ranks; the image folder and the shards 23 to 32)
LAST_EPOCH_STARTS = {1: 2 * 34 + 1, 2: 2 * 17 + 1}

HELD = '''
"""The recipe's ConvNet, whose training forward number ``hold_at`` waits while the file ``hold`` exists
(10 minutes at most, in case the test that holds it is gone)."""
import time
from pathlib import Path

import cnnforge
from cnnforge.models.seed_models import convnet


@cnnforge.register_model
def held_convnet(*, num_classes, in_channels=1, image_size=None, activation="relu", hold="", hold_at=0):
    """Seed 000's ConvNet, held at a training step while the test wants it."""
    model = convnet(num_classes=num_classes, in_channels=in_channels, image_size=image_size, activation=activation)
    forward, calls = model.forward, []

    def held_forward(x):
        if model.training:
            calls.append(1)
            deadline = time.monotonic() + 600
            while len(calls) == hold_at and Path(hold).exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        return forward(x)

    model.forward = held_forward
    return model
'''


def _rng(name: str) -> random.Random:
    print(f"kill seed {SEED} ({name})")
    return random.Random(f"{SEED}-{name}")


@pytest.fixture
def held(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """The file that holds a run (absent: nothing waits) and an environment whose plugin has ``held_convnet``."""
    site = write_distribution(tmp_path / "site", "cnnforge-held", "0.1", "cnnforge_held", HELD)
    python_path = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return tmp_path / "hold", {**os.environ, "PYTHONPATH": python_path, "OMP_NUM_THREADS": "1"}


def _kill_when_checkpointed(cmd: list[str], out: Path, delay: float, hold: Path, env: dict[str, str],
                            checkpoint: str = "ckpt-*") -> Path:
    """Start ``cmd`` held at its last epoch, wait for its first checkpoint (named like ``checkpoint``) and ``delay``
    s more (or until it waits at the hold), SIGKILL its whole process group."""
    hold.touch()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env=env)
    try:
        deadline = time.monotonic() + 600
        # out/<name>/<run id>/checkpoints/ckpt-*: a recursive glob would descend into a checkpoint's temporary
        # folder, which the run renames while the glob walks it (FileNotFoundError)
        while not list(out.glob(f"*/*/checkpoints/{checkpoint}")) and proc.poll() is None:
            assert time.monotonic() < deadline, "no checkpoint after 10 minutes"
            time.sleep(0.05)
        time.sleep(delay)
        assert proc.poll() is None, f"ended before the kill: {proc.communicate()[1][-2000:]}"
        _kill_tree(proc.pid)
        _, err = proc.communicate()
    finally:
        hold.unlink()
    assert proc.returncode == -signal.SIGKILL, err[-2000:]
    return next(out.rglob("manifest.json")).parent


def _kill_tree(pid: int) -> None:
    """SIGKILL ``pid``, its process group and every descendant, like a machine that loses power.

    Killing the group alone is not enough under ``accelerate launch``: torch elastic starts each rank in a
    session of its own, so the ranks would live on as orphans (and keep the stderr pipe open).
    """
    import psutil

    ranks = psutil.Process(pid).children(recursive=True)
    os.killpg(pid, signal.SIGKILL)
    for child in ranks:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()


def _overrides(out: Path, workers: int, every: str, hold: Path, ranks: int = 1) -> list[str]:
    return ["train.epochs=3", "data.batch_size=32", f"data.num_workers={workers}", f"train.out_dir={out}",
            "train.checkpoint_every=1" if every == "epoch" else "train.checkpoint_every_steps=9",
            f"data.on_device={'false' if workers else 'auto'}",  # workers exist only for the DataLoader path
            f"model={{name: held_convnet, activation: relu, hold: '{hold}', hold_at: {LAST_EPOCH_STARTS[ranks]}}}"]


@pytest.mark.parametrize(("every", "workers"), [("epoch", 0), ("steps", 0), ("steps", 2)])
def test_resume_after_sigkill_is_bit_exact(tmp_path: Path, every: str, workers: int,
                                           held: tuple[Path, dict[str, str]]) -> None:
    hold, env = held
    ref = cli("run", DIGITS, *_overrides(tmp_path / "ref", workers, every, hold), env=env)
    assert ref.returncode == 0, ref.stderr
    ref_dir = next((tmp_path / "ref").rglob("manifest.json")).parent
    delay = _rng(f"{every}-{workers}").uniform(0.0, 1.5)
    cut = _kill_when_checkpointed([str(Path(sys.executable).parent / "cnnforge"), "run", DIGITS,
                                   *_overrides(tmp_path / "cut", workers, every, hold)], tmp_path / "cut", delay,
                                  hold, env)
    resumed = cli("resume", str(cut), env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_weights(ref_dir, cut)


def _assert_resume_is_bit_exact(tmp_path: Path, data: list[str], workers: int, name: str,
                                held: tuple[Path, dict[str, str]], delay: float = 1.5) -> None:
    """A run with ``data`` overrides, killed after its first checkpoint and resumed, ends as a run never killed."""
    hold, env = held
    ref = cli("run", DIGITS, *_overrides(tmp_path / "ref", workers, "steps", hold), *data, env=env)
    assert ref.returncode == 0, ref.stderr
    ref_dir = next((tmp_path / "ref").rglob("manifest.json")).parent
    cut = _kill_when_checkpointed([str(Path(sys.executable).parent / "cnnforge"), "run", DIGITS,
                                   *_overrides(tmp_path / "cut", workers, "steps", hold), *data], tmp_path / "cut",
                                  _rng(name).uniform(0.0, delay), hold, env)
    resumed = cli("resume", str(cut), env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_weights(ref_dir, cut)


def test_resume_after_sigkill_is_bit_exact_with_the_training_tricks(tmp_path: Path,
                                                                    held: tuple[Path, dict[str, str]]) -> None:
    """Lookahead's slow copy (every other step, from the second epoch), the bias LR group and flip TTA."""
    tricks = ["train.lookahead={every: 2, start_epoch: 1}", "optim.bias_lr_mult=4", "eval.tta=flip"]
    _assert_resume_is_bit_exact(tmp_path, tricks, 0, "tricks", held)


def test_resume_after_sigkill_is_bit_exact_with_optim_lr_auto(tmp_path: Path,
                                                               held: tuple[Path, dict[str, str]]) -> None:
    """The resumed run trains on with the learning rate its recipe.yaml recorded, without a new range test. The
    finder's own model makes at most 100 training forwards, so the run is held at its training model's 101st."""
    _assert_resume_is_bit_exact(tmp_path, ["optim.lr=auto", "schedule.name=onecycle", "model.hold_at=101"], 0,
                                "lr-auto", held)


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished digits run for ``distill`` to learn from."""
    out = tmp_path_factory.mktemp("teacher")
    proc = cli("run", DIGITS, "train.epochs=1", "data.num_workers=0", f"train.out_dir={out}", "-q")
    assert proc.returncode == 0, proc.stderr
    return next(out.rglob("summary.json")).parent


@pytest.mark.parametrize("part", ["swa", "distill", "timm"])
def test_resume_after_sigkill_is_bit_exact_with_extension_points(tmp_path: Path, part: str, teacher_run: Path,
                                                                 held: tuple[Path, dict[str, str]]) -> None:
    """swa's average (in callbacks.pt), distill's objective, and timm's LAMB with timm's cosine schedule."""
    extra = {"swa": ["callbacks=[{name: swa, start_epoch: 2}]"],
             "distill": [f"callbacks=[{{name: distill, teacher: '{teacher_run}', alpha: 0.7}}]"],
             "timm": ["optim={name: timm/lamb, lr: 0.01}",
                      "schedule={name: timm/cosine, warmup_epochs: 1, cycle_limit: 2}"]}[part]
    _assert_resume_is_bit_exact(tmp_path, extra, 0, part, held)


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.datafiles import write_image_folder

    return write_image_folder(tmp_path_factory.mktemp("photos"), per_class=400, size=10)  # 720 training images


@pytest.mark.parametrize(("cache", "workers"), [("none", 0), ("none", 2), ("disk", 0), ("disk", 2)])
def test_resume_after_sigkill_is_bit_exact_on_image_files(tmp_path: Path, photo_folder: Path, cache: str,
                                                          workers: int, held: tuple[Path, dict[str, str]]) -> None:
    data = ["data.name=imagefolder", f"data.root={photo_folder}", f"data.cache={cache}", "data.image_size=8"]
    _assert_resume_is_bit_exact(tmp_path, data, workers, f"{cache}-{workers}", held)


@pytest.mark.parametrize(("fmt", "workers"), [("webdataset", 0), ("webdataset", 2), ("hf", 0), ("hf", 2)])
def test_resume_after_sigkill_is_bit_exact_on_shards(tmp_path: Path, fmt: str, workers: int,
                                                      held: tuple[Path, dict[str, str]]) -> None:
    """Shards read lazily (``data.cache: none``), in the main process or in 2 loader workers."""
    splits = {"train": 1000, "test": 100}
    root = write_shards(tmp_path / "d", splits, per_shard=300) if fmt == "webdataset" \
        else write_hf(tmp_path / "d", splits)
    data = [f"data.name={fmt}", f"data.root={root}", "data.cache=none", "data.image_size=8"]
    _assert_resume_is_bit_exact(tmp_path, data, workers, f"{fmt}-{workers}", held, delay=1.0)


#: a torchvision policy between albumentations ops, mixup or cutmix on the device, smoothing folded into the targets
POLICY_AND_MIXING = ["augment.train=[{name: hflip}, {name: rand_augment, magnitude: 5}]",
                     "augment.batch=[{name: mixup, prob: 0.5}, {name: cutmix, prob: 0.5}]", "train.label_smoothing=0.1"]


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_after_sigkill_is_bit_exact_with_a_policy_and_mixing(tmp_path: Path, workers: int,
                                                                    held: tuple[Path, dict[str, str]]) -> None:
    _assert_resume_is_bit_exact(tmp_path, POLICY_AND_MIXING, workers, f"mixing-{workers}", held)


def _assert_ddp_resume_is_bit_exact(tmp_path: Path, data: list[str], name: str,
                                    held: tuple[Path, dict[str, str]]) -> None:
    """A 2-process gloo run with ``data`` overrides, killed after its first checkpoint and resumed, ends as a run
    never killed."""
    def launch(*args: str) -> list[str]:
        return [*DDP_LAUNCH, "-m", "cnnforge", *args]

    hold, env = held
    ref = subprocess.run(launch("run", DIGITS, *_overrides(tmp_path / "ref", 0, "steps", hold, ranks=2), *data),
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert ref.returncode == 0, ref.stderr[-3000:]
    ref_dir = next((tmp_path / "ref").rglob("manifest.json")).parent
    cut = _kill_when_checkpointed(launch("run", DIGITS, *_overrides(tmp_path / "cut", 0, "steps", hold, ranks=2),
                                         *data), tmp_path / "cut", _rng(name).uniform(0.0, 1.5), hold, env)
    resumed = subprocess.run(launch("resume", str(cut)), cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_weights(ref_dir, cut)


def test_ddp_resume_after_sigkill_is_bit_exact(tmp_path: Path, held: tuple[Path, dict[str, str]]) -> None:
    _assert_ddp_resume_is_bit_exact(tmp_path, [], "ddp", held)


def test_ddp_resume_after_sigkill_is_bit_exact_with_a_policy_and_mixing(tmp_path: Path,
                                                                        held: tuple[Path, dict[str, str]]) -> None:
    _assert_ddp_resume_is_bit_exact(tmp_path, POLICY_AND_MIXING, "ddp-mixing", held)


def test_ddp_resume_after_sigkill_is_bit_exact_with_balanced_draws(tmp_path: Path,
                                                                   held: tuple[Path, dict[str, str]]) -> None:
    """``data.balance: sampler``: every rank draws the epoch's samples alike and takes its shard of the batches."""
    _assert_ddp_resume_is_bit_exact(tmp_path, ["data.balance=sampler"], "ddp-balanced", held)


def test_resume_after_sigkill_is_bit_exact_with_balanced_draws_and_an_early_stop_pending(
        tmp_path: Path, held: tuple[Path, dict[str, str]]) -> None:
    """Killed in epoch 3 of 4 with the early stop's patience count at 1 of 2 (each epoch after the first counts):
    the resumed run stops after epoch 3, with the weights of the run never killed."""
    import json

    hold, env = held
    data = ["data.balance=sampler", "train.epochs=4", "train.checkpoint_every=1",
            "train.early_stop={metric: val/acc, patience: 2, min_delta: 1}"]
    ref = cli("run", DIGITS, *_overrides(tmp_path / "ref", 0, "steps", hold), *data, env=env)
    assert ref.returncode == 0, ref.stderr
    ref_dir = next((tmp_path / "ref").rglob("manifest.json")).parent
    cut = _kill_when_checkpointed([str(Path(sys.executable).parent / "cnnforge"), "run", DIGITS,
                                   *_overrides(tmp_path / "cut", 0, "steps", hold), *data], tmp_path / "cut",
                                  _rng("early-stop").uniform(0.0, 1.0), hold, env, checkpoint="ckpt-e0002-*")
    [state] = [json.loads(p.read_text()) for p in sorted(cut.glob("checkpoints/ckpt-*/state.json"))[-1:]]
    assert (state["epoch"], state["stale_evals"]) == (2, 1)
    resumed = cli("resume", str(cut), env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_weights(ref_dir, cut)
    for run in (ref_dir, cut):
        summary = json.loads((run / "summary.json").read_text())
        assert (summary["stopped"], summary["stopped_epoch"]) == ("early_stop", 3)


SAVER = """
import sys, torch
from pathlib import Path
from cnnforge.rundir.checkpoint import save_checkpoint
folder, start = Path(sys.argv[1]), int(sys.argv[2])
weights = {"w": torch.randn(512, 512), "b": torch.randn(512)}
for i in range(start, start + 10**6):
    save_checkpoint(folder, f"e{i:04d}-b000000", model=weights, tensors={"optimizer": {"m": torch.randn(256, 256)},
                                                                              "scheduler": {}, "ranks": []},
                    state={"epoch": i}, keep=2)
    print(i, flush=True)
"""


def test_sigkill_during_saving_always_leaves_a_loadable_checkpoint(tmp_path: Path) -> None:
    from cnnforge.rundir.checkpoint import latest_valid, load_checkpoint

    rng = _rng("saving")
    folder = tmp_path / "checkpoints"
    saved = 0
    for _ in range(12):
        proc = subprocess.Popen([sys.executable, "-c", SAVER, str(folder), str(saved + 1)], stdout=subprocess.PIPE,
                                text=True)
        assert proc.stdout is not None
        proc.stdout.readline()  # at least one complete checkpoint exists now
        time.sleep(rng.uniform(0.0, 0.3))
        proc.kill()
        proc.wait()
        latest = latest_valid(folder)
        assert latest is not None
        _, _, state = load_checkpoint(latest, dict)
        saved = state["epoch"]
    assert saved >= 12
