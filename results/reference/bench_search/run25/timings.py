"""Per static search of bench_search runs: how its trials were timed (trial_timing: settled or
full), their median duration (s) and latency CI, against an earlier run's same searches.
Run: .venv/bin/python results/reference/bench_search/run25/timings.py RUN_DIR [RUN_DIR ...]
(the default: run24 and run25 under results/reference/bench_search)"""
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
runs = [Path(a) for a in sys.argv[1:]] or [ROOT / "run24", ROOT / "run25"]
for run in runs:
    print(run.name)
    for f in sorted((run / "static" / "points").glob("search-*.csv")):
        d = pd.read_csv(f)
        kinds = d["trial_timing"].value_counts().to_dict() if "trial_timing" in d else {}
        print(f"  {f.stem}: {len(d)} trials, timing {kinds}, duration median "
              f"{d['duration_s'].median():.1f} s (sum {d['duration_s'].sum() / 60:.1f} min), "
              f"searched latency CI median {d['latency_ci_rel'].median():.3f}")
