"""Does the per-machine timing lock keep two workers' latencies honest?

Measures the batch-1 latency of a fixed reference network (CIFAR ResNet-20, seed 0, profile
``cpu-1t`` with fixed timing settings) in rounds:

1. one worker alone (``single``): the spread of its per-round p50s is the noise floor;
2. two workers at once, each holding :func:`search.distributed.timing_lock` around every round
   (``locked_pair``): their rounds interleave, so each should see what a lone worker sees;
3. two workers at once without the lock (``unlocked_pair``), for contrast: they share the cores.

``within_spread`` is true when each locked worker's median p50 differs from the single worker's
median p50 by at most the single worker's spread (max - min of its round p50s). Workers set up
and run one discarded warm-up round, then start timing together. Usage, from the
repository root: ``.venv/bin/python benchmarks/bench_lock.py``; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
from contextlib import nullcontext
from pathlib import Path

ROUNDS = 5
MODEL = "resnet20"
PROFILE = "cpu-1t"  # one thread per worker: the common multi-worker setting


def _child(rounds: int, lock_dir: str | None) -> list[float]:
    """Measure ``rounds`` p50 latencies (ms) of the reference network in this process."""
    import torch

    from prunebench.harness.measure.latency import measure_latency
    from prunebench.harness.models import create_model
    from prunebench.harness.profiles import TimingSettings, load_profile
    from prunebench.search.distributed import timing_lock

    torch.manual_seed(0)
    model = create_model(MODEL, 10, 3).eval()
    inputs = [torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))]
    timing = TimingSettings(warmup_iters=10, min_samples=30, min_time_s=0.3, max_time_s=0.6,
                            target_rel_ci=0.001)
    profile = dataclasses.replace(load_profile(PROFILE), timing=timing)
    lock = timing_lock(lock_dir) if lock_dir else nullcontext()
    measure_latency(model, inputs, profile, batch_size=1)  # warm-up round, discarded
    print("ready", flush=True)  # start together: imports must not overlap the other's timing
    sys.stdin.readline()
    out = []
    for _ in range(rounds):
        with lock:
            out.append(measure_latency(model, inputs, profile, batch_size=1).p50_ms)
    return out


def _spawn(rounds: int, lock_dir: str | None, n: int) -> list[list[float]]:
    """Run ``n`` child workers at once; each returns its per-round p50s."""
    cmd = [sys.executable, __file__, "--child", "--rounds", str(rounds)]
    if lock_dir:
        cmd += ["--lock-dir", lock_dir]
    procs = [subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for _ in range(n)]
    for p in procs:
        assert p.stdout is not None
        if p.stdout.readline().strip() != "ready":
            raise SystemExit("bench_lock: a worker did not start")
    results = []
    for p in procs:  # release them together
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    for p in procs:
        stdout, _ = p.communicate(timeout=600)
        if p.returncode != 0:
            raise SystemExit(f"bench_lock: a worker failed with exit code {p.returncode}")
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    return results


def main() -> None:
    """Run the three settings and print one JSON object (last line)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=ROUNDS, help=argparse.SUPPRESS)
    parser.add_argument("--lock-dir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.rounds, args.lock_dir)))
        return
    with tempfile.TemporaryDirectory(prefix="bench-lock-") as lock_dir:
        single = _spawn(args.rounds, None, 1)[0]
        locked = _spawn(args.rounds, lock_dir, 2)
        unlocked = _spawn(args.rounds, None, 2)
    single_p50 = statistics.median(single)
    spread = max(single) - min(single)
    locked_p50 = [statistics.median(r) for r in locked]
    result = {
        "model": MODEL, "profile": PROFILE, "batch_size": 1, "rounds": args.rounds,
        "single_p50_ms": round(single_p50, 4), "single_spread_ms": round(spread, 4),
        "single_rounds_ms": [round(v, 4) for v in single],
        "locked_pair_p50_ms": [round(v, 4) for v in locked_p50],
        "locked_pair_rounds_ms": [[round(v, 4) for v in r] for r in locked],
        "unlocked_pair_p50_ms": [round(statistics.median(r), 4) for r in unlocked],
        "load_avg_1m": round(os.getloadavg()[0], 2),  # other load on the machine: noise
        "within_spread": all(abs(v - single_p50) <= spread for v in locked_p50),
        "lock_file": str(Path(lock_dir) / "prunebench-timing.lock"),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
