"""Phases of a bench_search run folder: per arm folder, the first trial's start and the last
trial's end (Optuna's journal), in order, with the gap before each (work outside trials:
building, dense timing, sensitivity probes), and the folder's points/ tables' write time.
Run: .venv/bin/python results/reference/bench_search/run23/phases.py RUN_DIR (the points
tables' write time only where the folder kept its modification times: not in a git copy)"""
import datetime as dt
import json
import sys
from pathlib import Path

run = Path(sys.argv[1])
spans = []
for journal in run.glob("*/*/study.journal"):
    times = []
    for line in journal.read_text().splitlines():
        entry = json.loads(line)
        times += [dt.datetime.fromisoformat(entry[k]) for k in ("datetime_start",
                                                                "datetime_complete")
                  if entry.get(k)]
    spans.append((min(times), max(times), journal.parent.relative_to(run)))
last = None
for start, end, name in sorted(spans):
    gap = f" (gap {(start - last).total_seconds():.0f} s)" if last else ""
    print(f"{name}: {start:%H:%M:%S}-{end:%H:%M:%S}, {(end - start).total_seconds():.0f} s{gap}")
    last = end
for points in sorted(run.glob("*/points")):
    newest = max(p.stat().st_mtime for p in points.iterdir())
    print(f"{points.relative_to(run)} written {dt.datetime.fromtimestamp(newest):%H:%M:%S}")
