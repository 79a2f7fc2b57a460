"""Wall-clock latency of single forward passes, with adaptive stopping on the median's CI.

Every sample is one forward pass of one batch (never a block average): ``time.perf_counter_ns``
around the call on CPU, CUDA events plus a synchronize on GPU. Inputs are real batches cycled
through, because dynamic networks take input-dependent time. Timing runs under
``torch.inference_mode`` with the garbage collector disabled and the profile's thread count set.
Sampling stops when the median's distribution-free 95% CI half-width is within
``timing.target_rel_ci`` of the median (after ``min_samples`` samples and ``min_time_s``
seconds), or at the ``max_time_s`` cap. A :class:`Settle` given to a measurement stops it
earlier, once the median is known to lie on one side of a threshold (a search trial's budget).
"""

from __future__ import annotations

import bisect
import contextlib
import copy
import gc
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from prunebench.harness.measure.stats import iqr, median_ci, median_ci_rel, percentile
from prunebench.harness.profiles import HardwareProfile, TimingSettings, applied


@dataclass(frozen=True)
class LatencyResult:
    """Latency of one batch of ``batch_size`` inputs in milliseconds; samples in measured order."""

    samples_ms: tuple[float, ...]
    batch_size: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    ci_low_ms: float | None
    ci_high_ms: float | None
    ci_rel: float  # larger CI half-width / median (inf when too few samples)
    converged: bool  # stopped because the CI reached the target (not the time cap)
    wall_s: float  # seconds spent sampling (after warm-up)
    cpu_s: float | None = None  # this process's CPU seconds over the same window
    settled: bool = False  # stopped because a Settle's side was known (before target and cap)

    @property
    def cpu_wall_ratio(self) -> float | None:
        """CPU seconds / wall seconds while sampling: about 1 for a one-thread network that had
        the core to itself; well below 1 when other processes took the core away."""
        return self.cpu_s / self.wall_s if self.cpu_s is not None and self.wall_s > 0 else None

    @property
    def n(self) -> int:
        """Number of samples."""
        return len(self.samples_ms)

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float], batch_size: int, *, converged: bool,
                     wall_s: float, confidence: float = 0.95,
                     cpu_s: float | None = None, settled: bool = False) -> LatencyResult:
        """Summarise samples (milliseconds per batch)."""
        s = sorted(samples_ms)
        ci = median_ci(s, confidence)
        return cls(samples_ms=tuple(samples_ms), batch_size=batch_size,
                   p50_ms=percentile(s, 50), p90_ms=percentile(s, 90), p99_ms=percentile(s, 99),
                   mean_ms=math.fsum(s) / len(s), ci_low_ms=ci[0] if ci else None,
                   ci_high_ms=ci[1] if ci else None, ci_rel=median_ci_rel(s, confidence),
                   converged=converged, wall_s=wall_s, cpu_s=cpu_s, settled=settled)


def in_reference_frame(lat: LatencyResult, dense_anchor_ms: float, speedup: float,
                       speedup_ci: tuple[float, float] | None = None
                       ) -> tuple[LatencyResult, float]:
    """``lat`` moved into a reference frame: its p50 becomes ``dense_anchor_ms / speedup``.

    ``speedup`` is ``time(dense) / time(this network)`` from interleaved rounds, and
    ``dense_anchor_ms`` the dense network's p50 measured once (when a study was created). A
    shared machine's fast and slow minutes move both networks of a round alike, so latencies in
    one frame compare across hours; every statistic is scaled by the same factor, which is
    returned (1.0 on a machine that did not drift). With ``speedup_ci`` (the speedup's CI from
    its rounds) the p50's CI is the anchor over that CI, since the anchor is a constant and the
    speedup is what was estimated; without it, the scaled CI of the samples' median.
    """
    if not (dense_anchor_ms > 0 and speedup > 0 and lat.p50_ms > 0):
        raise ValueError(f"reference frame needs positive times (anchor {dense_anchor_ms!r} ms, "
                         f"speedup {speedup!r}, p50 {lat.p50_ms!r} ms)")
    f = dense_anchor_ms / speedup / lat.p50_ms

    def scaled(v: float | None) -> float | None:
        return None if v is None else v * f

    moved = replace(lat, samples_ms=tuple(v * f for v in lat.samples_ms), p50_ms=lat.p50_ms * f,
                    p90_ms=lat.p90_ms * f, p99_ms=lat.p99_ms * f, mean_ms=lat.mean_ms * f,
                    ci_low_ms=scaled(lat.ci_low_ms), ci_high_ms=scaled(lat.ci_high_ms))
    if speedup_ci is not None and speedup_ci[0] > 0:
        low, high = dense_anchor_ms / speedup_ci[1], dense_anchor_ms / speedup_ci[0]
        p50 = moved.p50_ms
        moved = replace(moved, ci_low_ms=low, ci_high_ms=high,
                        ci_rel=max(p50 - low, high - p50) / p50)
    return moved, f


