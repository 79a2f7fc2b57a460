"""Best in-budget validation top-1 (re-timed latency p50 at or under the budget) of run 22's
static uniform line and searches, and how many points reach it: the figures the run 22 section of
docs/benchmarks.md compares with the best feasible test accuracy in result.json.
Run: .venv/bin/python results/reference/bench_search/run22/best_points.py"""
import json
from pathlib import Path

import pandas as pd

RUN = Path("results/reference/bench_search/run22")
result = json.loads((RUN / "result.json").read_text())["static"]
for f in ("0.5", "0.7"):
    budget = result[f]["budget"]
    for name in ["uniform_l1"] + [f"search-b{f}-s{s}" for s in range(3)]:
        points = pd.read_csv(RUN / "static" / "points" / f"{name}.csv")
        inside = points[points["latency_p50_ms"] <= budget]
        top = inside["accuracy_top1"].max()
        at_top = (inside["accuracy_top1"] == top).sum()
        print(f"{f}x {name}: best validation top-1 {top:.2%} ({at_top} point(s),"
              f" {len(inside)} in budget, {points['accuracy_n'].iloc[0]} images)")
