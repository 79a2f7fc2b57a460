"""Where each search of a bench_search run aimed its trials: per search, how many trials were
aimed (``prunebench_gap_aim``), the most aims any one gap took and the longest run of aims in a
row into one gap. ``.venv/bin/python results/reference/bench_search/run24/aims.py [RUN_DIR]``
(default: this folder)."""

import ast
import sys
from collections import Counter
from pathlib import Path

import pandas as pd

run = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent
for path in sorted(run.glob("static/search-b*/trials.csv")):
    frame = pd.read_csv(path)
    if "prunebench_gap_aim" not in frame:
        print(f"{path.parent.name}: no trial aimed")
        continue
    aims = [ast.literal_eval(a) for a in frame["prunebench_gap_aim"].dropna()]
    gaps = [(round(a.get("start", a["low"]), 6), round(a["high"], 6)) for a in aims]
    longest = run_length = 1
    for a, b in zip(gaps, gaps[1:], strict=False):
        run_length = run_length + 1 if a == b else 1
        longest = max(longest, run_length)
    print(f"{path.parent.name}: {len(gaps)} aimed, at most {max(Counter(gaps).values())} "
          f"into one gap, {longest} in a row")
