"""Do per-layer allocations gain over the uniform line with a longer fine-tune? Read from a
finished ``bench_search`` run and re-trained here:
``.venv/bin/python benchmarks/allocation_epochs.py RUN_DIR [--budget 0.7] [--epochs 6]
[--seeds 0,1,2]``.

``benchmarks/allocation_gain.py`` finds the search's per-layer trials no more accurate than the
uniform cut at equal cost when every trial fine-tunes two epochs (``bench_search``'s
``FINETUNE_EPOCHS``). This script asks whether that is the short fine-tune's doing: per seed, it
takes the static search's in-budget per-layer trials (not its warm start's) at one budget and the
seed's uniform-line points in the same budget, fine-tunes each configuration again for
``--epochs`` epochs from the same base under the seed's recipe seed (as ``bench_search`` seeds
it), and compares each per-layer point's validation top-1 with the seed's line interpolated at
its cost (the run's re-timed p50: latency does not depend on the fine-tuned weights). The same
residual is reported at the run's own fine-tune epochs, from its tables, for the same points
(validation only: the run kept no test top-1 per point).
Test top-1 is reported beside validation (nothing is selected on it here). The residuals are in
points of top-1; the last line is one JSON object with ``run`` (the run's own fine-tune,
``run_epochs``) and ``rebuilt`` (``epochs``), each with ``per_layer_residual_val`` and
``per_layer_residual_test`` (``n``, ``median``, ``mean``, ``iqr``, ``share_above``), and
``seconds``; each seed's rebuilt points go to
``RUN_DIR/allocation_epochs-b<budget>-s<seed>-e<epochs>.csv``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
from allocation_gain import _summary, residuals  # benchmarks/ is on the path
from bench_search import COSTS, _in_budget, _point_frames, _seeded, _warm_rows


def _residuals(points: pd.DataFrame, line: pd.DataFrame, column: str, acc: str) -> list[float]:
    """``points[acc]`` against ``line[acc]`` at each point's cost (:func:`residuals`)."""
    line = line.sort_values(column)
    return residuals(points[column], points[acc], line[column], line[acc])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="allocation_epochs.py", description=__doc__.split(
        "\n\n")[0])
    parser.add_argument("run", type=Path, help="a finished bench_search run's folder")
    parser.add_argument("--budget", default="0.7", help="budget fraction key (default 0.7)")
    parser.add_argument("--epochs", type=int, default=6, help="fine-tune epochs (default 6)")
    parser.add_argument("--seeds", default="0,1,2", help="seeds (default 0,1,2)")
    args = parser.parse_args(argv)
    result_path = args.run / "result.json"
    if not result_path.is_file():
        print(f"allocation_epochs.py: {args.run} holds no result.json; give a finished "
              "bench_search run's folder", file=sys.stderr)
        return 2
    result = json.loads(result_path.read_text())
    if args.budget not in result.get("static", {}):
        print(f"allocation_epochs.py: --budget {args.budget} is not a static budget of that run "
              f"(it has {', '.join(k for k in result.get('static', {}) if k[0].isdigit())})",
              file=sys.stderr)
        return 2
    if args.epochs < 1:
        print(f"allocation_epochs.py: --epochs {args.epochs}: give 1 or more", file=sys.stderr)
        return 2
    ran = result["static"][args.budget]["seeds"]
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        seeds = []
    if not seeds or any(s not in ran for s in seeds):
        print(f"allocation_epochs.py: --seeds {args.seeds}: give seeds of that run, comma-"
              f"separated ({','.join(map(str, ran))})", file=sys.stderr)
        return 2
    from tqdm import tqdm

    from prunebench.harness.evaluate import Workload, build_pruned, prepare
    from prunebench.harness.measure.accuracy import accuracy
    from prunebench.harness.profiles import load_profile
    from prunebench.harness.pruning import PruningConfig

    start = time.perf_counter()
    column = COSTS["static"][1]
    block = result["static"][args.budget]
    budget = float(block["budget"])
    frames = _point_frames(args.run / "static" / "points", args.budget, seeds)
    profile = load_profile(result["profile"])
    prepared = prepare(Workload(model=result["model"], dataset="digits"), progress=False)
    run_epochs = int(result["finetune_epochs_per_static_trial"])
    # "run": the run's own fine-tune (its tables); "rebuilt": fine-tuned here for --epochs
    found: dict[str, dict[str, list[float]]] = {"run": {"val": [], "test": []},
                                                "rebuilt": {"val": [], "test": []}}
    for seed in seeds:
        seeded = _seeded({"prepared": prepared}, seed)["prepared"]
        search = frames[seed]["search"]
        per_layer = _in_budget(search.drop(_warm_rows(search).index), column, budget)
        line = _in_budget(frames[seed]["uniform_l1"], column, budget)
        rows = []
        for name, frame in (("per_layer", per_layer), ("line", line)):
            for _, row in tqdm(list(frame.iterrows()), desc=f"seed {seed} {name}",
                               unit="config"):
                cfg = dataclasses.replace(PruningConfig.from_json(row["config"]),
                                          finetune_epochs=args.epochs)
                model = build_pruned(seeded, cfg, profile=profile, progress=False)
                rows.append({"group": name, column: float(row[column]),
                             "val_run": float(row["accuracy_top1"]),
                             "val": float(accuracy(model, prepared.splits.val).top1),
                             "test": float(accuracy(model, prepared.splits.test).top1)})
        table = pd.DataFrame(rows)
        mine, theirs = table[table.group == "per_layer"], table[table.group == "line"]
        found["run"]["val"] += _residuals(mine, theirs, column, "val_run")
        found["rebuilt"]["val"] += _residuals(mine, theirs, column, "val")
        found["rebuilt"]["test"] += _residuals(mine, theirs, column, "test")
        table.to_csv(args.run / f"allocation_epochs-b{args.budget}-s{seed}-e{args.epochs}.csv",
                     index=False)
    report: dict[str, Any] = {"run_dir": str(args.run), "budget": args.budget, "seeds": seeds,
                              "run_epochs": run_epochs, "epochs": args.epochs}
    for which, got in found.items():
        epochs = run_epochs if which == "run" else args.epochs
        report[which] = {"per_layer_residual_val": _summary(got["val"]),
                         "per_layer_residual_test": _summary(got["test"])}
        print(f"{which} ({epochs} fine-tune epochs): per-layer residual vs the line, "
              f"validation {report[which]['per_layer_residual_val']}, test "
              f"{report[which]['per_layer_residual_test']}")
    report["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
