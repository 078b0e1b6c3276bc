"""PyTorch Lightning's Trainer doing the light-step benchmark's work (imported only if lightning is installed)."""
from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler, TensorDataset

from benchmarks.light_step import arrays


class LitModule(L.LightningModule):
    """The plain loop's step as a LightningModule: normalise, forward, cross-entropy; accuracy to evaluate."""

    def __init__(self, model: nn.Module, mean: torch.Tensor, inv_std: torch.Tensor, optim: Any) -> None:
        super().__init__()
        self.model, self.mean, self.inv_std, self.optim = model, mean, inv_std, optim
        self.criterion = nn.CrossEntropyLoss()

    def training_step(self, batch: Any, _: int) -> torch.Tensor:
        x, y = batch
        loss = self.criterion(self.model((x.float() - self.mean) * self.inv_std), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def _evaluate(self, batch: Any, name: str) -> None:
        x, y = batch
        self.log(name, (self.model((x.float() - self.mean) * self.inv_std).argmax(1) == y).float().mean())

    def validation_step(self, batch: Any, _: int) -> None:
        self._evaluate(batch, "val_acc")

    def test_step(self, batch: Any, _: int) -> None:
        self._evaluate(batch, "test_acc")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.optim.lr, momentum=self.optim.momentum, fused=True)


class EpochTimes(L.Callback):
    """Training time of each epoch, from its start to its last batch (validation excluded)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start = self._end = 0.0

    def on_train_epoch_start(self, *_: Any) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, *_: Any) -> None:
        self._end = time.perf_counter()

    def on_train_epoch_end(self, *_: Any) -> None:  # runs after validation, hence the last batch's time
        self.seconds.append(self._end - self._start)


def _loader(ds: Any, size: int, shuffle: bool) -> DataLoader:
    """Whole batches indexed from in-memory tensors: Lightning's fastest natural data path."""
    data = TensorDataset(*arrays(ds))
    order = RandomSampler(data) if shuffle else SequentialSampler(data)
    return DataLoader(data, batch_size=None, sampler=BatchSampler(order, size, drop_last=False))


def run(recipe_data: dict[str, Any]) -> dict[str, Any]:
    import cnnforge
    from cnnforge.data.loading import build_splits

    wall = time.perf_counter()
    rec = cnnforge.load_recipe(recipe_data)
    L.seed_everything(rec.seed, verbose=False)
    splits = build_splits(rec)
    info = splits.info
    mean = torch.tensor(info.mean).view(1, -1, 1, 1) * 255.0
    inv_std = 1.0 / (torch.tensor(info.std).view(1, -1, 1, 1) * 255.0)
    model = cnnforge.build_model(rec.model.name, num_classes=len(info.classes), in_channels=info.channels,
                                 image_size=info.image_size)
    times = EpochTimes()
    trainer = L.Trainer(max_epochs=rec.train.epochs, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_model_summary=False, callbacks=[times],
                        num_sanity_val_steps=0)
    module = LitModule(model, mean, inv_std, rec.optim)
    trainer.fit(module, _loader(splits.train, rec.data.batch_size, True), _loader(splits.val, 500, False))
    trainer.test(module, _loader(splits.test, 500, False), verbose=False)
    return {"epoch_s": times.seconds, "wall_s": time.perf_counter() - wall, "weights": None}
