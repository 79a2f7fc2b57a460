"""``prunebench compare`` (several runs on common axes) and ``prunebench report`` (one run).

Both write a report folder (report.md, self-contained report.html, plots with caption files,
points/fronts CSVs, fronts.tex, methods.bib, summary.json) through
:mod:`prunebench.search.runs.reports`. Latencies from different profiles, engines, machine
fingerprints or batch sizes, and energies from different energy methods, are refused on one axis
unless ``--allow-mixed`` is given; the error names the runs and the values. Runs scored on
different splits, searches with nothing under budget and different latency anchors are shown
and labelled (warnings printed), or refused with ``--strict``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from prunebench.search.commands.arguments import (
    add_report_arguments,
    print_report,
    report_options,
)


def add_compare_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``prunebench compare``."""
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR",
                   help="run folders written by `prunebench baseline` / `prunebench search`")
    add_report_arguments(p)


def add_run_report_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``prunebench report``."""
    p.add_argument("run", metavar="RUN_DIR|STORAGE_URL",
                   help="one run folder, or an Optuna storage URL (postgresql://..., "
                        "sqlite:///...) read directly with --study")
    p.add_argument("--study", help="study name, when RUN_DIR is a storage URL")
    add_report_arguments(p)


def run_compare(args: argparse.Namespace) -> int:
    """Merge several runs on common axes and write one comparison report."""
    from prunebench.search.runs.reports import compare

    out = compare(args.runs, out=args.out, **report_options(args))
    return print_report(out, args.json)


def run_report(args: argparse.Namespace) -> int:
    """Write the report of one run (into ``<run>/report`` unless ``--out`` is given)."""
    from prunebench.search.runs.reports import report

    out = report(args.run, study=args.study, out=args.out, **report_options(args))
    return print_report(out, args.json)


COMMANDS = [
    ("compare", "merge runs (searches, baseline sweeps, dense) into one report with Pareto "
                "fronts, hypervolumes and dynamic-vs-static dominance", add_compare_arguments,
     run_compare),
    ("report", "write the report (Markdown, HTML, plots, CSV, LaTeX) of one run folder",
     add_run_report_arguments, run_report),
]
