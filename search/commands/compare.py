"""``prunebench compare`` (several runs on common axes) and ``prunebench report`` (one run).

Both write a report folder (report.md, self-contained report.html, plots, points/fronts CSVs,
fronts.tex, summary.json). Latencies from different profiles, machine fingerprints or batch
sizes, and energies from different energy methods, are refused on one axis unless
``--allow-mixed`` is given; the error names the runs and the values.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from prunebench.harness.errors import PrunebenchError


def _budgets(text: str | None) -> list[float] | None:
    if not text:
        return None
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise PrunebenchError(f"--budget-ms {text!r} is not a number or comma-separated list of "
                              "numbers; give e.g. --budget-ms 4 or --budget-ms 2,4") from None


def _formats(text: str) -> tuple[str, ...]:
    formats = tuple(f.strip().lower() for f in text.split(",") if f.strip())
    bad = [f for f in formats if f not in ("png", "svg", "pdf")]
    if bad or "png" not in formats:
        raise PrunebenchError(f"--formats {text!r}: use png, svg and/or pdf, with png included "
                              "(the HTML report embeds it); e.g. --formats png,pdf")
    return formats


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=None,
                   help="report folder (default: results/compare-<timestamp> or <run>/report)")
    p.add_argument("--objectives", default="accuracy,latency_p50",
                   help="comma-separated objectives for fronts and hypervolumes (short names "
                        "accuracy, latency_p50, latency_p90, energy, macs, params, memory, or "
                        "COLUMN:min / COLUMN:max); default: accuracy,latency_p50")
    p.add_argument("--budget-ms", default=None,
                   help="latency budget(s) in ms, comma-separated (default: the runs' budgets, "
                        "else 50%% and 75%% of the dense p50 latency)")
    p.add_argument("--allow-mixed", action="store_true",
                   help="plot latencies from different profiles/machines or energies from "
                        "different energy methods on one axis anyway (marked in the report)")
    p.add_argument("--split", default="auto", choices=("auto", "test", "val"),
                   help="which accuracy split to plot (default auto: the only one, else test)")
    p.add_argument("--log-latency", action="store_true", help="log-scale latency axis")
    p.add_argument("--formats", default="png,svg,pdf",
                   help="plot file formats, comma-separated (default: png,svg,pdf)")
    p.add_argument("--json", action="store_true", help="print one JSON summary on stdout")


def add_compare_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``prunebench compare``."""
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR",
                   help="run folders written by `prunebench baseline` / `prunebench search`")
    _add_common(p)


def add_report_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``prunebench report``."""
    p.add_argument("run", metavar="RUN_DIR|STORAGE_URL",
                   help="one run folder, or an Optuna storage URL (postgresql://..., "
                        "sqlite:///...) read directly with --study")
    p.add_argument("--study", help="study name, when RUN_DIR is a storage URL")
    _add_common(p)


def _write(runs: list, out: Path, args: argparse.Namespace) -> int:
    from prunebench.search.report import write_report

    summary = write_report(runs, out, objectives=args.objectives,
                           budgets_ms=_budgets(args.budget_ms), allow_mixed=args.allow_mixed,
                           split=args.split,
                           log_latency=args.log_latency, formats=_formats(args.formats))
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    else:
        print(f"report written to {out / 'report.html'} (and report.md, plots/, CSVs, fronts.tex)")
        for warning in summary["warnings"]:
            print(f"warning: {warning}")
    return 0


def run_compare(args: argparse.Namespace) -> int:
    """Merge several runs on common axes and write one comparison report."""
    from prunebench.search.runs.folders import load_run

    runs = [load_run(p) for p in args.runs]
    out = args.out or Path("results") / f"compare-{time.strftime('%Y%m%d-%H%M%S')}"
    return _write(runs, out, args)


def run_report(args: argparse.Namespace) -> int:
    """Write the report of one run (into ``<run>/report`` unless ``--out`` is given)."""
    if "://" in args.run:
        from prunebench.search.distributed import storage_run

        if not args.study:
            raise PrunebenchError(f"report from storage {args.run.split('://')[0]}://... needs "
                                  "--study NAME (see `prunebench study status`)")
        out = args.out or Path("results") / f"study-{args.study}" / "report"
        return _write([storage_run(args.run, args.study)], out, args)
    from prunebench.search.runs.folders import load_run

    run = load_run(Path(args.run))
    return _write([run], args.out or Path(args.run) / "report", args)


COMMANDS = [
    ("compare", "merge runs (searches, baseline sweeps, dense) into one report with Pareto "
                "fronts, hypervolumes and dynamic-vs-static dominance", add_compare_arguments,
     run_compare),
    ("report", "write the report (Markdown, HTML, plots, CSV, LaTeX) of one run folder",
     add_report_arguments, run_report),
]
