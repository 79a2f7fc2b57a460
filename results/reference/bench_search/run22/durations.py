"""Trial durations (Optuna's duration_s of each complete trial) per space and arm kind of a
bench_search run folder: the run 22 section of docs/benchmarks.md compares run 22's (dynamic
trials timed light) with run 20's and run 21's (full timing).
Run: .venv/bin/python results/reference/bench_search/run22/durations.py [RUN_DIR ...]"""
import statistics
import sys
from pathlib import Path

import pandas as pd

for run in sys.argv[1:] or ["results/reference/bench_search/run22"]:
    for space in ("static", "dynamic"):
        by_kind: dict[str, list[float]] = {}
        for trials in sorted(Path(run, space).glob("*/trials.csv")):
            frame = pd.read_csv(trials)
            done = frame.loc[frame["state"] == "COMPLETE", "duration_s"]
            by_kind.setdefault(trials.parent.name.split("-")[0], []).extend(done.tolist())
        for kind, secs in by_kind.items():
            median = statistics.median(secs)
            print(f"{run} {space} {kind}: {len(secs)} trials, median {median:.1f} s"
                  f" (range {min(secs):.1f}-{max(secs):.1f}), {sum(secs) / 60:.1f} min in all")
