"""evaluate(): one Measurement per configuration, cost-only and with data."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from prunebench.harness.errors import ProfileError
from prunebench.harness.evaluate import (
    COUNT_BATCH,
    MAX_TIMING_EXAMPLES,
    Workload,
    build_pruned,
    counting_batches,
    evaluate,
    prepare,
)
from prunebench.harness.measure.flops import count_macs, effective_macs
from prunebench.harness.measure.latency import Settle
from prunebench.harness.measurement import Measurement
from prunebench.harness.models import create_model
from prunebench.harness.profiles import EnergySettings, TimingSettings, load_profile
from prunebench.harness.pruning import DENSE, PruningConfig

FAST = TimingSettings(warmup_iters=1, min_samples=5, min_time_s=0.0, max_time_s=0.1,
                      target_rel_ci=0.5)


@pytest.fixture
def fast() -> object:
    p = load_profile("cpu-1t")
    return replace(p, timing=FAST, energy=replace(p.energy, meter="modelled"))


def test_cost_only(fast: object) -> None:
    prepared = prepare(Workload("test_convnet", input_size=(3, 16, 16), num_classes=5))
    assert prepared.splits is None and prepared.example_input.shape == (1, 3, 16, 16)
    m = evaluate(prepared, DENSE, fast, speedup_vs_dense=True)
    assert isinstance(m, Measurement) and m.accuracy_top1 is None and m.dataset is None
    assert m.profile == "cpu-1t" and m.threads == 1 and m.batch_size == 1 and not m.forced
    assert m.macs == m.effective_macs_p50 and m.flops == 2 * m.macs > 0
    assert m.params == sum(p.numel() for p in prepared.base_model.parameters())
    assert m.peak_memory_bytes > 0 and m.peak_memory_method == "computed"
    assert m.latency_p50_ms > 0 and m.latency_n == len(m.latency_samples_ms) >= 5
    assert m.speedup_vs_dense is not None and m.speedup_spread is not None
    assert m.energy_method == "modelled" and m.energy_mj_per_inference > 0
    assert m.environment["profile"] == "cpu-1t" and m.environment["torch_version"]
    assert Measurement.from_dict(m.to_dict()) == m


def test_latency_anchor_reports_anchor_over_speedup(fast: object) -> None:
    prepared = prepare(Workload("test_convnet", input_size=(3, 16, 16), num_classes=5))
    m = evaluate(prepared, DENSE, fast, latency_anchor_ms=5.0)
    env = m.environment
    assert m.speedup_vs_dense is not None  # implied by the anchor
    assert m.latency_p50_ms == pytest.approx(5.0 / m.speedup_vs_dense)
    assert env["latency_frame"] == "dense-anchored" and env["latency_anchor_ms"] == 5.0
    assert env["latency_raw_p50_ms"] > 0
    assert env["latency_frame_factor"] == pytest.approx(m.latency_p50_ms
                                                        / env["latency_raw_p50_ms"])
    assert m.latency_p90_ms >= m.latency_p50_ms


def test_a_settle_ends_the_timing_once_the_p50_side_is_known_in_either_frame(
        fast: object) -> None:
    prepared = prepare(Workload("test_convnet", input_size=(3, 16, 16), num_classes=5))
    endless = replace(fast, timing=replace(FAST, target_rel_ci=1e-9, max_time_s=30.0))
    far = Settle(50.0, 0.5)  # ms: ten times the anchor, so the p50 (about 5 ms) is wholly below
    anchored = evaluate(prepared, DENSE, endless, latency_anchor_ms=5.0, settle=far)
    assert anchored.environment["latency_settled"] and anchored.latency_p50_ms < 50.0
    assert anchored.environment["latency_raw_p50_ms"] > 0
    direct = evaluate(prepared, DENSE, endless, settle=Settle(1000.0, 0.5))
    assert direct.environment["latency_settled"] and direct.latency_p50_ms < 1000.0
    unsettled = evaluate(prepared, DENSE, fast, latency_anchor_ms=5.0)  # no settle: as before
    assert unsettled.environment["latency_settled"] is False


def test_with_data_and_timing_lock(tmp_path: Path, fast: object) -> None:
    model = create_model("test_convnet", num_classes=10, in_channels=1)
    from prunebench.harness.train import save_checkpoint

    ckpt = tmp_path / "dense.pt"
    save_checkpoint(model, ckpt, {"model": "test_convnet", "num_classes": 10, "in_channels": 1})
    prepared = prepare(Workload("test_convnet", "digits", checkpoint=ckpt))
    lock = threading.Lock()
    held: list[bool] = []

    class Spy:
        def __enter__(self) -> None:
            lock.acquire()
            held.append(True)

        def __exit__(self, *exc: object) -> None:
            lock.release()

    two = replace(fast, batch_sizes=(4,))
    m = evaluate(prepared, DENSE, two, split="test", timing_lock=Spy())
    assert held == [True] and m.dataset == "digits" and m.batch_size == 4
    assert 0.0 <= m.accuracy_top1 <= m.accuracy_top5 <= 1.0
    assert m.accuracy_split == "test" and m.accuracy_n == len(prepared.splits.test)
    batches = prepared.eval_inputs(4)
    assert all(b.shape == (4, 1, 32, 32) for b in batches)
    assert not torch.equal(batches[0], batches[1])  # real, distinct examples


def test_bad_profile_and_force(fast: object) -> None:
    prepared = prepare(Workload("test_convnet", input_size=(3, 8, 8)))
    if not torch.cuda.is_available():
        with pytest.raises(ProfileError, match="CUDA"):
            evaluate(prepared, DENSE, "cuda-b1")
    odd = replace(fast, fingerprint=replace(fast.fingerprint, cpu_model="NoSuchCPU*"),
                  energy=EnergySettings("none", 0.0, 0.0, "-"))
    with pytest.raises(ProfileError, match="--force"):
        evaluate(prepared, DENSE, odd)
    m = evaluate(prepared, DENSE, odd, force=True)
    assert m.forced and m.environment["forced"] and m.energy_mj_per_inference is None
    assert m.energy_method == "none"


def test_counting_batches_keep_every_example_once_in_order() -> None:
    x = torch.arange(10.0).view(10, 1)
    batches = counting_batches([x[:3], x[3:7], x[7:]], size=4)
    assert [len(b) for b in batches] == [4, 4, 2]
    assert torch.equal(torch.cat(batches), x)


@pytest.mark.parametrize("options", [{"inputs": 1}, {"columns": 0.5}])
def test_effective_macs_counted_in_batches_equal_the_batch_1_count(
        fast: object, options: dict) -> None:
    """evaluate counts a gated network's effective MACs in batches of COUNT_BATCH; each input's
    count is the one it gets alone at the profile's batch 1 (the figures reported agree)."""
    prepared = prepare(Workload("resnet20", input_size=(3, 16, 16), num_classes=5))
    config = PruningConfig("antidote", global_keep=0.5, options=options)
    m = evaluate(prepared, config, fast)
    net = build_pruned(prepared, config, profile=fast, progress=False)
    alone = effective_macs(net, prepared.eval_inputs(1))
    assert len(alone.per_input) == MAX_TIMING_EXAMPLES > COUNT_BATCH and alone.dynamic
    assert (m.effective_macs_p50, m.effective_macs_p90) == (alone.p50, alone.p90)
    assert m.macs == round(alone.mean) < count_macs(prepared.base_model,
                                                    prepared.example_input).macs
