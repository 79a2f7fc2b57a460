"""A/A test of the latency harness: the same CIFAR ResNet-20 timed as both A and B on cpu-1t.

A sound instrument reports a speedup of 1 for a network against itself: the median of the
interleaved per-round ratios (the harness's own estimator, ``measure_speedup`` with its
defaults) must lie within 1 +/- 0.03. Also reports the seconds one latency
measurement takes and the coefficient of variation of p50 over 5 repeated measurements.
The last output line is one JSON object. Run: ``python benchmarks/bench_latency.py``.
"""

from __future__ import annotations

import json
import statistics
import time

import torch

from prunebench.harness.measure.latency import measure_latency, measure_speedup
from prunebench.harness.models import create_model
from prunebench.harness.profiles import check_usable, load_profile

REPEATS = 5
TOLERANCE = 0.03


def main() -> dict[str, float]:
    """Run the A/A test; returns (and prints last) the summary."""
    profile = load_profile("cpu-1t")
    forced = check_usable(profile, force=True)  # cpu-1t matches any CPU; record if it did not
    torch.manual_seed(0)
    model = create_model("resnet20").eval()
    gen = torch.Generator().manual_seed(0)
    inputs = [torch.randn(1, 3, 32, 32, generator=gen) for _ in range(32)]

    p50s, seconds = [], []
    for i in range(REPEATS):
        t0 = time.perf_counter()
        res = measure_latency(model, inputs, profile)
        seconds.append(time.perf_counter() - t0)
        p50s.append(res.p50_ms)
        print(f"measurement {i + 1}: p50 {res.p50_ms:.4f} ms, p90 {res.p90_ms:.4f} ms, "
              f"n={res.n}, CI +/-{100 * res.ci_rel:.2f}%, converged={res.converged}, "
              f"{seconds[-1]:.2f} s")
    sp = measure_speedup(model, model, inputs, profile)
    print("A/A ratios per round: " + ", ".join(f"{r:.4f}" for r in sp.ratios))
    ratio_ok = abs(sp.ratio_median - 1.0) <= TOLERANCE
    print(f"A/A median ratio {sp.ratio_median:.4f} (IQR {sp.ratio_spread:.4f}): "
          f"{'within' if ratio_ok else 'OUTSIDE'} 1 +/- {TOLERANCE}")
    summary = {
        "aa_ratio_median": sp.ratio_median,
        "aa_ratio_spread": sp.ratio_spread,
        "aa_within_tolerance": ratio_ok,
        "seconds_per_measurement": statistics.median(seconds),
        "p50_cv": statistics.stdev(p50s) / statistics.mean(p50s),
        "p50_ms_median": statistics.median(p50s),
        "rounds": len(sp.ratios),
        "aa_ratio_ci_rel": sp.ratio_ci_rel,
        "aa_converged": sp.converged,
        "profile": profile.name,
        "forced": forced,
        "torch_version": torch.__version__,
    }
    print(json.dumps(summary, sort_keys=True))
    return summary


if __name__ == "__main__":
    main()
