"""Parameter counts, model size and computed peak activation memory."""

from __future__ import annotations

import torch
from torch import nn

from prunebench.harness.measure.memory import count_params, measure_memory, model_size_bytes


def test_params_and_size_count_buffers() -> None:
    m = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4))
    assert count_params(m) == 4 * 27 + 8
    # BN buffers: running mean/var (4 floats each) + num_batches_tracked (one int64)
    assert model_size_bytes(m) == (4 * 27 + 8 + 8) * 4 + 8


def test_peak_is_largest_live_set_of_a_chain() -> None:
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                      nn.Conv2d(8, 4, 3, padding=1)).eval()
    res = measure_memory(m, torch.randn(2, 3, 16, 16))
    act8 = 2 * 8 * 16 * 16 * 4  # bytes of one 8-channel activation
    # conv1's output is alive while ReLU writes its (not in-place) output
    assert res.peak_activation_bytes == 2 * act8
    assert res.peak_method == "computed" and res.batch_size == 2


def test_inplace_relu_does_not_double_count_and_scales_with_batch() -> None:
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True)).eval()
    one = measure_memory(m, torch.randn(1, 3, 8, 8)).peak_activation_bytes
    four = measure_memory(m, torch.randn(4, 3, 8, 8)).peak_activation_bytes
    assert one == 8 * 8 * 8 * 4 and four == 4 * one
