"""Three readings of a bench_search run's static points, quoted in docs/benchmarks.md (run 26)
and the session's note: the search trials' re-timed / searched p50 (median, 95th percentile,
max); per seed, how many search trials and line points have a re-timed p50 in [LO, HI] ms at the
0.7x budget; and how many distinct configs the re-time pass timed, and how many lie above the
largest static budget. Run: .venv/bin/python results/reference/bench_search/run26/checks.py
RUN_DIR [LO HI] (default 1.0 1.34 ms; RUN_DIR holds result.json and static/points)"""
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

run = Path(sys.argv[1])
lo, hi = (float(sys.argv[2]), float(sys.argv[3])) if len(sys.argv) > 3 else (1.0, 1.34)
points = run / "static" / "points"
budgets = {f: b["budget"] for f, b in json.loads((run / "result.json").read_text())["static"]
           .items() if f[0].isdigit()}
ratio = np.concatenate([(d["latency_p50_ms"] / d["searched_latency_p50_ms"]).to_numpy()
                        for d in map(pd.read_csv, sorted(points.glob("search-*.csv")))])
print(f"re-timed / searched p50, {len(ratio)} search trials: median {np.median(ratio):.3f}, "
      f"95th percentile {np.quantile(ratio, 0.95):.3f}, max {ratio.max():.3f}")
for seed in (0, 1, 2):
    def count(name: str) -> int:
        p50 = pd.read_csv(points / name)["latency_p50_ms"]
        return int(p50.between(lo, hi).sum())
    print(f"seed {seed}, {lo}-{hi} ms: search-b0.7 {count(f'search-b0.7-s{seed}.csv')} trials, "
          f"line {count(f'uniform_l1-s{seed}.csv')} points")
every = pd.concat(map(pd.read_csv, sorted(points.glob("*.csv")))).drop_duplicates("config_key")
top = max(budgets.values())
print(f"{len(every)} distinct configs, {(every['latency_p50_ms'] > top).sum()} above the "
      f"largest budget ({top} ms)")