@dataclass(frozen=True)
class SpeedupResult:
    """``time(A) / time(B)`` from interleaved rounds (> 1: B is faster)."""

    ratio_median: float
    ratio_spread: float  # interquartile range of the per-round ratios
    ratios: tuple[float, ...]
    latency_a: LatencyResult  # all rounds pooled
    latency_b: LatencyResult
    ratio_ci: tuple[float, float] | None  # the median ratio's 95% CI (None: too few rounds)
    ratio_ci_rel: float  # its larger half-width / the median (inf: too few rounds)
    converged: bool  # stopped because that CI reached the profile's target (not the time cap)
    settled: bool = False  # stopped because a Settle's side was known (before target and cap)


@dataclass(frozen=True)
class Settle:
    """A decision that ends a measurement early: which side of ``threshold`` the median is on.

    After the measurement's usual minimums (samples or rounds, and time), sampling stops once
    the median's distribution-free 95% CI lies wholly above or wholly below ``threshold`` and
    its relative half-width is within ``rel_ci``: more samples would narrow the estimate but not
    move it across the threshold. The threshold is in the measured quantity's own unit: a p50
    in milliseconds for :func:`measure_latency`, a ratio ``time(A) / time(B)`` for
    :func:`measure_speedup`. A search trial uses it to learn which side of its latency budget a
    network falls on (``search.objective``, ``--trial-timing settled``).
    """

    threshold: float
    rel_ci: float

    def __post_init__(self) -> None:
        if not (self.threshold > 0 and math.isfinite(self.threshold)) or not self.rel_ci > 0:
            raise ValueError(f"a Settle needs a positive threshold and rel_ci (got "
                             f"{self.threshold!r}, {self.rel_ci!r})")

    def settled(self, sorted_values: Sequence[float]) -> bool:
        """Whether the median of ``sorted_values`` is settled on one side of the threshold."""
        ci = median_ci(sorted_values)
        return ci is not None and median_ci_rel(sorted_values) <= self.rel_ci and (
            ci[1] < self.threshold or ci[0] > self.threshold)


def ratio_settle(settle: Settle, dense_anchor_ms: float) -> Settle:
    """A p50 threshold (ms) in the anchored frame as the speedup threshold it means there: the
    p50 is ``dense_anchor_ms / speedup``, so a p50 below ``settle.threshold`` is a speedup above
    ``dense_anchor_ms / settle.threshold`` (:func:`in_reference_frame`)."""
    return Settle(dense_anchor_ms / settle.threshold, settle.rel_ci)


def stop_reason(sorted_ms: Sequence[float], elapsed_s: float,
                timing: TimingSettings, settle: Settle | None = None) -> str | None:
    """Why sampling should stop now (``"converged"``, ``"settled"`` or ``"max_time"``), or
    ``None`` to go on."""
    n = len(sorted_ms)
    if n >= 1 and elapsed_s >= timing.max_time_s:
        return "max_time"
    if n >= timing.min_samples and elapsed_s >= timing.min_time_s:
        if median_ci_rel(sorted_ms) <= timing.target_rel_ci:
            return "converged"
        if settle is not None and settle.settled(sorted_ms):
            return "settled"
    return None


# --------------------------------------------------------------------------- placement
def place_model(model: nn.Module, profile: HardwareProfile) -> nn.Module:
    """``model`` in eval mode on the profile's device/dtype/memory format (copied if it moves)."""
    device, dtype = torch.device(profile.device), profile.torch_dtype
    params = list(model.parameters())
    moves = any(p.device != device or (p.is_floating_point() and p.dtype != dtype)
                for p in params)
    if profile.memory_format == "channels_last":
        moves = moves or any(p.dim() == 4 and not p.is_contiguous(
            memory_format=torch.channels_last) for p in params)
    if moves:
        model = copy.deepcopy(model).to(device=device, dtype=dtype)
        if profile.memory_format == "channels_last":
            model = model.to(memory_format=torch.channels_last)
    return model.eval()


def timed_form(model: nn.Module, example: torch.Tensor, profile: HardwareProfile) -> nn.Module:
    """The form of ``model`` that ``profile`` times: lowered by the profile's engine
    (:func:`harness.engines.lower`: eager with conv/BN folded, frozen TorchScript,
    ``torch.compile``, ONNX Runtime or OpenVINO). ``model`` and ``example`` must be placed;
    a network the engine cannot run is refused with one line naming an engine that can."""
    from prunebench.harness.engines import lower

    with applied(profile):  # lower (compile, check against eager) on the profile's threads
        return lower(model, example, profile)


