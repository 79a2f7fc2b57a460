"""Where run 20's margin over the uniform line comes from: each search re-scored in its run's
box (bench_search's in-budget filter and hypervolume; the box of all four arms' in-budget
points, as the bench draws it) whole, without its threshold-rule trials, and without its
warm-start trials. Run: .venv/bin/python results/reference/bench_search/run20/split.py"""
import json
import sys

import pandas as pd

sys.path.insert(0, "benchmarks")
import bench_search as b  # noqa: E402
from prunebench.search.pareto import OBJECTIVES, hypervolume, ideal_point, reference_point  # noqa: E402

_, column, objective = b.COSTS["dynamic"]
objs = [OBJECTIVES["accuracy"], OBJECTIVES[objective]]
P = "results/reference/bench_search/run20/dynamic/points/"
result = json.load(open("results/reference/bench_search/run20/result.json"))["dynamic"]
line = pd.read_csv(P + "uniform_l1.csv")
for f in ("0.5", "0.7"):
    bud = result[f]["budget"]
    for seed in (0, 1, 2):
        search = pd.read_csv(P + f"search-b{f}-s{seed}.csv")
        rule = search["config"].map(lambda c: json.loads(c)["options"].get("rule"))
        warm = search["run_kind"].eq("search") & search["prunebench_warm_start_t"].notna()
        arms = {"search": search, "warm_start_only": search[warm], "uniform_l1": line,
                "random": pd.read_csv(P + f"random-s{seed}.csv")}
        under = {k: b._in_budget(v, column, bud) for k, v in arms.items()}
        ne = [u for u in under.values() if len(u)]
        ref, ideal = reference_point(ne, objs), ideal_point(ne, objs)
        hv = {k: round(hypervolume(u, objs, ref, ideal), 4) for k, u in under.items()}
        for name, keep in (("no threshold", rule != "threshold"), ("no warm start", ~warm)):
            hv[f"search, {name}"] = round(hypervolume(
                b._in_budget(search[keep], column, bud), objs, ref, ideal), 4)
        print(f, seed, hv)
