"""Re-scores run 19's partial searches (gap-aimed levels, before the floor cut of 4a24fca)
against run 18's searches, uniform line and random arm, in one box per seed and budget, with
bench_search's own in-budget filter and hypervolume (validation top-1 vs effective MACs; no
re-timing is needed: MACs are counted).
Run: .venv/bin/python results/reference/bench_search/run19-partial/rescore.py"""
import json
import sys

import pandas as pd

sys.path.insert(0, "benchmarks")
import bench_search as b  # noqa: E402

R = "results/reference/bench_search/"
column = b.COSTS["dynamic"][1]
result = json.load(open(R + "run18/result.json"))["dynamic"]
line = pd.read_csv(R + "run18/dynamic/points/uniform_l1.csv")
for f, seed in (("0.5", 0), ("0.5", 1), ("0.7", 0)):
    name, budget = f"search-b{f}-s{seed}", result[f]["budget"]
    run19 = pd.read_csv(R + f"run19-partial/{name}/trials.csv")
    arms = {"run19": run19[run19["state"] == "COMPLETE"],
            "run18": pd.read_csv(R + f"run18/dynamic/points/{name}.csv"), "line": line,
            "random": pd.read_csv(R + f"run18/dynamic/points/random-s{seed}.csv")}
    print(name, b._volumes({k: b._in_budget(v, column, budget) for k, v in arms.items()},
                           "dynamic"))
