"""Where run 20's margin over the uniform line comes from: each search re-scored in its run's
box (bench_search's in-budget filter and hypervolume; the box of all four arms' in-budget
points, as the bench draws it) whole, without its threshold-rule trials, and without its
warm-start trials, and the (MACs, val top-1) of its threshold-rule trials.
Run: .venv/bin/python results/reference/bench_search/run20/split.py"""
import json
import sys
from pathlib import Path

sys.path.insert(0, "benchmarks")
import bench_search as b  # noqa: E402

RUN = Path("results/reference/bench_search/run20")
column = b.COSTS["dynamic"][1]
result = json.loads((RUN / "result.json").read_text())["dynamic"]
for f in ("0.5", "0.7"):
    budget = result[f]["budget"]
    for seed, arms in b._point_frames(RUN / "dynamic" / "points", f, [0, 1, 2]).items():
        search = arms["search"]
        rule = search["config"].map(lambda c: json.loads(c)["options"].get("rule"))
        warm = search.index.isin(b._warm_rows(search).index)
        under = {k: b._in_budget(v, column, budget)
                 for k, v in {**arms, "warm_start_only": search[warm]}.items()}
        extra = {f"search, {name}": b._in_budget(search[keep], column, budget)
                 for name, keep in (("no threshold", rule != "threshold"),
                                    ("no warm start", ~warm))}
        print(f, seed, b._volumes(under, "dynamic", extra))
        t = search[rule == "threshold"]
        print("   threshold-rule trials:", [(round(m / 1e6, 2), round(a, 3))
                                            for m, a in zip(t["macs"], t["accuracy_top1"])])
