"""``prunebench search``: Optuna search for pruning configurations under hardware budgets.

The run and the folder it writes are :mod:`prunebench.search.runs.search_run`'s (``config.json``,
``dense.json``, ``study.journal``, ``trials.csv``, ``remeasured.csv``, ``front.csv``,
``summary.json``); this command parses the options, runs it and prints its summary.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from prunebench.harness.errors import PrunebenchError
from prunebench.search.commands.arguments import (
    add_runtime_arguments,
    add_search_arguments,
    search_values,
)

NAME = "search"
HELP = "search pruning configurations with Optuna under latency/energy/MACs/params budgets"
# after the trials line, per summary["trial_timing"]
_TIMING_NOTES = {
    "light": "  (light trial timing: no objective or budget reads latency; the front is "
             "re-measured strictly)",
    "settled": "  (settled trial timing: a trial's timing stops once its side of the latency "
               "budget is known; the front is re-measured strictly)",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``prunebench search``."""
    add_search_arguments(p)
    add_runtime_arguments(p)  # where this process trains (a study's workers choose their own)


def run(args: argparse.Namespace) -> int:
    """Run (or resume) a search and write its run folder; returns the exit code."""
    from prunebench.search.runs.search_run import execute_search

    settings, record = search_values(args)
    result = execute_search(settings, record=record, progress=not args.quiet)
    _print(result.summary, args.json)
    if result.error:  # after the folder is written and the summary printed
        raise PrunebenchError(result.error)
    return 130 if result.interrupted else 0


def _print(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary, sort_keys=True, default=str))
        return
    c = summary["counts"]
    lines = [f"run folder: {summary['run_dir']}  (study {summary['study']!r})",
             f"trials: {c['total']} ({c['complete']} complete, {c['fail']} failed, "
             f"{c['pruned']} pruned, {c['feasible']} feasible); this run: "
             f"{summary['trials_this_run']} at {summary['trials_per_minute']:.2f} trials/min"
             + _TIMING_NOTES.get(summary.get("trial_timing"), ""),
             f"best feasible: {summary['best']}",
             f"front: {summary['front_size']} configs re-measured feasible"
             + (f"; budget hit rate {summary['budget_hit_rate']:.0%} of "
                f"{summary['n_reported_feasible']}" if summary["budget_hit_rate"] is not None
                else "")]
    errors = {k: v for k, v in (summary.get("cost_model_error_median") or {}).items()
              if v is not None}
    if errors:
        lines.append("cost model median |error|: " + ", ".join(
            f"{k} {v:.1%}" for k, v in sorted(errors.items()))
            + ("  (proposals projected onto the budget)" if summary.get("budget_projection")
               else ""))
    print("\n".join(lines), file=sys.stdout)
