"""Top-1 / top-5 classification accuracy of a model on a data set split."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import Dataset

from prunebench.harness.errors import DataError


@dataclass(frozen=True)
class AccuracyResult:
    """Accuracy as fractions in [0, 1] over ``n`` items.

    ``top5`` counts a hit when the label is among the 5 highest scores (among all scores when
    there are fewer than 5 classes, which makes it 1.0).
    """

    top1: float
    top5: float
    n: int

    def to_dict(self) -> dict[str, float | int]:
        """Plain dict with unit-bearing keys."""
        return {"accuracy_top1": self.top1, "accuracy_top5": self.top5, "accuracy_n": self.n}


def accuracy(model: nn.Module, dataset: Dataset, *, batch_size: int = 256,
             device: str | torch.device | None = None, workers: int = 0,
             pin_memory: bool = False) -> AccuracyResult:
    """Evaluate ``model`` (switched to eval mode, no autograd) on every item of ``dataset``.

    Inputs go to ``device`` (default: where the model's first parameter is, e.g. a training
    GPU; the CPU for a model without parameters); ``workers`` and ``pin_memory`` are the
    loader's. The model's train/eval mode is restored afterwards.
    """
    from prunebench.harness.datasets import make_loader

    if len(dataset) == 0:  # type: ignore[arg-type]
        raise DataError("cannot measure accuracy on an empty split; check the data set")
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.eval()
    hit1 = hit5 = n = 0
    try:
        with torch.inference_mode():
            for x, y in make_loader(dataset, batch_size=batch_size, shuffle=False,
                                    workers=workers, pin_memory=pin_memory):
                x = x.to(device, non_blocking=pin_memory)
                y = torch.as_tensor(y).to(device, non_blocking=pin_memory)
                logits = model(x)
                k = min(5, logits.shape[1])
                top = logits.topk(k, dim=1).indices
                hits = top == y.unsqueeze(1)
                hit1 += int(hits[:, 0].sum())
                hit5 += int(hits.any(dim=1).sum())
                n += int(y.numel())
    finally:
        model.train(was_training)
    return AccuracyResult(top1=hit1 / n, top5=hit5 / n, n=n)
