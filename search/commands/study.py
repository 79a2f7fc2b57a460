"""``prunebench study create|status|delete|report``: manage a study in a shared storage.

``create`` takes the arguments of ``prunebench search`` (model, data set, space, profile,
objectives, budgets, sampler; ``--trials`` is the study's total budget) and stores them with the
study, so that ``prunebench worker`` processes can join it from the storage alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from prunebench.harness.errors import PrunebenchError
from prunebench.search.commands.worker import add_storage_arguments

NAME = "study"
HELP = "create, inspect, delete or report a study in a shared storage (PostgreSQL)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Sub-actions ``create``, ``status``, ``delete``, ``report``."""
    from prunebench.search.commands import compare as compare_cmd
    from prunebench.search.commands import search as search_cmd

    sub = p.add_subparsers(dest="study_action", metavar="ACTION", parser_class=type(p))
    create = sub.add_parser("create", help="create a study for workers (search arguments)")
    search_cmd.add_arguments(create)  # --storage/--study are optional there: checked in run
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
    compare_cmd._add_common(report)
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
    import optuna

    from prunebench.harness.datasets import DATASETS
    from prunebench.harness.models import MODELS
    from prunebench.harness.profiles import load_profile
    from prunebench.search.cache import ensure_table
    from prunebench.search.commands.search import build_spec, given_anchor
    from prunebench.search.distributed import open_storage, redact
    from prunebench.search.objective import ANCHOR_ATTR, SPEC_ATTR
    from prunebench.search.study import SAMPLERS, make_pruner, make_sampler
    from prunebench.search.workers import BUDGET_ATTR, SAMPLER_ATTR

    if not args.storage or not args.study:
        raise PrunebenchError("study create needs --storage URL and --study NAME, e.g. "
                              "--storage postgresql://USER:PW@HOST/DB --study resnet20-static")
    if args.sampler not in SAMPLERS:
        raise PrunebenchError(f"unknown sampler {args.sampler!r}; choose one of "
                              f"{', '.join(SAMPLERS)}")
    if args.trials is not None and args.trials < 1:
        raise PrunebenchError(f"--trials {args.trials} must be at least 1 (the study's budget)")
    spec = build_spec(args)
    anchor = given_anchor(args, spec)  # else the first worker times dense and sets it
    MODELS.get(spec.model)
    DATASETS.get(spec.dataset)
    load_profile(spec.profile)
    storage = open_storage(args.storage)
    if args.study in optuna.get_all_study_names(storage):
        raise PrunebenchError(f"study {args.study!r} already exists in {redact(args.storage)!r}; "
                              "join it with `prunebench worker` or remove it with `prunebench "
                              "study delete`")
    study = None
    try:
        study = optuna.create_study(
            storage=storage, study_name=args.study, directions=spec.directions,
            sampler=make_sampler(args.sampler, args.seed),
            pruner=make_pruner(len(spec.objectives), spec.space.finetune_epochs))
        study.set_user_attr(SPEC_ATTR, spec.to_dict())
        study.set_user_attr(SAMPLER_ATTR, args.sampler)
        if args.trials is not None:
            study.set_user_attr(BUDGET_ATTR, int(args.trials))
        if anchor is not None:
            study.set_user_attr(ANCHOR_ATTR, anchor)
        ensure_table(storage)
    except BaseException:
        if study is not None:
            optuna.delete_study(study_name=args.study, storage=storage)
        raise
    out = {"study": args.study, "storage": redact(args.storage), "budget": args.trials,
           "spec": spec.to_dict()}
    if args.json:
        print(json.dumps(out, sort_keys=True))
    else:
        print(f"created study {args.study!r} in {redact(args.storage)}; start workers with "
              f"`prunebench worker --storage URL --study {args.study}`")
    return 0


def status_of(storage_url: str, study_name: str) -> dict[str, Any]:
    """Trials by state, best feasible trial, workers seen and cache size, as one dict."""
    from prunebench.search.cache import MeasurementCache
    from prunebench.search.distributed import load_study, open_storage, redact
    from prunebench.search.objective import SPEC_ATTR, SearchSpec
    from prunebench.search.study import best_feasible, describe_trial, trial_summary
    from prunebench.search.workers import BUDGET_ATTR

    storage = open_storage(storage_url)
    study = load_study(storage, study_name)
    spec = study.user_attrs.get(SPEC_ATTR)
    objectives = SearchSpec.from_dict(spec).objectives if spec else ()
    workers: dict[str, dict[str, Any]] = {}
    for t in study.get_trials(deepcopy=False):
        wid = t.user_attrs.get("worker_id")
        if wid is None:
            continue
        w = workers.setdefault(wid, {"trials": 0, "last_seen": None})
        w["trials"] += 1
        seen = t.datetime_complete or t.datetime_start
        if seen and (w["last_seen"] is None or seen > w["last_seen"]):
            w["last_seen"] = seen
    best = best_feasible(study, objectives) if objectives else None
    return {
        "study": study_name, "storage": redact(storage_url),
        "objectives": list(objectives), "budget": study.user_attrs.get(BUDGET_ATTR),
        "trials": trial_summary(study),
        "best_feasible": None if best is None else {
            "trial": best.number, "values": list(best.values),
            "text": describe_trial(best, objectives)},
        "workers": {k: {**v, "last_seen": _iso(v["last_seen"])} for k, v in workers.items()},
        "cached_measurements": len(MeasurementCache(storage, study)),
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value else None


def run_status(args: argparse.Namespace) -> int:
    """Print the study's status (``--json``: one JSON object)."""
    st = status_of(args.storage, args.study)
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
    import optuna

    from prunebench.search.cache import drop_study_entries
    from prunebench.search.distributed import load_study, open_storage

    storage = open_storage(args.storage)
    study = load_study(storage, args.study)
    n = len(study.get_trials(deepcopy=False))
    if not args.yes:
        raise PrunebenchError(f"study {args.study!r} has {n} trials; add --yes to delete it "
                              "with its cached measurements")
    cached = drop_study_entries(storage, study._study_id)
    optuna.delete_study(study_name=args.study, storage=storage)
    print(f"deleted study {args.study!r} ({n} trials, {cached} cached measurements)",
          file=sys.stderr)
    return 0


def run_report(args: argparse.Namespace) -> int:
    """``prunebench report`` of the study's complete trials, read from the storage.

    Default folder: ``results/study-<name>/report``.
    """
    from prunebench.search.commands.compare import _write
    from prunebench.search.distributed import storage_run

    out = args.out or Path("results") / f"study-{args.study}" / "report"
    return _write([storage_run(args.storage, args.study)], out, args)
