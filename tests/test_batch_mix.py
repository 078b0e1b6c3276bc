"""``augment.batch``: torchvision's MixUp/CutMix, seeded per batch, soft targets with label smoothing folded in."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from torchvision.transforms import v2

import cnnforge
from cnnforge.data.batch_mix import BatchMix, cutmix_box
from cnnforge.recipe.schema import MixSpec
from tests.conftest import ROOT, cli, one_error_line

DIGITS = str(ROOT / "recipes" / "digits_convnet.yaml")
BOTH = "augment.batch=[{name: mixup, alpha: 0.4, prob: 0.5}, {name: cutmix, prob: 0.5}]"


def _mix(*ops: dict[str, object], smoothing: float = 0.0, classes: int = 5) -> BatchMix:
    return BatchMix([MixSpec(**op) for op in ops], num_classes=classes, smoothing=smoothing, seed=11)


def _batch(n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, 10, 12, generator=g), torch.randint(0, 5, (n,), generator=g)


def test_mixup_is_torchvisions_at_the_drawn_lambda() -> None:
    mix, (x, y) = _mix({"name": "mixup", "alpha": 0.4}), _batch()
    name, lam, _ = mix.draw((0, 3, 0))
    reference = v2.MixUp(alpha=0.4, num_classes=5)
    reference.make_params = lambda flat_inputs: {"lam": lam}  # torchvision draws from the global RNG
    want_x, want_y = reference(x.clone(), y)
    got_x, got_y, dominant = mix(x.clone(), y, (0, 3, 0))
    assert name == "mixup" and 0 < lam < 1
    torch.testing.assert_close(got_x, want_x)
    torch.testing.assert_close(got_y, want_y)
    assert torch.equal(dominant, y if lam >= 0.5 else y.roll(1, 0))


def test_cutmix_is_torchvisions_with_the_drawn_box() -> None:
    mix, (x, y) = _mix({"name": "cutmix", "alpha": 1.0}), _batch()
    for batch in range(20):
        name, lam, rng = mix.draw((1, batch, 0))
        top, bottom, left, right, corrected = cutmix_box(10, 12, lam, rng)
        reference = v2.CutMix(alpha=1.0, num_classes=5)
        params = {"box": (left, top, right, bottom), "lam_adjusted": corrected}
        reference.make_params = lambda flat_inputs, params=params: params
        want_x, want_y = reference(x.clone(), y)
        got_x, got_y, dominant = mix(x.clone(), y, (1, batch, 0))
        assert name == "cutmix" and torch.equal(got_x, want_x)
        torch.testing.assert_close(got_y, want_y)
        assert torch.equal(dominant, y if corrected >= 0.5 else y.roll(1, 0))


def test_label_smoothing_is_folded_into_the_targets() -> None:
    plain, smooth = _mix({"name": "mixup"}), _mix({"name": "mixup"}, smoothing=0.2)
    x, y = _batch()
    _, soft, _ = plain(x.clone(), y, (0, 0, 0))
    _, smoothed, _ = smooth(x.clone(), y, (0, 0, 0))
    torch.testing.assert_close(smoothed, soft * 0.8 + 0.2 / 5)
    torch.testing.assert_close(smoothed.sum(1), torch.ones(6))


def test_each_batch_gets_at_most_one_op_with_its_probability() -> None:
    mix = _mix({"name": "mixup", "prob": 0.2}, {"name": "cutmix", "prob": 0.5})
    counts = Counter(mix.draw((0, b, 0))[0] for b in range(4000))
    assert abs(counts["mixup"] / 4000 - 0.2) < 0.03 and abs(counts["cutmix"] / 4000 - 0.5) < 0.03
    assert abs(counts[None] / 4000 - 0.3) < 0.03
    x, y = _batch()
    unmixed = next(b for b in range(100) if mix.draw((0, b, 0))[0] is None)
    same_x, hard, labels = mix(x.clone(), y, (0, unmixed, 0))
    assert torch.equal(same_x, x) and torch.equal(hard.argmax(1), y) and torch.equal(labels, y)


def test_mixup_cutmix_is_timms_mixup_with_its_switch_prob() -> None:
    """timm's ``Mixup(prob=0.8, switch_prob=0.25)`` in one entry: the batches it mixes are cut a quarter of the
    time; it draws what the two-entry list with those shares draws."""
    switched = _mix({"name": "mixup_cutmix", "alpha": 0.4, "cutmix_alpha": 2.0, "prob": 0.8, "switch_prob": 0.25})
    listed = _mix({"name": "mixup", "alpha": 0.4, "prob": 0.6}, {"name": "cutmix", "alpha": 2.0, "prob": 0.2})
    draws = [switched.draw((0, b, 0))[:2] for b in range(4000)]
    assert draws == [listed.draw((0, b, 0))[:2] for b in range(4000)]
    counts = Counter(name for name, _ in draws)
    assert abs(counts["cutmix"] / (counts["cutmix"] + counts["mixup"]) - 0.25) < 0.03
    assert abs(counts[None] / 4000 - 0.2) < 0.03
    default = _mix({"name": "mixup_cutmix"})  # timm's defaults: every batch mixed, half of them cut
    assert Counter(default.draw((0, b, 0))[0] for b in range(4000))[None] == 0


def test_draws_depend_on_the_batch_key_only() -> None:
    mix = _mix({"name": "mixup"})
    assert mix.draw((2, 5, 1))[1] == _mix({"name": "mixup"}).draw((2, 5, 1))[1]
    assert len({mix.draw(key)[1] for key in [(2, 5, 1), (2, 5, 0), (2, 4, 1), (1, 5, 1)]}) == 4  # rank, batch, epoch


def test_an_odd_batch_and_a_batch_of_one_mix() -> None:
    mix = _mix({"name": "cutmix"})
    for n in (1, 5):
        x, y = _batch(n)
        out, target, dominant = mix(x.clone(), y, (0, 0, 0))
        assert out.shape == x.shape and target.shape == (n, 5) and dominant.shape == (n,)


@pytest.mark.parametrize(("batch", "where", "words"), [
    ("[{name: mixup, alpha: 0}]", "augment.batch.0.alpha", "greater than 0"),
    ("[{name: cutmix, alpha: -1}]", "augment.batch.0.alpha", "greater than 0"),
    ("[{name: mixup, prob: 0.7}, {name: cutmix, prob: 0.7}]", "augment.batch", "add up to 1.4"),
    ("[{name: mixop}]", "augment.batch.0.name", "did you mean mixup"),
    ("[{name: cutmix, switch_prob: 0.5}]", "augment.batch.0", "switch_prob belongs to {name: mixup_cutmix}"),
    ("[{name: mixup_cutmix, switch_prob: 1.5}]", "augment.batch.0.switch_prob", "less than or equal to 1"),
    ("[{name: mixup_cutmix, cutmix_alpha: 0}]", "augment.batch.0.cutmix_alpha", "greater than 0"),
    ("[{name: mixup_cutmix}, {name: cutmix, prob: 0.5}]", "augment.batch", "add up to 1.5"),
])
def test_bad_batch_ops_are_one_line_and_exit_2(batch: str, where: str, words: str, tmp_path: Path) -> None:
    proc = cli("run", DIGITS, f"augment.batch={batch}", f"train.out_dir={tmp_path / 'runs'}")
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert f"{DIGITS}: {where}" in line and words in line, line
    assert not (tmp_path / "runs").exists()  # nothing started


def test_training_with_a_policy_and_mixing_is_reproducible(tmp_path: Path) -> None:
    overrides = ["train.epochs=2", f"train.out_dir={tmp_path}", "train.label_smoothing=0.1", BOTH,
                 "augment.train=[{name: hflip}, {name: rand_augment, magnitude: 5}]"]
    first = cnnforge.train(DIGITS, overrides, quiet=True)
    second = cnnforge.train(DIGITS, overrides, quiet=True)
    assert first.weights.read_bytes() == second.weights.read_bytes()
    rows = [json.loads(line) for line in (first.run_dir / "metrics.jsonl").read_text().splitlines()]
    # scored against each sample's dominant label: an accuracy, not a comparison with soft targets
    assert all(0.0 < row["train/acc"] <= 1.0 for row in rows)


def test_preview_writes_the_mixed_batches(tmp_path: Path) -> None:
    import matplotlib.image

    out = tmp_path / "grid.png"
    proc = cli("augment", "preview", DIGITS, BOTH, "--out", str(out), "--n", "6")
    assert proc.returncode == 0, proc.stderr
    mixed = tmp_path / "grid-batch.png"
    assert f"wrote {mixed}" in proc.stdout and matplotlib.image.imread(mixed).std() > 0.05
