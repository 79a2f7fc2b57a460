"""A search run: an Optuna search for pruning configurations under hardware budgets.

A run writes one folder (``results/<run>/``, the same whether ``prunebench search`` or
:func:`run_search` started it): ``config.json`` (resolved settings, spec, space, profile,
environment), ``dense.json`` (the dense reference, measured once per run; in a new study of the
default ``anchored`` latency frame it is timed strictly and its p50 becomes the study's anchor,
stored in the study), the study storage (``study.journal`` unless ``storage`` names another),
``trials.csv`` (one row per trial), ``remeasured.csv`` (the front and near-budget trials re-timed
with more samples and evaluated on the test split), ``front.csv`` (the re-measured feasible
front) and ``summary.json``. Running again with the same folder resumes the study: a trial
that a killed run left RUNNING is failed and its configuration run again, and a journal whose
last write a crash cut short is repaired first (:mod:`prunebench.search.journal`).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from prunebench.harness.errors import PrunebenchError
from prunebench.search.runs.files import write_csv, write_json
from prunebench.search.runs.search_settings import (
    DEFAULT_TRIALS,
    build_spec,
    check_anchor,
    default_run_dir,
    method_names,
    search_settings,
    train_runtime,
)


@dataclass(frozen=True, eq=False)
class SearchResult:
    """What a search run left in its folder, read back.

    ``best`` is the best feasible trial (by the first objective, on the search's own validation
    numbers) as its ``trials.csv`` row, or ``None``; ``trials`` is ``trials.csv``; ``front`` the
    re-measured feasible front (``front.csv``); ``hit_rate`` the share of configurations the
    search reported feasible that still met the budget when re-measured (``None``: nothing to
    re-measure); ``error`` says why no trial met the budget or why all failed (``None``: fine).
    """

    run_dir: Path
    study: str
    best: dict[str, Any] | None
    trials: pd.DataFrame
    front: pd.DataFrame
    hit_rate: float | None
    summary: dict[str, Any]
    interrupted: bool = False
    error: str | None = None


def run_search(*, model: str, dataset: str | None = None, profile: str | Path = "cpu-1t",
               space: str = "static", method: str | Sequence[str] | None = "l1",
               dynamic_method: str | None = None, budget_ms: float | None = None,
               trials: int | None = None, out: str | Path | None = None, seed: int = 0,
               finetune_epochs: int = 0, checkpoint: str | Path | None = None,
               data_dir: str | Path | None = None, sampler: str = "tpe", resume: bool = False,
               progress: bool = True, **more_spec: Any) -> SearchResult:
    """Search pruning configurations of ``model`` on ``profile``, as ``prunebench search`` does.

    ``method`` names the static method(s) of a static or hybrid space (several: searched as a
    criterion; a dynamic space has no static part and does not use it), ``dynamic_method`` the
    dynamic one of a dynamic or hybrid space (default antidote). ``budget_ms`` is the p50
    latency budget in ms per batch of the profile's batch size. ``out`` is the run folder
    (default ``results/search-<model>-...-<hash>``); an existing study there is resumed.
    ``more_spec`` takes every other setting of ``prunebench search`` under its option's name
    (``max_ratio=0.6``, ``objectives="accuracy,macs"``, ``energy_budget_mj=2.0``,
    ``warm_start=0``, ``timeout=600``, ``storage=...``, ...), with the command's defaults
    (:data:`~prunebench.search.runs.search_settings.SEARCH_DEFAULTS`).

    Bad settings raise :class:`~prunebench.harness.errors.PrunebenchError`. A run in which no
    trial met the budget (or every trial failed) returns with ``error`` set and warns.
    """
    if dataset is None:
        raise PrunebenchError("run_search needs a dataset: a search scores the accuracy of every "
                              "configuration; give e.g. dataset='digits' (see `prunebench "
                              "datasets`)")
    named = {"method", "latency_budget_ms", "quiet", "json", "command"}
    clash = sorted(named & set(more_spec))
    if clash:
        raise TypeError(f"run_search() takes {clash[0]!r} as a named argument (method=, "
                        "dynamic_method=, budget_ms=, progress=), not as a setting")
    given = {"model": model, "dataset": dataset, "profile": profile, "space": space,
             "method": method_setting(space, method, dynamic_method),
             "latency_budget_ms": budget_ms,
             "trials": trials, "out": out, "seed": seed, "finetune_epochs": finetune_epochs,
             "checkpoint": checkpoint, "data_dir": data_dir, "sampler": sampler,
             "resume": resume, **more_spec}
    given = {k: str(v) if isinstance(v, Path) else v for k, v in given.items()}
    result = execute_search(search_settings(given), progress=progress,
                            record={"command": "search", "json": False, "quiet": not progress})
    if result.error:
        warnings.warn(result.error, stacklevel=2)
    return result


def method_setting(space: str, method: str | Sequence[str] | None,
                   dynamic_method: str | None) -> str | None:
    """The ``--method`` text of :func:`run_search`'s ``method`` and ``dynamic_method``.

    A dynamic space has no static part: there a static ``method`` (such as the default l1) is
    left out, and only a dynamic method named in ``method`` counts.
    """
    names = method_names(method)
    if space == "dynamic":
        from prunebench.harness.pruning import METHODS

        names = [n for n in names if n not in METHODS or METHODS.metadata(n)["kind"] != "static"]
    names += [dynamic_method] if dynamic_method else []
    return ",".join(dict.fromkeys(names)) or None


def execute_search(settings: Mapping[str, Any], *, progress: bool = True,
                   record: Mapping[str, Any] | None = None) -> SearchResult:
    """Check ``settings`` (see :func:`run_search`), run (or resume) the search, write its folder.

    ``record`` adds entries to the settings recorded as ``args`` in ``config.json`` (the command
    line's own flags, such as ``json``). Nothing is measured before every setting is checked.
    """
    import optuna

    from prunebench.search.study import SAMPLERS

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the progress bar reports trials
    s = search_settings(settings)
    if s["sampler"] not in SAMPLERS:
        raise PrunebenchError(f"unknown sampler {s['sampler']!r}; choose one of "
                              f"{', '.join(SAMPLERS)}")
    spec = build_spec(s)  # every value checked (ranges, methods, --exec) before any work
    runtime = train_runtime(s)  # a CUDA request on a machine without one: refused now
    anchor = check_anchor(s["latency_anchor_ms"], spec)
    if s["trials"] is None and s["timeout"] is None:
        s["trials"] = DEFAULT_TRIALS
    run_dir = Path(s["out"]) if s["out"] else default_run_dir(spec)
    check_before_work(spec, run_dir, s["storage"])
    recorded = {**recorded_args(s, record), "train_runtime": runtime.to_dict(),
                "train_recipe": spec.training_recipe(runtime).to_dict()}
    run = SearchRun(spec, run_dir, args=recorded, sampler=s["sampler"],
                    storage=s["storage"], study_name=s["study"] or run_dir.name,
                    resume=s["resume"], progress=progress, warm_start=s["warm_start"],
                    sensitivity=s["sensitivity"],
                    latency_anchor_ms=anchor, train_runtime=runtime)
    run.execute(n_trials=s["trials"], timeout=s["timeout"], remeasure_max=s["remeasure_max"],
                remeasure_factor=s["remeasure_factor"])
    return run.result()


def check_before_work(spec: Any, run_dir: Path, storage: str | None) -> None:
    """What can be checked cheaply before the run folder is made and dense is timed: the run
    folder, the model, data set and profile names, the profile on this machine, that the
    checkpoint exists and the storage URL's form."""
    from prunebench.harness.datasets import DATASETS
    from prunebench.harness.models import MODELS
    from prunebench.harness.profiles import check_usable, load_profile
    from prunebench.search.runs.files import check_out_dir
    from prunebench.search.storage import normalise_url, storage_url

    check_out_dir(run_dir)
    MODELS.get(spec.model)
    DATASETS.get(spec.dataset)
    check_usable(load_profile(spec.profile), force=spec.force)
    if spec.checkpoint is not None and not Path(spec.checkpoint).expanduser().is_file():
        raise PrunebenchError(f"--checkpoint {spec.checkpoint} is not a file; give the path of "
                              "a checkpoint (or drop --checkpoint to use the cached base model)")
    if spec.checkpoint is not None:
        from prunebench.harness.train import checkpoint_meta

        checkpoint_meta(spec.checkpoint)  # a corrupt or foreign file: refused before any work
    url = storage_url(storage, run_dir)
    if not url.startswith("journal:"):
        normalise_url(url)


def recorded_args(settings: Mapping[str, Any],
                  record: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``args`` of ``config.json``: the settings (a database password never written)."""
    from prunebench.search.storage import redact

    out = {**(record or {}), **settings}
    if out.get("storage"):
        out["storage"] = redact(str(out["storage"]))
    return out


class SearchRun:
    """One run: open/resume the study, measure dense, run trials, re-measure, write the folder.

    ``objective`` (a :class:`~prunebench.search.objective.SearchObjective`) is reused when given
    (benchmarks share one across runs), else built from ``spec`` to train on
    ``train_runtime`` (a :class:`~prunebench.harness.devices.TrainRuntime`; ``None``: the CPU);
    ``args`` is recorded in ``config.json``; ``latency_anchor_ms`` gives a new study its latency
    frame.
    """

    def __init__(self, spec: Any, run_dir: Path, *, args: dict[str, Any], sampler: str = "tpe",
                 storage: str | None = None, study_name: str | None = None,
                 resume: bool = False, progress: bool = True, objective: Any = None,
                 warm_start: int = 0, latency_anchor_ms: float | None = None,
                 train_runtime: Any = None, sensitivity: int = 0) -> None:
        self.spec, self.run_dir, self.args = spec, Path(run_dir), args
        self.train_runtime = train_runtime
        self.objective = objective
        self.sampler, self.storage = sampler, storage
        self.study_name = study_name or self.run_dir.name
        self.resume, self.progress, self.warm_start = resume, progress, warm_start
        self.sensitivity = sensitivity
        self.latency_anchor_ms = latency_anchor_ms
        self.summary: dict[str, Any] = {}
        self.interrupted = False
        self.trials = pd.DataFrame()
        self.front = pd.DataFrame()
        self.best_trial: int | None = None
        self.hit_rate: float | None = None
        self._unmet: str | None = None

    def execute(self, *, n_trials: int | None, timeout: float | None,
                remeasure_max: int = 20, remeasure_factor: float = 4.0) -> SearchRun:
        """Do the whole run; the run folder is written even when trials fail or are stopped."""
        import optuna

        from prunebench.search.journal import fail_dead_trials, record_owner
        from prunebench.search.objective import ANCHOR_ATTR, SearchObjective, measurement_row
        from prunebench.search.storage import (
            DEFAULT_HEARTBEAT_S,
            DEFAULT_MAX_RETRY,
            open_storage,
            redact,
            storage_url,
        )
        from prunebench.search.study import (
            create_or_load_study,
            make_pruner,
            make_sampler,
            run_trials,
        )

        self.run_dir.mkdir(parents=True, exist_ok=True)
        url = storage_url(self.storage, self.run_dir)
        # a heartbeat (database storages), so a crashed process's trial is failed and re-queued
        storage = open_storage(url, heartbeat_interval_s=DEFAULT_HEARTBEAT_S)
        exists = self.study_name in optuna.get_all_study_names(storage)
        if self.resume and not exists:
            raise PrunebenchError(f"--resume: no study {self.study_name!r} in {redact(url)}; "
                                  "drop --resume to start one or give the right --study/--out")
        objective = self.objective or SearchObjective(self.spec, progress=self.progress,
                                                      train_runtime=self.train_runtime)
        stored = optuna.load_study(study_name=self.study_name, storage=storage) if exists \
            else None
        if n_trials == 0 and stored is None:
            raise PrunebenchError("--trials 0 finishes an existing study (re-measure its front, "
                                  f"write the folder); there is no study {self.study_name!r} "
                                  f"in {redact(url)}: give --trials 1 or more")
        self._use_given_anchor(objective, stored)
        dense, anchor = objective.dense_reference(
            stored.user_attrs.get(ANCHOR_ATTR) if stored is not None else None)
        objective.values(measurement_row(dense))  # every objective measurable, before trials
        pruner = make_pruner(len(self.spec.objectives), self.spec.space.finetune_epochs,
                             self.spec.pruner)
        # a resumed run must not replay the first run's random draws: offset the seed
        done = len(stored.trials) if stored is not None else 0
        sampler = make_sampler(self.sampler, self.spec.seed + done)
        study, _ = create_or_load_study(storage, self.study_name, self.spec, sampler, pruner)
        if url.startswith("journal:") and stored is not None:
            # no heartbeat in a journal: a killed run's trial is failed and re-queued here
            fail_dead_trials(study, max_retry=DEFAULT_MAX_RETRY)
        if anchor is not None:  # a new study: later runs and workers time in this frame
            study.set_user_attr(ANCHOR_ATTR, anchor)
        if n_trials is not None:
            from prunebench.search.workers import BUDGET_ATTR

            # Workers joining this study (`prunebench worker`) stop at the same total.
            study.set_user_attr(BUDGET_ATTR, done + int(n_trials))
        callbacks = self._warm_start(study, objective, dense)
        write_json(self.run_dir / "dense.json", dense.to_dict())
        self._write_config(url, objective, dense)
        # each trial records its process, so a resume can tell a dead run's trial from a live one
        loop = run_trials(study, record_owner(objective), n_trials=n_trials, timeout=timeout,
                          objectives=self.spec.objectives, progress=self.progress,
                          callbacks=callbacks)
        self.interrupted = loop.interrupted
        self._finish(study, objective, loop, url, remeasure_max, remeasure_factor)
        return self

    def _use_given_anchor(self, objective: Any, stored: Any) -> None:
        """A given anchor is the frame of a new study; a resumed study must have the same."""
        from prunebench.search.objective import ANCHOR_ATTR

        if self.latency_anchor_ms is None:
            return
        had = stored.user_attrs.get(ANCHOR_ATTR) if stored is not None else None
        if had is not None and not math.isclose(had, self.latency_anchor_ms):
            raise PrunebenchError(
                f"study {self.study_name!r} times in the frame of a {had:.4g} ms dense "
                f"anchor, not {self.latency_anchor_ms:.4g} ms; drop --latency-anchor-ms "
                "to resume it")
        objective.latency_anchor_ms = self.latency_anchor_ms

    def _warm_start(self, study: Any, objective: Any, dense: Any) -> list[Any]:
        """Enqueue a new study's uniform warm-start trials, then (with a budget the projection
        lands in) its sensitivity-shaped proposals; returns the callbacks steering them."""
        from prunebench.search.objective import measurement_row
        from prunebench.search.sensitivity import SensitivityStart
        from prunebench.search.warm import BudgetLineStart

        if study.trials:
            return []
        callbacks = []
        warm = None
        if self.warm_start:
            # the dense network's worst budget violation: t = 0 of the uniform line
            violation = max(objective.constraints(measurement_row(dense)).values()
                            ) if self.spec.budgets else None
            warm = BudgetLineStart(objective.space, self.warm_start, violation)
            warm.start(study)
            callbacks.append(warm.callback)
        shaped = SensitivityStart(objective, self.sensitivity, after=warm,
                                  sink=lambda d: write_json(self.run_dir / "sensitivity.json", d))
        shaped.start(study)
        return [*callbacks, shaped.callback]

    def _write_config(self, url: str, objective: Any, dense: Any) -> None:
        from prunebench.search.storage import redact

        config = {"command": "search", "args": self.args, "spec": self.spec.to_dict(),
                  "space": objective.space.describe(),
                  "profile": dataclasses.asdict(objective.profile),
                  "storage": redact(url), "study": self.study_name,
                  "latency_budget_ms": self.spec.budgets.get("latency_ms"),
                  "environment": dense.environment}
        write_json(self.run_dir / "config.json", config)

    def _finish(self, study: Any, objective: Any, loop: Any, url: str,
                remeasure_max: int, remeasure_factor: float) -> None:
        from prunebench.search.runs.remeasure import feasible_front, remeasure
        from prunebench.search.storage import redact
        from prunebench.search.study import (
            best_feasible,
            describe_trial,
            trial_summary,
            trials_frame,
        )

        trials = trials_frame(study, self.spec.objectives)
        write_csv(self.run_dir / "trials.csv", trials)
        hit_rate, n_reported = None, 0
        if loop.interrupted:  # no re-timing after Ctrl-C: the front is the search's own numbers
            rows = trials[trials.get("feasible", pd.Series(dtype=bool)) == True]  # noqa: E712
            front = feasible_front(rows.assign(remeasured=False,
                                               val_accuracy_top1=rows.get("accuracy_top1")),
                                   self.spec) if not rows.empty else rows
        else:
            re = remeasure(study, objective, limit=remeasure_max, factor=remeasure_factor,
                           progress=self.progress)
            write_csv(self.run_dir / "remeasured.csv", re.rows)
            front, hit_rate, n_reported = re.front, re.hit_rate, re.n_reported_feasible
        if front.columns.empty:  # keep a header so readers see an empty front, not no file
            front = pd.DataFrame(columns=["trial_number", "label", "run_kind", "feasible"])
        write_csv(self.run_dir / "front.csv", front)
        counts = trial_summary(study)
        best = best_feasible(study, self.spec.objectives)
        self.summary = {
            "run_dir": str(self.run_dir), "study": self.study_name, "storage": redact(url),
            "counts": counts, "trials_this_run": loop.trials,
            "trials_per_minute": loop.trials_per_minute, "interrupted": loop.interrupted,
            "best": describe_trial(best, self.spec.objectives),
            "front_size": len(front), "budget_hit_rate": hit_rate,
            "n_reported_feasible": n_reported, "budgets": self.spec.budgets,
            "budget_projection": self.spec.budget_projection and bool(self.spec.budgets),
            "trial_timing": self.spec.timing_mode,
            **model_errors(study)}
        self._unmet = unmet_message(trials, self.spec, counts)
        self.summary["error"] = self._unmet
        write_json(self.run_dir / "summary.json", self.summary)
        self.trials, self.front, self.hit_rate = trials, front, hit_rate
        self.best_trial = best.number if best is not None else None

    def result(self) -> SearchResult:
        """The run as a :class:`SearchResult` (after :meth:`execute`)."""
        best = None
        if self.best_trial is not None:
            row = self.trials[self.trials["trial_number"] == self.best_trial].iloc[0]
            best = {k: (None if _missing(v) else v) for k, v in row.items()}
        return SearchResult(run_dir=self.run_dir, study=self.study_name, best=best,
                            trials=self.trials, front=self.front, hit_rate=self.hit_rate,
                            summary=self.summary, interrupted=self.interrupted,
                            error=self._unmet)

    def raise_if_unmet(self) -> None:
        """Raise the impossible-budget / all-failed message (exit 2) after the folder is written."""
        if self._unmet:
            raise PrunebenchError(self._unmet)


def model_errors(study: Any) -> dict[str, Any]:
    """``cost_model_error_median`` (median |predicted / measured - 1| per predicted column over
    the complete trials; :mod:`prunebench.search.latency_model`) and its latency entry as
    ``latency_model_error_median`` (``None``: nothing predicted)."""
    from prunebench.search.latency_model import error_summary

    errors = error_summary(study.get_trials(deepcopy=False))
    return {"cost_model_error_median": errors,
            "latency_model_error_median": errors.get("latency_p50_ms")}


def _missing(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def unmet_message(trials: pd.DataFrame, spec: Any, counts: Mapping[str, int]) -> str | None:
    """Why a finished run has nothing to show: every trial failed (the first reason), or no
    trial met a budget (the lowest value seen per budget); ``None`` when neither."""
    from prunebench.search.objective import BUDGETS

    if counts["total"] and not counts["complete"] and counts["fail"]:
        failed = trials[trials["state"] == "FAIL"]
        reasons = failed["fail_reason"].dropna() if "fail_reason" in failed else pd.Series()
        first = reasons.iloc[0] if len(reasons) else "no reason recorded"
        return f"all {counts['fail']} trials failed; first reason: {first}"
    if not spec.budgets or not counts["complete"] or counts["feasible"]:
        return None
    done = trials[trials["state"] == "COMPLETE"]
    parts = []
    for key, budget in spec.budgets.items():
        column, unit = BUDGETS[key]
        values = pd.to_numeric(done[column], errors="coerce")
        best = values.min()
        trial = int(done.loc[values.idxmin(), "trial_number"])
        parts.append(f"{key.split('_')[0]} budget {budget:g} {unit} but the lowest seen was "
                     f"{best:.4g} {unit} (trial {trial})")
    return (f"no configuration met the budget in {counts['complete']} trials: "
            f"{'; '.join(parts)}; raise the budget or allow more pruning (--max-ratio)")
