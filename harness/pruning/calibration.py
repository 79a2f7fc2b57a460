"""The one calibration set of every method: the first ``calibration_samples`` training items.

Methods that calibrate (AAP's activation attention, ``antidote_fast``'s widths and predictors,
``instance_sparsity``'s thresholds) read the **train** split only, never val or test, and all of
them read the same items: the first ``N`` of the train split. The split is already a seeded
shuffle of the data set (``load_dataset(seed=...)``), so these are a random sample fixed by the
split seed, and a method asked for more items than the split holds gets all of it. The option that
sizes the set is ``calibration_samples`` in every method (:func:`samples_option`; each keeps its
own default).

Without a data set (cost-only measurement) the dynamic methods calibrate on seeded standard-normal
images of the example input's shape (:func:`calibration_inputs`) and say so in the network's
``prunebench_dynamic["calibration"]`` (the choice of channels is then not meaningful, the cost
is); methods whose result depends on real data (AAP) refuse instead.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import torch
from torch.utils.data import Dataset, Subset

from prunebench.harness.errors import PrunebenchError
from prunebench.harness.pruning.options import Option

if TYPE_CHECKING:
    from prunebench.harness.pruning.base import PruneContext

OPTION = "calibration_samples"


def samples_option(default: int, minimum: int = 1) -> Option:
    """The ``calibration_samples`` option of a method, with that method's default."""
    return Option(OPTION, int, default, "training items the method calibrates on (the first N "
                  "of the train split)", min=minimum, example=default)


def calibration_set(ctx: PruneContext, n: int, method: str) -> Dataset:
    """The first ``n`` items of the train split (all of it when it holds fewer)."""
    if ctx.splits is None:
        raise PrunebenchError(f"method {method!r} needs a data set to calibrate on (the first "
                              f"{n} train items); give --dataset (e.g. digits)")
    train = ctx.splits.split("train")
    idx = list(range(min(n, len(train))))  # type: ignore[arg-type]
    return train.subset(idx) if hasattr(train, "subset") else Subset(train, idx)


def calibration_inputs(ctx: PruneContext, n: int, method: str) -> tuple[torch.Tensor, str]:
    """:func:`calibration_set`'s images stacked ``(N, C, H, W)``, and where they came from.

    Without a data set: ``n`` seeded (``ctx.seed``) standard-normal images, with a warning.
    """
    if ctx.splits is not None:
        data = calibration_set(ctx, n, method)
        xs = [data[i][0] for i in range(len(data))]  # type: ignore[arg-type]
        return torch.stack(xs).float(), f"train[:{len(xs)}]"
    warnings.warn("no data set given: dynamic gates are calibrated on random normal images; "
                  "accuracy of this configuration is not meaningful", stacklevel=3)
    gen = torch.Generator().manual_seed(ctx.seed)
    shape = tuple(ctx.example_input.shape[1:])
    return torch.randn((n, *shape), generator=gen), "synthetic-normal"
