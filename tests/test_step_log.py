"""The training metrics kept on the device (``StepLog``): the same sums whenever the predictions are scored."""
from __future__ import annotations

import pytest
import torch

from cnnforge.training import step_log
from cnnforge.training.step_log import StepLog


def _batches() -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(logits, loss, labels) of seven batches of uneven sizes, the fourth with a non-finite loss; the losses are
    multiples of 1/8, so any order of summation gives the same float."""
    gen = torch.Generator().manual_seed(0)
    out = []
    for i, size in enumerate((5, 8, 8, 3, 8, 1, 6)):
        logits, labels = torch.randn(size, 4, generator=gen), torch.randint(0, 4, (size,), generator=gen)
        loss = torch.tensor(float("nan") if i == 3 else (i + 1) / 8)
        out.append((logits, loss, labels))
    return out


def _expected(batches: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> list[float]:
    finite = [(logits, loss, y) for logits, loss, y in batches if torch.isfinite(loss)]
    return [sum(float(loss) * len(y) for _, loss, y in finite),
            sum(int((logits.argmax(1) == y).sum()) for logits, _, y in finite),
            sum(len(y) for _, _, y in finite)]


@pytest.mark.parametrize("held", [1, 13, step_log.HELD_LOGITS])  # scored every batch, every few, only when read
def test_sums_do_not_depend_on_when_predictions_are_scored(monkeypatch: pytest.MonkeyPatch, held: int) -> None:
    monkeypatch.setattr(step_log, "HELD_LOGITS", held)
    batches = _batches()
    log = StepLog(len(batches), torch.device("cpu"))
    for i, (logits, loss, y) in enumerate(batches):
        log.record(logits, loss, y)
        if i == 1:
            assert log.sums().tolist() == _expected(batches[:2])  # a progress read: the batches stay pending
        if i == 4:
            first, sums, _ = log.fold()  # a checkpoint mid-epoch
            assert (first, sums.tolist()) == (0, _expected(batches[:5]))
    first, sums, _ = log.fold()
    assert (first, sums.tolist()) == (5, _expected(batches[5:]))
    assert log.sums().tolist() == [0.0, 0.0, 0.0]


def test_a_started_epoch_forgets_the_previous_batches_and_verdicts() -> None:
    log = StepLog(3, torch.device("cpu"))
    logits, loss, y = _batches()[0]
    log.record(logits, loss, y)
    log.verdict(0).fill_(1.0)  # what the guard writes for a non-finite step
    log.start(1)  # a resumed epoch, or one restarted after a rollback
    assert (log.first, log.sums().tolist(), log.counters().tolist()) == (1, [0.0, 0.0, 0.0], [0.0, 0.0])
