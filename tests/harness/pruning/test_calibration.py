"""The one calibration set: the first N train items, for every method that calibrates."""

from __future__ import annotations

import pytest
import torch

from prunebench.harness.datasets import DatasetSplits
from prunebench.harness.errors import PrunebenchError
from prunebench.harness.pruning import METHODS, PruneContext, get_method
from prunebench.harness.pruning.calibration import (
    OPTION,
    calibration_inputs,
    calibration_set,
)


def _ctx(splits: DatasetSplits | None, seed: int = 0) -> PruneContext:
    return PruneContext(example_input=torch.zeros(1, 1, 32, 32), splits=splits, seed=seed)


def test_first_n_train_items_whatever_the_seed(digits) -> None:
    want = torch.stack([digits.train[i][0] for i in range(5)])
    for seed in (0, 3):
        data = calibration_set(_ctx(digits, seed), 5, "aap")
        assert len(data) == 5
        torch.testing.assert_close(torch.stack([data[i][0] for i in range(5)]), want)
        inputs, source = calibration_inputs(_ctx(digits, seed), 5, "antidote_fast")
        torch.testing.assert_close(inputs, want)
        assert source == "train[:5]"
    small = DatasetSplits("tiny", digits.train.subset(range(7)), digits.val, digits.test, 10,
                          (1, 32, 32))
    assert len(calibration_set(_ctx(small), 512, "aap")) == 7  # all of a smaller split


def test_without_data_aap_refuses_and_dynamic_methods_use_seeded_noise() -> None:
    with pytest.raises(PrunebenchError, match="method 'aap' needs a data set.*--dataset"):
        calibration_set(_ctx(None), 8, "aap")
    with pytest.warns(UserWarning, match="random normal images"):
        a, source = calibration_inputs(_ctx(None, seed=1), 4, "antidote_fast")
    with pytest.warns(UserWarning):
        b, _ = calibration_inputs(_ctx(None, seed=1), 4, "antidote_fast")
    assert source == "synthetic-normal" and a.shape == (4, 1, 32, 32) and torch.equal(a, b)


def test_every_calibrating_method_names_its_size_calibration_samples() -> None:
    calibrating = {n for n in METHODS.list() if OPTION in get_method(n).options}
    assert calibrating == {"aap", "antidote_fast", "instance_sparsity"}
    assert not any(o.name.startswith("calib") and o.name != OPTION
                   for n in METHODS.list() for o in get_method(n).options)
    defaults = {n: get_method(n).options[OPTION].default for n in calibrating}
    assert defaults == {"aap": 512, "antidote_fast": 512, "instance_sparsity": 256}
