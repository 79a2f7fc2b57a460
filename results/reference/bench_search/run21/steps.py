"""Median attainment over seeds (best in-budget validation top-1 at or under each latency) of
run 21's search, uniform line and random arms, at 0.05 ms steps: the figures docs/benchmarks.md
reads off run21/attainment.png.
Run: .venv/bin/python results/reference/bench_search/run21/steps.py"""
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, "benchmarks")
import bench_search as b  # noqa: E402

RUN = Path("results/reference/bench_search/run21")
column = b.COSTS["static"][1]
result = json.loads((RUN / "result.json").read_text())["static"]
for f in ("0.5", "0.7"):
    budget = result[f]["budget"]
    frames = b._point_frames(RUN / "static" / "points", f, [0, 1, 2]).values()
    for x in np.arange(1.2, budget + 1e-9, 0.05):
        row = {}
        for arm in ("search", "uniform_l1", "random"):
            best = [b._in_budget(fr[arm], column, x)["accuracy_top1"].max() for fr in frames]
            row[arm] = None if all(np.isnan(best)) else round(float(np.nanmedian(best)), 3)
        print(f, f"{x:.2f} ms", row)
