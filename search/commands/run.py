"""``prunebench run EXPERIMENT.toml``: a whole experiment from one file (see
:mod:`prunebench.search.experiment` for the file and :mod:`prunebench.search.runs.experiment_run`
for the run folder)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

NAME = "run"
HELP = ("run an experiment file: train or reuse the base, time dense once, run every arm "
        "(sweeps, static/dynamic/hybrid searches) in that frame under one budget, and write one "
        "report; a re-run continues where it stopped")

_EXAMPLE = """\
example (experiments/demo.toml is what `make demo` runs):

  name = "demo"
  model = "resnet20"
  dataset = "digits"
  profile = "cpu-1t"
  budget = "0.8x dense"        # or "1.8 ms"

  [[arms]]
  name = "l1-uniform"
  kind = "sweep"               # prunebench baseline
  method = "l1"
  ratios = [0.3, 0.5, 0.7]
  finetune_epochs = 1

  [[arms]]
  name = "search-static"
  kind = "search"              # prunebench search; keys are its options, _ for -
  space = "static"
  method = "l1"
  trials = 8
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``prunebench run``."""
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = _EXAMPLE
    p.add_argument("experiment", type=Path, metavar="EXPERIMENT.toml",
                   help="the experiment file (validated whole before any work)")
    p.add_argument("--out", type=Path, default=None,
                   help="run folder (default results/<name>); an existing one continues")
    p.add_argument("--check", action="store_true",
                   help="validate the file and print the resolved experiment, run nothing")
    p.add_argument("--json", action="store_true", help="print one JSON summary on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    """Entry of ``prunebench run``."""
    import contextlib
    import sys

    from prunebench.search.experiment import load_experiment
    from prunebench.search.runs.experiment_run import StageFailed, run_experiment

    exp = load_experiment(args.experiment)
    if args.check:
        print(json.dumps(exp.to_dict(), indent=2))
        return 0
    log = sys.stderr if args.json else sys.stdout
    try:
        with contextlib.redirect_stdout(log) if args.json else contextlib.nullcontext():
            result = run_experiment(exp, args.out, progress=not args.quiet,
                                    echo=lambda line: print(line, file=log, flush=True))
    except StageFailed as exc:
        print(f"prunebench: {exc}; everything so far is in {args.out or 'results/' + exp.name}"
              " and a re-run continues from there", file=sys.stderr)
        return exc.code
    summary = {"run_dir": str(result.run_dir), "seconds": round(result.seconds, 1),
               "reports": {k: str(v) for k, v in result.reports.items()},
               "profiles": {k: {"dense_p50_ms": v["dense_p50_ms"], "budget_ms": v["budget_ms"]}
                            for k, v in result.resolved["profiles"].items()}}
    if args.json:
        print(json.dumps(summary, sort_keys=True))
        return 0
    print(f"\nexperiment {exp.name} finished in {result.seconds:.0f} s")
    for profile, report in result.reports.items():
        print(f"report ({profile}): {report / 'report.html'} (and report.md, figures)")
    return 0
