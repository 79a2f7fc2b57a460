"""Fine-tuning's luck on the static line of a bench_search run whose seeds fine-tune with their
own recipe seeds (``finetune_seeded``): per uniform ratio, the validation top-1 of the same
configuration under each seed's fine-tune, and its spread (max - min) over the seeds.
Run: .venv/bin/python results/reference/bench_search/run23/seed_noise.py [RUN_DIR]"""
import json
import statistics
import sys
from pathlib import Path

import pandas as pd

run = Path(sys.argv[1] if len(sys.argv) > 1 else "results/reference/bench_search/run23")
points = run / "static" / "points"
lines = {int(p.stem.split("-s")[1]): pd.read_csv(p) for p in sorted(points.glob("uniform_l1-s*"))}
ratio = {s: [max(json.loads(c)["ratios"].values()) for c in f["config"]]
         for s, f in lines.items()}
first = next(iter(ratio.values()))
if any(r != first for r in ratio.values()):
    raise SystemExit("the seeds' lines are not the same ratios")
spreads = []
for i, r in enumerate(first):
    accs = [float(f["accuracy_top1"].iloc[i]) for f in lines.values()]
    spreads.append(max(accs) - min(accs))
    print(f"ratio {r:.2f}: val top-1 " + " / ".join(f"{a:.2%}" for a in accs)
          + f" (spread {spreads[-1]:.2%})")
print(f"spread over seeds, median {statistics.median(spreads):.2%}, max {max(spreads):.2%}, "
      f"{len(lines)} seeds x {len(first)} ratios; one validation image is {1 / 359:.2%}")
