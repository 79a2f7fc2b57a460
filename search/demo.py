"""``make demo`` (``python -m prunebench.search.demo``): the main job on the embedded digits data.

Stages, each through the real ``prunebench`` CLI so the demo exercises what users run:

1. train the dense ResNet-20 on digits (or load it from the checkpoint cache);
2. fine-tune it with AntiDote's targeted dropout for dynamic pruning (cached too);
3. a uniform L1 filter-pruning sweep with fine-tuning, measured on ``cpu-1t``;
4. an Optuna search of per-layer static ratios under a latency budget;
5. an Optuna search of per-layer AntiDote keep-ratios under the same budget;
6. ``prunebench compare`` of all of them: Pareto plots, tables and an HTML report.

The latency budget is a fraction of the dense network's p50 measured in stage 3 on this machine,
so the demo asks for the same relative saving on any CPU. Both searches time in the frame of that
p50 (``--latency-anchor-ms``): a trial's p50 is it divided by the trial's speedup over dense from
interleaved rounds, so the verdict does not depend on a fast or slow minute of a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from prunebench.search.cli import main as cli

MODEL, DATASET, PROFILE = "resnet20", "digits", "cpu-1t"


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options of the demo."""
    p = argparse.ArgumentParser(prog="python -m prunebench.search.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=12,
                   help="Optuna trials per search (default 12; fewer is faster)")
    p.add_argument("--budget-fraction", type=float, default=0.8,
                   help="latency budget as a fraction of the dense p50 (default 0.8)")
    p.add_argument("--ratios", default="0.3,0.5,0.7", help="uniform L1 sweep ratios")
    p.add_argument("--finetune-epochs", type=int, default=1,
                   help="fine-tune epochs after each static cut (default 1, lr rewound)")
    p.add_argument("--dropout-epochs", type=int, default=10,
                   help="targeted-dropout fine-tune epochs for the dynamic network (default 10)")
    p.add_argument("--out", type=Path, default=None,
                   help="run folder (default results/demo-<timestamp>)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def _run(stage: str, argv: list[str], search_dir: Path | None = None) -> bool:
    """Run one stage; False when a search stage met no budget (and the demo goes on)."""
    print(f"\n=== {stage}\n$ prunebench {' '.join(argv)}", flush=True)
    code = cli(argv)
    if code == 2 and search_dir is not None and _unmet(search_dir):
        # The search ran and wrote its folder, but no trial met the budget (its message is
        # above). That is a result to show in the comparison, not a reason to stop the demo.
        print(f"demo: {stage}: no configuration met the budget on this machine just now; "
              "continuing, the report shows what was measured", flush=True)
        return False
    if code != 0:
        raise SystemExit(code)
    return True


def _unmet(search_dir: Path) -> bool:
    """Whether ``search_dir`` is a finished search whose only failure is an unmet budget."""
    try:
        summary = json.loads((search_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return False
    return bool(summary.get("error")) and (search_dir / "trials.csv").exists()


def main(argv: Sequence[str] | None = None) -> int:
    """Run every stage; returns the exit code (2 on a user error, as the CLI)."""
    args = parse_args(argv)
    start = time.perf_counter()
    out = args.out or Path("results") / f"demo-{datetime.now():%Y%m%d-%H%M%S}"
    out.mkdir(parents=True, exist_ok=True)
    quiet = ["--quiet"] if args.quiet else []
    data = ["--model", MODEL, "--dataset", DATASET]
    try:
        _run("1. dense base network (cached after the first run)", ["train", *data, *quiet])
        ckpt = Path("results") / "demo-cache" / f"{MODEL}-{DATASET}-antidote_fast-td-kd.pt"
        if not ckpt.exists():
            _run("2. targeted-dropout fine-tuning (calibrated order, distilled from dense)",
                 ["finetune", *data, "--method", "antidote_fast", "--targeted-dropout",
                  "gamma=0.75,alpha=1,sample=1", "--kd", "0.7", "--epochs",
                  str(args.dropout_epochs), "--out", str(ckpt), *quiet])
        else:
            print(f"\n=== 2. targeted-dropout checkpoint reused: {ckpt}")
        sweep = out / "l1-uniform"
        _run("3. uniform L1 sweep", ["baseline", *data, "--method", "l1", "--ratios",
                                     args.ratios, "--profile", PROFILE, "--finetune-epochs",
                                     str(args.finetune_epochs), "--out", str(sweep), *quiet])
        dense = json.loads((sweep / "dense.json").read_text())
        budget = round(args.budget_fraction * float(dense["latency_p50_ms"]), 3)
        print(f"\nlatency budget: {budget} ms = {args.budget_fraction:g} x dense p50 "
              f"{dense['latency_p50_ms']:.3f} ms on {PROFILE}")
        # both searches time in the frame of the sweep's dense p50 (the budget's base): each
        # trial's p50 is that / its interleaved speedup, so a slow minute cannot move the verdict
        common = ["--profile", PROFILE, "--latency-budget-ms", str(budget), "--latency-anchor-ms",
                  str(dense["latency_p50_ms"]), "--trials", str(args.trials), *quiet]
        met = _run("4. static search (per-layer L1 ratios)",
             ["search", *data, "--space", "static", "--method", "l1", "--finetune-epochs",
              str(args.finetune_epochs), "--out", str(out / "search-static"), *common],
             search_dir=out / "search-static")
        met &= _run("5. dynamic search (per-layer AntiDote keep-ratios, fast execution)",
             ["search", *data, "--space", "dynamic", "--method", "antidote_fast", "--exec",
              "fast", "--checkpoint", str(ckpt), "--out", str(out / "search-dynamic"),
              *common], search_dir=out / "search-dynamic")
        # a search with no feasible configuration has validation accuracies only (nothing was
        # re-measured on the test split), so the comparison must be told to mix the splits
        mixed = [] if met else ["--allow-mixed"]
        if mixed:
            print("\ndemo: comparing with --allow-mixed: a search without a feasible "
                  "configuration has validation accuracies only", flush=True)
        _run("6. compare", ["compare", str(sweep), str(out / "search-static"),
                            str(out / "search-dynamic"), "--budget-ms", str(budget),
                            "--out", str(out / "report"), *mixed])
    except SystemExit as exc:
        print(f"demo: stopped at a failing stage (exit {exc.code}); folders so far are in {out}",
              file=sys.stderr)
        return int(exc.code or 2)
    print(f"\ndemo finished in {time.perf_counter() - start:.0f} s on {_cores()} cores")
    print(f"report: {out / 'report' / 'report.html'} (and report.md, PNG/SVG/PDF plots)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
