"""The in-budget point of best validation top-1 that bench_search judges (its ``_best_row`` of
``_in_budget``) in run 22's static uniform line and searches, and how many points tie it: the
figures the run 22 section of docs/benchmarks.md compares with result.json's best feasible test
accuracy.
Run: .venv/bin/python results/reference/bench_search/run22/best_points.py"""
import json
import sys
from pathlib import Path

sys.path.insert(0, "benchmarks")
import bench_search as b  # noqa: E402

RUN = Path("results/reference/bench_search/run22")
column = b.COSTS["static"][1]
result = json.loads((RUN / "result.json").read_text())["static"]
for f in ("0.5", "0.7"):
    frames = b._point_frames(RUN / "static" / "points", f, [0, 1, 2])
    arms = [("uniform_l1", frames[0]["uniform_l1"])]
    arms += [(f"search-s{s}", frames[s]["search"]) for s in (0, 1, 2)]
    for name, points in arms:
        inside = b._in_budget(points, column, result[f]["budget"])
        top = b._best_row(inside, column)["accuracy_top1"]
        ties = (inside["accuracy_top1"] == top).sum()
        print(f"{f}x {name}: best validation top-1 {top:.2%} ({ties} point(s),"
              f" {len(inside)} in budget, {points['accuracy_n'].iloc[0]} images)")
