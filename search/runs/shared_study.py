"""A study in a shared database that ``prunebench worker`` processes join: create, status, delete.

:func:`create_worker_study` validates a search's settings, then creates the study with its spec,
sampler name, total trial budget and (optionally) latency anchor stored, so that workers can
join it from the storage alone; a failure leaves no study behind. :func:`study_status` counts
its trials, names its best feasible one and the workers seen; :func:`delete_study` removes it
with its cached measurements.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from prunebench.harness.errors import PrunebenchError


def create_worker_study(storage_url: str, study_name: str,
                        settings: Mapping[str, Any]) -> dict[str, Any]:
    """Create study ``study_name`` for workers from search ``settings`` (as for
    :func:`~prunebench.search.runs.run_search`; ``trials`` is the study's total budget).

    Returns ``{"study", "storage" (password hidden), "budget", "spec"}``.
    """
    import optuna

    from prunebench.harness.datasets import DATASETS
    from prunebench.harness.models import MODELS
    from prunebench.harness.profiles import load_profile
    from prunebench.search.cache import ensure_table
    from prunebench.search.objective import ANCHOR_ATTR, SPEC_ATTR
    from prunebench.search.runs.search_settings import build_spec, check_anchor, search_settings
    from prunebench.search.storage import open_storage, redact
    from prunebench.search.study import SAMPLERS, make_pruner, make_sampler, name_metrics
    from prunebench.search.workers import BUDGET_ATTR, SAMPLER_ATTR

    s = search_settings(settings)
    if s["sampler"] not in SAMPLERS:
        raise PrunebenchError(f"unknown sampler {s['sampler']!r}; choose one of "
                              f"{', '.join(SAMPLERS)}")
    if s["trials"] is not None and s["trials"] < 1:
        raise PrunebenchError(f"--trials {s['trials']} must be at least 1 (the study's budget)")
    spec = build_spec(s)
    anchor = check_anchor(s["latency_anchor_ms"], spec)  # else the first worker times dense
    MODELS.get(spec.model)
    DATASETS.get(spec.dataset)
    load_profile(spec.profile)
    storage = open_storage(storage_url, database_only=True)
    if study_name in optuna.get_all_study_names(storage):
        raise PrunebenchError(f"study {study_name!r} already exists in {redact(storage_url)!r}; "
                              "join it with `prunebench worker` or remove it with `prunebench "
                              "study delete`")
    study = None
    try:
        study = optuna.create_study(
            storage=storage, study_name=study_name, directions=spec.directions,
            sampler=make_sampler(s["sampler"], s["seed"]),
            pruner=make_pruner(len(spec.objectives), spec.space.finetune_epochs,
                             spec.pruner))
        study.set_user_attr(SPEC_ATTR, spec.to_dict())
        name_metrics(study, spec.objectives)
        study.set_user_attr(SAMPLER_ATTR, s["sampler"])
        if s["trials"] is not None:
            study.set_user_attr(BUDGET_ATTR, int(s["trials"]))
        if anchor is not None:
            study.set_user_attr(ANCHOR_ATTR, anchor)
        ensure_table(storage)
    except BaseException:
        if study is not None:
            optuna.delete_study(study_name=study_name, storage=storage)
        raise
    return {"study": study_name, "storage": redact(storage_url), "budget": s["trials"],
            "spec": spec.to_dict()}


def study_status(storage_url: str, study_name: str) -> dict[str, Any]:
    """Trials by state, best feasible trial, workers seen and cache size, as one dict."""
    from prunebench.search.cache import MeasurementCache
    from prunebench.search.objective import SPEC_ATTR, SearchSpec
    from prunebench.search.storage import load_study, open_storage, redact
    from prunebench.search.study import best_feasible, describe_trial, trial_summary
    from prunebench.search.workers import BUDGET_ATTR

    storage = open_storage(storage_url, database_only=True)
    study = load_study(storage, study_name)
    spec = study.user_attrs.get(SPEC_ATTR)
    objectives = SearchSpec.from_dict(spec).objectives if spec else ()
    best = best_feasible(study, objectives) if objectives else None
    return {
        "study": study_name, "storage": redact(storage_url),
        "objectives": list(objectives), "budget": study.user_attrs.get(BUDGET_ATTR),
        "trials": trial_summary(study),
        "best_feasible": None if best is None else {
            "trial": best.number, "values": list(best.values),
            "text": describe_trial(best, objectives)},
        "workers": _workers(study),
        "cached_measurements": len(MeasurementCache(storage, study)),
    }


def _workers(study: Any) -> dict[str, dict[str, Any]]:
    """Per worker id: trials it ran and when it was last seen (ISO time)."""
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
    return {k: {**v, "last_seen": _iso(v["last_seen"])} for k, v in workers.items()}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value else None


def delete_study(storage_url: str, study_name: str, *, confirm: bool = False) -> dict[str, int]:
    """Delete the study and its cached measurements (only with ``confirm``); returns the
    numbers deleted: ``{"trials", "cached"}``."""
    import optuna

    from prunebench.search.cache import drop_study_entries
    from prunebench.search.storage import load_study, open_storage

    storage = open_storage(storage_url, database_only=True)
    study = load_study(storage, study_name)
    n = len(study.get_trials(deepcopy=False))
    if not confirm:
        raise PrunebenchError(f"study {study_name!r} has {n} trials; add --yes to delete it "
                              "with its cached measurements")
    cached = drop_study_entries(storage, study._study_id)
    optuna.delete_study(study_name=study_name, storage=storage)
    return {"trials": n, "cached": cached}
