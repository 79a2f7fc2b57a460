"""How repeatable a speedup-over-dense estimate is: short interleaved blocks against long rounds.

Every latency of an anchored search (``--latency-frame anchored``, the default) is the dense
anchor divided by a speedup over the dense network timed in interleaved rounds
(``harness.measure.latency.measure_speedup``), so the estimate's run-to-run scatter is the
search's latency noise: it decides whether a configuration the search calls feasible still
meets the budget when re-measured. This script cuts the cached dense ResNet-20 on digits with
uniform L1 ratios ``RATIOS`` and estimates each network's speedup ``REPEATS`` times with each
estimator on the ``cpu-1t`` profile, the estimators and networks shuffled together so that the
machine's drift falls on both alike. It does so twice: on the machine as it is (``quiet``), and
with a bursty neighbour on the other core (``bursty_neighbour``: a one-thread process that
streams a 32 MB array and multiplies matrices for 0.2-2 s, then sleeps 0.2-2 s, seeded), the
kind of load a shared CI runner or a colleague's job puts on it:

- ``short_blocks``: the harness's estimator (50 ms per network per round, at least 8 rounds,
  until the median ratio's 95% CI meets the profile's target or 2 x ``max_time_s``);
- ``long_rounds``: the estimator it replaced (5 rounds of ``max_time_s / 5`` = 0.6 s per
  network; ``prunebench.harness.measure.latency.long_rounds``).

Per condition, estimator and network it reports the scatter of the estimates relative to the
median of all estimates of that network by both estimators (``worst_rel_dev``: the largest
``|est / ref - 1|``; ``rel_iqr``), and the seconds one estimate takes. No arguments; about 10
minutes on 2 cores. The last line is one JSON object.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np

from prunebench.harness.evaluate import Workload, build_pruned, prepare
from prunebench.harness.measure.latency import long_rounds, measure_speedup
from prunebench.harness.measure.stats import iqr, percentile
from prunebench.harness.profiles import load_profile
from prunebench.harness.pruning import PruningConfig

RATIOS = (0.3, 0.5, 0.7)
REPEATS = int(os.environ.get("PRUNEBENCH_BENCH_REPEATS", "8"))  # smoke runs only
NEIGHBOUR = """
import random, time
import numpy as np
rng, a, m = random.Random(0), np.ones(4_000_000), np.ones((256, 256))
while True:
    end = time.perf_counter() + rng.uniform(0.2, 2.0)
    while time.perf_counter() < end:
        a = a * 1.0000001
        m = m @ m / 256.0
    time.sleep(rng.uniform(0.2, 2.0))
"""


def _neighbour() -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", NEIGHBOUR], env=env)


def main() -> int:
    """Estimate every network's speedup ``REPEATS`` times per estimator; print one JSON object."""
    profile = load_profile("cpu-1t")
    prepared = prepare(Workload(model="resnet20", dataset="digits"), progress=True)
    inputs = prepared.eval_inputs(profile.default_batch_size, split="val")
    estimators = {
        "short_blocks": {},
        "long_rounds": long_rounds(profile.timing, 5),
    }
    nets = {r: build_pruned(prepared, PruningConfig(method="l1", global_ratio=r),
                            profile=profile, progress=False) for r in RATIOS}
    result: dict = {"profile": profile.name, "repeats": REPEATS, "ratios": list(RATIOS)}
    for condition in ("quiet", "bursty_neighbour"):
        neighbour = _neighbour() if condition == "bursty_neighbour" else None
        try:
            result[condition] = _condition(condition, prepared, nets, inputs, profile, estimators)
        finally:
            if neighbour is not None:
                neighbour.kill()
                neighbour.wait()
    result["load_avg_1m"] = os.getloadavg()[0]
    print(json.dumps(result))
    return 0


def _condition(condition: str, prepared, nets: dict, inputs: list, profile,
               estimators: dict[str, dict]) -> dict:
    """Every (network, estimator) pair ``REPEATS`` times in a shuffled order; the scatter."""
    jobs = [(r, e) for r in RATIOS for e in estimators for _ in range(REPEATS)]
    np.random.default_rng(0).shuffle(jobs)
    est: dict[str, dict[float, list[float]]] = {e: {r: [] for r in RATIOS} for e in estimators}
    secs: dict[str, list[float]] = {e: [] for e in estimators}
    for i, (ratio, name) in enumerate(jobs):
        start = time.perf_counter()
        sp = measure_speedup(prepared.base_model, nets[ratio], inputs, profile,
                             **estimators[name])
        secs[name].append(time.perf_counter() - start)
        est[name][ratio].append(sp.ratio_median)
        print(f"{condition} [{i + 1}/{len(jobs)}] ratio {ratio:.1f} {name:>12}: speedup "
              f"{sp.ratio_median:.3f} ({len(sp.ratios)} rounds, {secs[name][-1]:.1f} s)",
              flush=True)
    out = {}
    for name in estimators:
        per_net = {}
        for r in RATIOS:
            ref = percentile(sorted(est["short_blocks"][r] + est["long_rounds"][r]), 50)
            rel = [v / ref - 1 for v in est[name][r]]
            per_net[str(r)] = {"median_speedup": round(percentile(sorted(est[name][r]), 50), 4),
                               "worst_rel_dev": round(max(abs(v) for v in rel), 4),
                               "rel_iqr": round(iqr(rel), 4),
                               "estimates": [round(v, 4) for v in est[name][r]]}
        out[name] = {
            "networks": per_net,
            "worst_rel_dev": max(v["worst_rel_dev"] for v in per_net.values()),
            "mean_rel_iqr": round(float(np.mean([v["rel_iqr"] for v in per_net.values()])), 4),
            "seconds_per_estimate": round(float(np.mean(secs[name])), 2)}
    return out


if __name__ == "__main__":
    raise SystemExit(main())
