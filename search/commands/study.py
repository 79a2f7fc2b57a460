"""``prunebench study create|status|delete|report``: manage a study in a shared storage.

``create`` takes the arguments of ``prunebench search`` (model, data set, space, profile,
objectives, budgets, sampler; ``--trials`` is the study's total budget) and stores them with the
study, so that ``prunebench worker`` processes can join it from the storage alone
(:mod:`prunebench.search.runs.shared_study`).
"""

from __future__ import annotations

import argparse
import json
import sys

from prunebench.harness.errors import PrunebenchError
from prunebench.search.commands.arguments import (
    add_report_arguments,
    add_search_arguments,
    add_storage_arguments,
    print_report,
    report_options,
    search_values,
)

NAME = "study"
HELP = "create, inspect, delete or report a study in a shared storage (PostgreSQL)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Sub-actions ``create``, ``status``, ``delete``, ``report``."""
    sub = p.add_subparsers(dest="study_action", metavar="ACTION", parser_class=type(p))
    create = sub.add_parser("create", help="create a study for workers (search arguments)")
    add_search_arguments(create)  # --storage/--study are optional there: checked in run
    create.set_defaults(_study_run=run_create)
    status = sub.add_parser("status", help="trials by state, best feasible, workers seen")
    add_storage_arguments(status)
    status.add_argument("--json", action="store_true", help="print one JSON object")
    status.set_defaults(_study_run=run_status)
    delete = sub.add_parser("delete", help="delete a study, its trials and cached measurements")
    add_storage_arguments(delete)
    delete.add_argument("--yes", action="store_true", help="really delete")
    delete.set_defaults(_study_run=run_delete)
    report = sub.add_parser("report", help="`prunebench report` of a study read straight from "
                            "the storage (same options)")
    add_storage_arguments(report)
    add_report_arguments(report)
    report.set_defaults(_study_run=run_report)


def run(args: argparse.Namespace) -> int:
    """Dispatch to the chosen action."""
    action = getattr(args, "_study_run", None)
    if action is None:
        raise PrunebenchError("give an action: prunebench study create|status|delete|report "
                              "--storage URL --study NAME")
    return int(action(args))


def run_create(args: argparse.Namespace) -> int:
    """Validate everything, then create the study; a failure leaves no study behind."""
    from prunebench.search.runs.shared_study import create_worker_study

    if not args.storage or not args.study:
        raise PrunebenchError("study create needs --storage URL and --study NAME, e.g. "
                              "--storage postgresql://USER:PW@HOST/DB --study resnet20-static")
    settings, _ = search_values(args)
    out = create_worker_study(args.storage, args.study, settings)
    if args.json:
        print(json.dumps(out, sort_keys=True))
    else:
        print(f"created study {args.study!r} in {out['storage']}; start workers with "
              f"`prunebench worker --storage URL --study {args.study}`")
    return 0


def run_status(args: argparse.Namespace) -> int:
    """Print the study's status (``--json``: one JSON object)."""
    from prunebench.search.runs.shared_study import study_status

    st = study_status(args.storage, args.study)
    if args.json:
        print(json.dumps(st, sort_keys=True))
        return 0
    c = st["trials"]
    states = ", ".join(f"{k} {v}" for k, v in c.items() if k not in ("total", "feasible"))
    best = st["best_feasible"]["text"] if st["best_feasible"] else "none feasible yet"
    lines = [f"study {st['study']!r} in {st['storage']}",
             f"trials: {c['total']} of budget {st['budget'] or 'unset'} ({states}); "
             f"feasible {c['feasible']}",
             f"best feasible: {best}",
             f"cached measurements: {st['cached_measurements']}",
             f"workers seen: {len(st['workers'])}"]
    lines += [f"  {wid}: {w['trials']} trials, last seen {w['last_seen']}"
              for wid, w in sorted(st["workers"].items())]
    print("\n".join(lines))
    return 0


def run_delete(args: argparse.Namespace) -> int:
    """Delete the study and its cache entries (needs ``--yes``)."""
    from prunebench.search.runs.shared_study import delete_study

    n = delete_study(args.storage, args.study, confirm=args.yes)
    print(f"deleted study {args.study!r} ({n['trials']} trials, {n['cached']} cached "
          "measurements)", file=sys.stderr)
    return 0


def run_report(args: argparse.Namespace) -> int:
    """``prunebench report`` of the study's complete trials, read from the storage.

    Default folder: ``results/study-<name>/report``.
    """
    from prunebench.search.runs.reports import study_report

    out = study_report(args.storage, args.study, out=args.out, **report_options(args))
    return print_report(out, args.json)
