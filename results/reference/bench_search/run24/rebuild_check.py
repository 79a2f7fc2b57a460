"""Whether a reused arm's accuracy holds on this machine: rebuild one of run 23's uniform-line
points (seed 0, row 7: cut, fine-tuned under recipe seed 0) and compare its validation top-1
with the one run 23 recorded. ``.venv/bin/python
results/reference/bench_search/run24/rebuild_check.py``."""

import pandas as pd

from prunebench.harness.evaluate import Workload, build_pruned, prepare
from prunebench.harness.measure.accuracy import accuracy
from prunebench.harness.pruning import PruningConfig

prepared = prepare(Workload(model="resnet20", dataset="digits"), progress=False)
row = pd.read_csv("results/reference/bench_search/run23/static/points/uniform_l1-s0.csv").iloc[7]
model = build_pruned(prepared, PruningConfig.from_json(row["config"]), progress=False)
print(f"rebuilt {accuracy(model, prepared.splits.val).top1!r}, run 23 {row['accuracy_top1']!r}")