def place_input(x: torch.Tensor, profile: HardwareProfile) -> torch.Tensor:
    """One batch on the profile's device, dtype and memory format."""
    x = x.to(device=profile.device, dtype=profile.torch_dtype if x.is_floating_point() else None)
    if x.dim() == 4:
        x = x.contiguous(memory_format=profile.torch_memory_format)
    return x


def rebatch(inputs: Sequence[torch.Tensor], batch_size: int,
            max_batches: int = 16) -> list[torch.Tensor]:
    """Real examples regrouped into batches of ``batch_size`` (cycled when there are too few)."""
    if not inputs:
        raise ValueError("latency needs at least one input batch")
    if all(x.shape[0] == batch_size for x in inputs):
        return list(inputs[:max_batches])
    examples = torch.cat([x.detach().cpu() for x in inputs], dim=0)
    n = examples.shape[0]
    if n < batch_size:
        reps = math.ceil(batch_size / n)
        examples = examples.repeat(reps, *([1] * (examples.dim() - 1)))[:batch_size]
        n = batch_size
    return [examples[i * batch_size:(i + 1) * batch_size]
            for i in range(min(n // batch_size, max_batches))]


@contextlib.contextmanager
def gc_disabled() -> Iterator[None]:
    """Collect the young generations, then keep the garbage collector off for the block.

    Only the young generations: a full collection walks the whole heap (0.41 s in a process
    holding the digits workload, benchmarks/bench_eval_cost.py; twice per measurement), and with
    the collector off no collection of any generation can pause the timed passes."""
    was = gc.isenabled()
    gc.collect(1)
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


# --------------------------------------------------------------------------- timing
def _timer(device: torch.device) -> Callable[[nn.Module, torch.Tensor], float]:
    """A function timing one forward pass in milliseconds."""
    if device.type == "cuda":
        def cuda_time(model: nn.Module, x: torch.Tensor) -> float:
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            model(x)
            end.record()
            end.synchronize()
            return float(start.elapsed_time(end))
        return cuda_time

    def cpu_time(model: nn.Module, x: torch.Tensor) -> float:
        t0 = time.perf_counter_ns()
        model(x)
        return (time.perf_counter_ns() - t0) / 1e6
    return cpu_time


def _warm_up(models: Sequence[nn.Module], batches: Sequence[torch.Tensor], iters: int,
             device: torch.device) -> None:
    """``iters`` untimed passes of each model, then wait for the device."""
    for model in models:
        for i in range(iters):
            model(batches[i % len(batches)])
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _sample(model: nn.Module, batches: Sequence[torch.Tensor], timing: TimingSettings,
            device: torch.device, settle: Settle | None = None) -> LatencyResult:
    timer = _timer(device)
    _warm_up((model,), batches, timing.warmup_iters, device)
    samples: list[float] = []
    sorted_ms: list[float] = []
    start, cpu0 = time.perf_counter(), time.process_time()
    reason = None
    while reason is None:
        ms = timer(model, batches[len(samples) % len(batches)])
        samples.append(ms)
        bisect.insort(sorted_ms, ms)
        reason = stop_reason(sorted_ms, time.perf_counter() - start, timing, settle)
    return LatencyResult.from_samples(samples, int(batches[0].shape[0]),
                                      converged=reason == "converged",
                                      settled=reason == "settled",
                                      wall_s=time.perf_counter() - start,
                                      cpu_s=time.process_time() - cpu0)


def measure_latency(model: nn.Module, inputs: Sequence[torch.Tensor], profile: HardwareProfile,
                    *, batch_size: int | None = None,
                    timing: TimingSettings | None = None,
                    settle: Settle | None = None) -> LatencyResult:
    """Time single forward passes of ``model`` on real ``inputs`` under ``profile``.

    ``inputs`` are batches of real examples; they are regrouped into batches of ``batch_size``
    (default: the profile's first batch size) and cycled through. ``timing`` overrides the
    profile's timing settings; ``settle`` (a p50 threshold in ms) may stop sampling before the
    CI target (:class:`Settle`). Returns milliseconds per batch.
    """
    bs = batch_size or profile.default_batch_size
    batches = [place_input(x, profile) for x in rebatch(inputs, bs)]
    model = timed_form(place_model(model, profile), batches[0], profile)
    with applied(profile), torch.inference_mode(), gc_disabled():
        return _sample(model, batches, timing or profile.timing, torch.device(profile.device),
                       settle)


# Each network's share of one interleaved round (seconds). A shared machine's slow spells last
# longer than a round, so they fall on both networks of the round alike and cancel in its
# ratio (benchmarks/bench_speedup.py measures the estimate's repeatability against long rounds).
SPEEDUP_BLOCK_S = 0.05
SPEEDUP_MIN_ROUNDS = 8


def measure_speedup(model_a: nn.Module, model_b: nn.Module, inputs: Sequence[torch.Tensor],
                    profile: HardwareProfile, *, block_s: float | None = None,
                    min_rounds: int = SPEEDUP_MIN_ROUNDS, max_rounds: int | None = None,
                    batch_size: int | None = None,
                    settle: Settle | None = None) -> SpeedupResult:
    """Interleaved rounds A B, B A, A B, ...: the median of per-round ``p50(A) / p50(B)``.

    Each round times each network for one block of ``block_s`` seconds (default
    ``SPEEDUP_BLOCK_S``, shortened so that ``min_rounds`` rounds fit in the profile's
    ``2 x max_time_s``; at least 3 passes, after one untimed pass that brings its weights back
    into cache), alternating which goes first. Rounds go on until the median ratio's
    distribution-free 95% CI is within the profile's ``target_rel_ci`` (after ``min_rounds``
    rounds and ``2 x min_time_s``), or until ``2 x max_time_s`` have passed or ``max_rounds``
    rounds are done; never fewer than ``min_rounds``. ``settle`` (a threshold on the ratio)
    stops the rounds, after the same minimums, once the median ratio's side of it is known
    (:class:`Settle`). ``ratio_spread`` is the interquartile range of the round ratios.
    """
    if min_rounds < 1 or (max_rounds is not None and max_rounds < min_rounds):
        raise ValueError(f"need 1 <= min_rounds <= max_rounds (got {min_rounds}, {max_rounds})")
    t = profile.timing
    if block_s is None:
        block_s = min(SPEEDUP_BLOCK_S, t.max_time_s / min_rounds)
    if block_s <= 0:
        raise ValueError(f"block_s must be positive (got {block_s})")
    bs = batch_size or profile.default_batch_size
    batches = [place_input(x, profile) for x in rebatch(inputs, bs)]
    a, b = (timed_form(place_model(m, profile), batches[0], profile) for m in (model_a, model_b))
    device = torch.device(profile.device)
    timer = _timer(device)
    ratios: list[float] = []
    sorted_ratios: list[float] = []
    pooled: dict[str, list[float]] = {"a": [], "b": []}
    converged = settled = False
    with applied(profile), torch.inference_mode(), gc_disabled():
        _warm_up((a, b), batches, t.warmup_iters, device)
        start, cpu0 = time.perf_counter(), time.process_time()
        while True:
            order = (("a", a), ("b", b)) if len(ratios) % 2 == 0 else (("b", b), ("a", a))
            p50 = {}
            for key, model in order:
                block = _block(model, batches, block_s, timer, len(pooled[key]))
                pooled[key].extend(block)
                p50[key] = percentile(sorted(block), 50)
            ratios.append(p50["a"] / p50["b"])
            bisect.insort(sorted_ratios, ratios[-1])
            if len(ratios) < min_rounds:
                continue
            elapsed = time.perf_counter() - start
            if elapsed >= 2 * t.min_time_s and median_ci_rel(sorted_ratios) <= t.target_rel_ci:
                converged = True
                break
            if elapsed >= 2 * t.min_time_s and settle is not None and \
                    settle.settled(sorted_ratios):
                settled = True
                break
            if elapsed >= 2 * t.max_time_s or (max_rounds is not None
                                                and len(ratios) >= max_rounds):
                break
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
    lat = {key: LatencyResult.from_samples(v, bs, converged=converged, wall_s=wall / 2,
                                           cpu_s=cpu / 2, settled=settled)
           for key, v in pooled.items()}
    return SpeedupResult(ratio_median=percentile(sorted_ratios, 50), ratio_spread=iqr(ratios),
                         ratios=tuple(ratios), latency_a=lat["a"], latency_b=lat["b"],
                         ratio_ci=median_ci(sorted_ratios),
                         ratio_ci_rel=median_ci_rel(sorted_ratios), converged=converged,
                         settled=settled)


def long_rounds(timing: TimingSettings, rounds: int) -> dict[str, Any]:
    """:func:`measure_speedup` keywords for the estimator short blocks replaced: exactly
    ``rounds`` rounds of ``max(min_time_s, max_time_s / rounds)`` per network. The benchmarks
    whose recorded figures were measured with it keep it."""
    return {"min_rounds": rounds, "max_rounds": rounds,
            "block_s": max(timing.min_time_s, timing.max_time_s / rounds)}


def _block(model: nn.Module, batches: Sequence[torch.Tensor], seconds: float,
           timer: Callable[[nn.Module, torch.Tensor], float], offset: int) -> list[float]:
    """One untimed pass, then timed passes for ``seconds`` (at least 3); milliseconds each."""
    model(batches[offset % len(batches)])
    out: list[float] = []
    start = time.perf_counter()
    while len(out) < 3 or time.perf_counter() - start < seconds:
        out.append(timer(model, batches[(offset + len(out)) % len(batches)]))
    return out
