"""What per-layer allocations bought over the uniform line, read from a finished ``bench_search``
run: ``.venv/bin/python benchmarks/allocation_gain.py RUN_DIR [RUN_DIR ...]``.

``bench_search`` judges hypervolume, which a search can raise by spending more trials inside
the budget as well as by finding allocations that are more accurate at the same cost. This
script separates the second: per space and budget, every in-budget trial of the search (its
per-layer trials and its warm start's uniform ones apart) and of random sampling is compared
with the uniform line at the same cost (the space's judged cost: re-timed p50 for the static
space, counted MACs for the dynamic one). The reference is the line's validation top-1 averaged
over the seeds' lines (each seed fine-tunes under its own recipe seed; a run whose line ran
once has one), interpolated linearly in cost between the line's points; a trial outside the
line's cost range is left out. A positive residual is an allocation more accurate than uniform
at its cost. Per group it reports ``n``, the ``median`` and ``mean`` residual in points of
top-1, its interquartile range and the share above the line. Nothing is run or rebuilt: it
reads ``<space>/points/*.csv`` and ``result.json``. The last line is one JSON object, keyed by
run folder.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from bench_search import COSTS, _in_budget, _point_frames, _warm_rows  # benchmarks/ is on the path


def _line(frames: list[pd.DataFrame], column: str) -> pd.DataFrame:
    """The uniform line per configuration: median cost and mean validation top-1 over the
    seeds' lines ``frames``."""
    return (pd.concat(frames).groupby("config_key")
            .agg(cost=(column, "median"), acc=("accuracy_top1", "mean"))
            .sort_values("cost"))


def _summary(residuals: list[float]) -> dict[str, Any]:
    if not residuals:
        return {"n": 0}
    r = 100 * np.asarray(residuals)
    return {"n": len(r), "median": round(float(np.median(r)), 2),
            "mean": round(float(r.mean()), 2),
            "iqr": [round(float(np.percentile(r, 25)), 2), round(float(np.percentile(r, 75)), 2)],
            "share_above": round(float((r > 0).mean()), 2)}


def residuals(cost: pd.Series, acc: pd.Series, line_cost: pd.Series,
              line_acc: pd.Series) -> list[float]:
    """``acc`` minus the line's accuracy interpolated at each ``cost`` (the line sorted by cost;
    points outside its cost range are left out)."""
    cost = cost.astype(float)
    inside = (cost >= line_cost.min()) & (cost <= line_cost.max())
    return list(acc.astype(float)[inside] - np.interp(cost[inside], line_cost, line_acc))


def gains(run: Path) -> dict[str, Any]:
    """Per space and budget of ``run``: residuals against the line per group of trials."""
    result = json.loads((run / "result.json").read_text())
    out: dict[str, Any] = {}
    for kind in (k for k in COSTS if k in result):
        column = COSTS[kind][1]
        for f in (k for k in result[kind] if k.replace(".", "", 1).isdigit()):
            block = result[kind][f]
            budget = float(block["budget"])
            frames = _point_frames(run / kind / "points", f, block["seeds"])
            line = _line([x["uniform_l1"] for x in frames.values()], column)
            groups: dict[str, list[float]] = {"per_layer": [], "warm_start": [], "random": []}
            for x in frames.values():
                warm = _warm_rows(x["search"])
                parts = {"per_layer": x["search"].drop(warm.index), "warm_start": warm,
                         "random": x["random"]}
                for name, frame in parts.items():
                    frame = _in_budget(frame, column, budget)
                    groups[name] += residuals(frame[column], frame["accuracy_top1"],
                                              line["cost"], line["acc"])
            out[f"{kind} {f}x"] = {name: _summary(r) for name, r in groups.items()}
    return out


def main(argv: list[str]) -> int:
    runs = [Path(a) for a in argv]
    if not runs or any(not (r / "result.json").is_file() for r in runs):
        print("usage: allocation_gain.py RUN_DIR [RUN_DIR ...] (each holds a finished "
              "bench_search run's result.json)", file=sys.stderr)
        return 2
    report = {str(r): gains(r) for r in runs}
    for run, blocks in report.items():
        for block, groups in blocks.items():
            shown = ", ".join(f"{n} {g.get('median', '-')} (n {g['n']})" for n, g in
                              groups.items())
            print(f"{run} {block}: median residual vs the line, points of top-1: {shown}")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
