"""Latency: percentiles, the median-CI stopping rule, thread restore, interleaving order."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterator
from dataclasses import replace

import pytest
import torch
from torch import nn

from prunebench.harness.engines import record_of
from prunebench.harness.measure.latency import (
    LatencyResult,
    Settle,
    in_reference_frame,
    long_rounds,
    measure_latency,
    measure_speedup,
    ratio_settle,
    rebatch,
    stop_reason,
)
from prunebench.harness.measure.stats import iqr, median_ci, median_ci_ranks, percentile
from prunebench.harness.profiles import TimingSettings, load_profile

FAST = TimingSettings(warmup_iters=1, min_samples=5, min_time_s=0.0, max_time_s=0.1,
                      target_rel_ci=0.5)


def fast_profile(threads: int = 1) -> object:
    return replace(load_profile("cpu-1t"), timing=FAST, threads=threads)


def test_percentiles_linear_interpolation() -> None:
    s = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(s, 50) == pytest.approx(50.5)
    assert percentile(s, 90) == pytest.approx(90.1)
    assert percentile(s, 99) == pytest.approx(99.01)
    r = LatencyResult.from_samples([3.0, 1.0, 2.0], 1, converged=False, wall_s=0.0)
    assert (r.p50_ms, r.mean_ms, r.n, r.samples_ms) == (2.0, 2.0, 3, (3.0, 1.0, 2.0))
    assert math.isinf(r.ci_rel) and r.ci_low_ms is None  # 3 samples: no 95% CI yet


def test_median_ci_ranks_exact_and_large() -> None:
    assert median_ci_ranks(5) is None  # P(all on one side) = 1/16 > 5%
    assert median_ci_ranks(6) == (1, 6)
    assert median_ci_ranks(20) == (6, 15)  # textbook value for n=20 at 95%
    lo, hi = median_ci_ranks(1000)
    assert lo == 1001 - hi and 468 <= lo <= 470


def test_spread_statistics() -> None:
    assert iqr([1.0, 2.0, 3.0, 4.0, 5.0]) == 2.0
    assert median_ci(sorted(float(v) for v in range(20))) == (5.0, 14.0)


def test_stop_rule_on_synthetic_streams() -> None:
    timing = TimingSettings(0, 20, 0.5, 10.0, 0.02)
    rng = random.Random(0)
    tight = sorted(1.0 + rng.uniform(-0.001, 0.001) for _ in range(50))
    assert stop_reason(tight, 0.1, timing) is None  # min_time not reached
    assert stop_reason(tight[:10], 1.0, timing) is None  # min_samples not reached
    assert stop_reason(tight, 1.0, timing) == "converged"
    noisy = sorted(rng.choice([1.0, 2.0]) for _ in range(50))
    assert stop_reason(noisy, 1.0, timing) is None  # CI too wide
    assert stop_reason(noisy, 10.0, timing) == "max_time"
    assert stop_reason([5.0], 10.0, timing) == "max_time"  # cap wins even with one sample


def test_settle_knows_the_side_of_a_threshold_only_when_the_ci_is_clear_of_it() -> None:
    rng = random.Random(0)
    around_1 = sorted(1.0 + rng.uniform(-0.01, 0.01) for _ in range(50))  # CI about +-0.5%
    assert Settle(1.2, 0.04).settled(around_1)  # wholly below
    assert Settle(0.8, 0.04).settled(around_1)  # wholly above
    assert not Settle(1.0, 0.04).settled(around_1)  # the CI straddles the threshold
    assert not Settle(1.2, 0.001).settled(around_1)  # below, but the CI is wider than rel_ci
    assert not Settle(1.2, 0.04).settled(around_1[:5])  # no 95% CI from 5 samples
    with pytest.raises(ValueError, match="positive threshold"):
        Settle(0.0, 0.04)


def test_a_p50_threshold_in_the_anchored_frame_is_the_anchor_over_it_as_a_speedup() -> None:
    # p50 = anchor / speedup: below 2 ms on a 6 ms anchor is a speedup above 3
    assert ratio_settle(Settle(2.0, 0.04), 6.0) == Settle(3.0, 0.04)


def test_stop_rule_settles_before_its_target_after_the_same_minimums() -> None:
    timing = TimingSettings(0, 20, 0.5, 10.0, 0.001)  # a target these samples never meet
    rng = random.Random(0)
    around_1 = sorted(1.0 + rng.uniform(-0.01, 0.01) for _ in range(50))
    below = Settle(1.2, 0.04)
    assert stop_reason(around_1, 1.0, timing) is None  # no settle: sampling goes on
    assert stop_reason(around_1, 1.0, timing, below) == "settled"
    assert stop_reason(around_1, 1.0, timing, Settle(1.0, 0.04)) is None  # straddled
    assert stop_reason(around_1, 0.1, timing, below) is None  # min_time not reached
    assert stop_reason(around_1[:10], 1.0, timing, below) is None  # min_samples not reached
    assert stop_reason(around_1, 10.0, timing, below) == "max_time"  # the cap still comes first
    met = replace(timing, target_rel_ci=0.5)
    assert stop_reason(around_1, 1.0, met, below) == "converged"  # the target, when met, names it


def test_stream_needs_more_samples_when_noisier() -> None:
    timing = TimingSettings(0, 10, 0.0, 1e9, 0.01)

    def samples_needed(sigma: float) -> int:
        rng, s = random.Random(1), []
        while True:
            s.append(1.0 + abs(rng.gauss(0, sigma)))
            s.sort()
            if stop_reason(s, 1.0, timing):
                return len(s)

    assert samples_needed(0.001) < samples_needed(0.05)


def test_rebatch_cycles_real_examples() -> None:
    xs = [torch.arange(3.0).reshape(3, 1), torch.arange(3.0, 5.0).reshape(2, 1)]
    out = rebatch(xs, 2)
    assert [b.flatten().tolist() for b in out] == [[0, 1], [2, 3]]
    assert rebatch([torch.ones(1, 1)], 4)[0].shape == (4, 1)


def test_measure_latency_restores_threads_and_keeps_samples() -> None:
    before = torch.get_num_threads()
    seen: list[int] = []

    class Probe(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(torch.get_num_threads())
            assert not torch.is_grad_enabled()
            return x * 2

    r = measure_latency(Probe(), [torch.ones(1, 3)], fast_profile(threads=2))
    assert set(seen) == {2} and torch.get_num_threads() == before
    assert r.n >= FAST.min_samples and len(r.samples_ms) == r.n and r.batch_size == 1
    assert r.p50_ms <= r.p90_ms <= r.p99_ms and all(s > 0 for s in r.samples_ms)


def test_inputs_are_cycled() -> None:
    seen: list[float] = []

    class Record(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(float(x[0, 0]))
            return x

    measure_latency(Record(), [torch.full((1, 1), float(i)) for i in range(3)], fast_profile())
    assert {0.0, 1.0, 2.0} <= set(seen)


def test_speedup_interleaves_and_alternates_order() -> None:
    log: list[str] = []

    class Tag(nn.Module):
        def __init__(self, tag: str) -> None:
            super().__init__()
            self.tag = tag

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if not log or log[-1] != self.tag:
                log.append(self.tag)  # one entry per block of consecutive calls
            return x

    res = measure_speedup(Tag("A"), Tag("B"), [torch.ones(1, 2)], fast_profile(), block_s=0.001,
                          min_rounds=4, max_rounds=4)
    # lowering checks A then B against eager once, warm-up A B, then rounds AB | BA | AB | BA:
    # same-model blocks at round boundaries merge into one entry (always-A-first would give
    # A B A B A B A B A B after the check and warm-up)
    assert log == ["A", "B", "A", "B", "A", "B", "A", "B", "A"]
    assert len(res.ratios) == 4 and res.ratio_spread >= 0
    assert res.latency_a.n >= 4 * 3  # every block times at least 3 passes


class Fixed(nn.Module):
    """A network whose timed passes take ``ms`` (with a fake timer): ratios are exact."""

    def __init__(self, ms: float | Iterator[float]) -> None:
        super().__init__()
        self.ms = ms

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def fake_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    import prunebench.harness.measure.latency as latency

    def timer(device: torch.device):
        def time_it(model: nn.Module, x: torch.Tensor) -> float:
            ms = getattr(model, "model", model).ms  # the eager engine's wrapper holds it
            return ms if isinstance(ms, float) else next(ms)
        return time_it

    monkeypatch.setattr(latency, "_timer", timer)


def test_speedup_stops_once_the_ratio_ci_meets_the_target(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_timer(monkeypatch)
    res = measure_speedup(Fixed(2.0), Fixed(1.0), [torch.ones(1, 2)], fast_profile(),
                          block_s=0.001, min_rounds=8)
    assert res.converged and len(res.ratios) == 8  # exact ratios: converged at min_rounds
    assert res.ratio_median == 2.0 and res.ratio_ci == (2.0, 2.0) and res.ratio_ci_rel == 0.0
    assert res.latency_a.p50_ms == 2.0 and res.latency_b.p50_ms == 1.0


def test_speedup_settles_once_the_ratio_ci_is_clear_of_the_threshold(
        monkeypatch: pytest.MonkeyPatch) -> None:
    fake_timer(monkeypatch)
    prof = replace(load_profile("cpu-1t"), timing=replace(FAST, target_rel_ci=1e-6))

    def alternating() -> Fixed:  # 3 timed passes a block: block p50s 1.9, 2.1, 1.9, ...
        return Fixed(itertools.cycle([1.9, 1.9, 2.1, 2.1, 2.1, 1.9]))

    settled = measure_speedup(alternating(), Fixed(1.0), [torch.ones(1, 2)], prof,
                              block_s=1e-9, settle=Settle(1.5, 0.1))
    assert settled.settled and not settled.converged and len(settled.ratios) == 8
    assert settled.latency_b.settled and settled.ratio_ci == (1.9, 2.1)
    straddled = measure_speedup(alternating(), Fixed(1.0), [torch.ones(1, 2)], prof,
                                block_s=1e-9, settle=Settle(2.0, 0.1))
    assert not straddled.settled and len(straddled.ratios) > 8  # to the cap, as without
    assert straddled.latency_a.wall_s * 2 >= 2 * FAST.max_time_s


def test_speedup_stops_at_twice_max_time_when_rounds_disagree(
        monkeypatch: pytest.MonkeyPatch) -> None:
    fake_timer(monkeypatch)
    rng = random.Random(0)
    noisy = itertools.cycle([rng.uniform(1.0, 3.0) for _ in range(1001)])
    prof = replace(load_profile("cpu-1t"), timing=replace(FAST, target_rel_ci=1e-6))
    res = measure_speedup(Fixed(noisy), Fixed(1.0), [torch.ones(1, 2)], prof, block_s=0.001)
    assert not res.converged and res.ratio_ci_rel > 1e-6
    assert res.latency_a.wall_s * 2 >= 2 * FAST.max_time_s  # gave up at the cap, not before
    assert len(res.ratios) > 8


def test_speedup_blocks_fit_min_rounds_into_the_profiles_time_cap(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import prunebench.harness.measure.latency as latency

    fake_timer(monkeypatch)
    seconds: list[float] = []
    block = latency._block

    def recording(model, batches, secs, timer, offset):  # type: ignore[no-untyped-def]
        seconds.append(secs)
        return block(model, batches, secs, timer, offset)

    monkeypatch.setattr(latency, "_block", recording)
    measure_speedup(Fixed(2.0), Fixed(1.0), [torch.ones(1, 2)], fast_profile())
    assert set(seconds) == {FAST.max_time_s / latency.SPEEDUP_MIN_ROUNDS}  # 0.1 s cap: 12.5 ms
    seconds.clear()
    measure_speedup(Fixed(2.0), Fixed(1.0), [torch.ones(1, 2)], load_profile("cpu-1t"),
                    max_rounds=8)
    assert set(seconds) == {latency.SPEEDUP_BLOCK_S}  # a 3 s cap leaves the 50 ms default


def test_long_rounds_runs_exactly_that_many_rounds_of_the_profiles_share(
        monkeypatch: pytest.MonkeyPatch) -> None:
    fake_timer(monkeypatch)
    timing = replace(FAST, min_time_s=0.01, max_time_s=0.05)
    assert long_rounds(timing, 5) == {"min_rounds": 5, "max_rounds": 5, "block_s": 0.01}
    assert long_rounds(replace(timing, max_time_s=0.2), 5)["block_s"] == pytest.approx(0.04)
    res = measure_speedup(Fixed(2.0), Fixed(1.0), [torch.ones(1, 2)],
                          replace(load_profile("cpu-1t"), timing=timing),
                          **long_rounds(timing, 5))
    assert len(res.ratios) == 5 and res.ratio_median == 2.0


def test_speedup_rejects_bad_round_settings() -> None:
    with pytest.raises(ValueError, match="min_rounds"):
        measure_speedup(Fixed(1.0), Fixed(1.0), [torch.ones(1, 2)], fast_profile(),
                        min_rounds=5, max_rounds=4)
    with pytest.raises(ValueError, match="block_s"):
        measure_speedup(Fixed(1.0), Fixed(1.0), [torch.ones(1, 2)], fast_profile(), block_s=0)


@pytest.mark.slow
def test_same_model_ratio_near_one() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(16, 16, 3, padding=1)).eval()
    prof = replace(load_profile("cpu-1t"),
                   timing=TimingSettings(5, 20, 0.1, 1.0, 0.02))
    res = measure_speedup(model, model, [torch.randn(1, 3, 32, 32)], prof)
    assert 0.8 < res.ratio_median < 1.25  # loose: the test machine is shared


def test_cpu_profiles_flush_denormals_while_timing_and_restore() -> None:
    """Denormal floats are flushed inside ``applied`` on CPU and kept outside it."""
    from prunebench.harness.profiles import applied, load_profile

    tiny = torch.tensor([1e-39], dtype=torch.float32)  # a denormal in float32
    with applied(load_profile("cpu-1t")):
        assert (tiny * 1.0).item() == 0.0
    assert (tiny * 1.0).item() != 0.0


def test_torchscript_profile_times_the_frozen_graph_of_static_networks() -> None:
    """``graph = "torchscript"``: same outputs, BN folded away; dynamic networks are refused."""
    from prunebench.harness.errors import PrunebenchError
    from prunebench.harness.measure.latency import timed_form
    from prunebench.harness.models import create_model
    from prunebench.harness.pruning import PruneContext, PruningConfig, get_method

    frozen = replace(load_profile("cpu-1t-frozen"), timing=FAST)
    torch.manual_seed(0)
    model = create_model("test_resnet", 10, 3).eval()
    x = torch.randn(2, 3, 32, 32)
    static = get_method("l1").apply(model, PruningConfig("l1", global_ratio=0.5),
                                    PruneContext(example_input=x[:1]))
    graph = timed_form(static, x, frozen)
    assert isinstance(graph, torch.jit.ScriptModule)
    assert "batch_norm" not in str(graph.graph)  # folded into the convolutions by freezing
    with torch.no_grad():
        assert torch.allclose(graph(x), static(x), atol=1e-5)
    eager = timed_form(static, x, fast_profile())  # eager: the module with conv/BN folded
    assert record_of(eager).name == "eager" and record_of(eager).max_abs_diff < 1e-4
    assert not any(isinstance(m, nn.BatchNorm2d) for m in eager.modules())
    with torch.no_grad():
        assert torch.allclose(eager(x), static(x), atol=1e-5)
    result = measure_latency(static, [x], frozen)
    assert result.n >= FAST.min_samples and result.p50_ms > 0
    dynamic = get_method("antidote").apply(model, PruningConfig("antidote", global_keep=0.5),
                                           PruneContext(example_input=x[:1]))
    with pytest.raises(PrunebenchError, match="input-dependent pruning.*engine = \"eager\""):
        measure_latency(dynamic, [x], frozen)


def test_reference_frame_scales_every_statistic_to_anchor_over_speedup() -> None:
    lat = LatencyResult.from_samples([2.0 + 0.05 * i for i in range(30)], 1, converged=True,
                                     wall_s=0.1)
    assert lat.ci_low_ms is not None
    moved, factor = in_reference_frame(lat, dense_anchor_ms=6.0, speedup=2.0)
    assert moved.p50_ms == pytest.approx(3.0) and factor == pytest.approx(3.0 / lat.p50_ms)
    for key in ("p90_ms", "p99_ms", "mean_ms", "ci_low_ms", "ci_high_ms"):
        assert getattr(moved, key) == pytest.approx(getattr(lat, key) * factor)
    assert moved.samples_ms == pytest.approx([v * factor for v in lat.samples_ms])
    assert moved.ci_rel == lat.ci_rel and moved.n == lat.n
    with pytest.raises(ValueError, match="positive times"):
        in_reference_frame(lat, dense_anchor_ms=0.0, speedup=2.0)


def test_reference_frame_takes_its_ci_from_the_speedups_ci() -> None:
    """The anchor is a constant: an anchored p50's uncertainty is the speedup's."""
    lat = LatencyResult.from_samples([2.0 + 0.05 * i for i in range(30)], 1, converged=True,
                                     wall_s=0.1)
    moved, _ = in_reference_frame(lat, dense_anchor_ms=6.0, speedup=2.0, speedup_ci=(1.5, 2.5))
    assert (moved.p50_ms, moved.ci_low_ms, moved.ci_high_ms) == pytest.approx((3.0, 2.4, 4.0))
    assert moved.ci_rel == pytest.approx(1.0 / 3.0)
