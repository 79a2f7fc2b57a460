"""The Optuna study of a search: samplers, pruners, creating or resuming it, the trial loop.

Kept apart so that a multi-worker search reuses each piece: :func:`create_or_load_study` makes or
resumes a study whose :class:`~prunebench.search.objective.SearchSpec` is stored in its user
attrs (its storage comes from :mod:`prunebench.search.storage`), and :func:`run_trials` runs
trials with ``catch=`` (a failing trial is recorded, not a crash), a progress bar showing the
best feasible point so far, and a first Ctrl-C that stops after the current trial.
:func:`trials_frame` gives every trial as one row of ``trials.csv``.
"""

from __future__ import annotations

import math
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from prunebench.harness.errors import PrunebenchError
from prunebench.search.latency_model import is_feasible
from prunebench.search.objective import (
    SEARCH_OBJECTIVES,
    SPEC_ATTR,
    SearchSpec,
    check_pruner,
)

SAMPLERS = ("tpe", "nsga2", "gp", "random")
TPE_STARTUP_TRIALS = 5  # random trials (warm-start ones included) before TPE models


def dashboard_constraints(trial: FrozenTrial) -> tuple[float, ...]:
    """The trial's ``set_constraint`` values in key order, for a sampler's ``constraints_func``.

    Optuna 5 stores ``trial.set_constraint`` values under one system attr per key, which
    optuna-dashboard 0.21 does not read; a sampler given ``constraints_func`` also stores them
    as the list the dashboard greys infeasible trials by. The samplers read the constraints
    from ``trial.constraints`` either way (every consumer here takes their max or all <= 0, so
    the list's copy under keys "0", "1"... changes no decision).
    """
    return tuple(v for k, v in sorted(trial.constraints.items()) if not k.isdigit())


def make_sampler(name: str, seed: int | None = None) -> optuna.samplers.BaseSampler:
    """The Optuna sampler called ``name`` (constraints come from ``trial.set_constraint``;
    ``tpe``, ``nsga2`` and ``gp`` also copy them for optuna-dashboard through
    :func:`dashboard_constraints`; ``random`` takes no ``constraints_func``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # constraints_func is deprecated in Optuna 5 (removal in 7) in favour of
        # trial.set_constraint, which the objective uses; it stays only for the dashboard
        warnings.simplefilter("ignore", FutureWarning)
        if name == "tpe":
            # multivariate: a layer's ratio matters with the others' (latency is their sum);
            # models from the 5th trial, so the warm-start points are used at once
            return optuna.samplers.TPESampler(seed=seed, multivariate=True,
                                              n_startup_trials=TPE_STARTUP_TRIALS,
                                              constraints_func=dashboard_constraints)
        if name == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed, population_size=20,
                                                 constraints_func=dashboard_constraints)
        if name == "gp":
            return optuna.samplers.GPSampler(seed=seed, constraints_func=dashboard_constraints)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise PrunebenchError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")


def make_pruner(n_objectives: int, finetune_epochs: int,
                name: str = "auto") -> optuna.pruners.BasePruner:
    """The pruner over fine-tune epochs (steps 1..``finetune_epochs``: epochs done).

    ``sha``: successive halving from the first epoch (reduction factor 3: a trial must be in the
    top third of the trials that reached its rung to go on); ``hyperband``: Hyperband over
    1..``finetune_epochs`` epochs; ``median``: median pruning after 5 trials; ``auto``: median
    for a single objective with fine-tuning, else none; ``none``: every trial runs to the end.
    Optuna's ``report``/``should_prune`` do not support multi-objective studies; there every
    trial runs to the end and its per-epoch accuracy is kept as user attrs.
    """
    check_pruner(name, n_objectives, finetune_epochs)
    if name == "auto":
        name = "median" if n_objectives == 1 and finetune_epochs > 0 else "none"
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    if name == "sha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=finetune_epochs,
                                              reduction_factor=3)
    return optuna.pruners.NopPruner()


# --------------------------------------------------------------------------- studies
def create_or_load_study(storage: optuna.storages.BaseStorage, name: str, spec: SearchSpec,
                         sampler: optuna.samplers.BaseSampler,
                         pruner: optuna.pruners.BasePruner | None = None) -> tuple[
                             optuna.Study, bool]:
    """Create study ``name`` with ``spec`` stored, or load it if it exists; returns (study, new).

    Loading checks that the stored spec matches ``spec`` in what decides the trials' meaning
    (network, data, space, profile, objectives, budgets), and names what differs otherwise.
    """
    if name in optuna.get_all_study_names(storage):
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler,
                                  pruner=pruner)
        stored = study.user_attrs.get(SPEC_ATTR)
        if stored is None:
            raise PrunebenchError(f"study {name!r} exists but was not made by `prunebench "
                                  "search`; give another --study name")
        diff = spec_differences(SearchSpec.from_dict(stored), spec)
        if diff:
            raise PrunebenchError(f"study {name!r} was made with different settings "
                                  f"({'; '.join(diff)}); use the same settings to resume or a "
                                  "new --study name")
        name_metrics(study, spec.objectives)
        return study, False
    study = optuna.create_study(storage=storage, study_name=name, sampler=sampler, pruner=pruner,
                                directions=spec.directions, load_if_exists=True)
    if SPEC_ATTR not in study.user_attrs:
        study.set_user_attr(SPEC_ATTR, spec.to_dict())
    name_metrics(study, spec.objectives)
    return study, True


def name_metrics(study: optuna.Study, objectives: Sequence[str]) -> None:
    """Name the study's objectives (optuna-dashboard shows them instead of "0", "1")."""
    if study.metric_names is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(objectives))


def spec_differences(old: SearchSpec, new: SearchSpec) -> list[str]:
    """Human-readable ``key: old -> new`` for spec fields that change a trial's meaning."""
    a, b = old.to_dict(), new.to_dict()
    out = [f"{k}: {a[k]!r} -> {b[k]!r}" for k in sorted(a) if k != "force" and a[k] != b.get(k)]
    return out


# --------------------------------------------------------------------------- trial loop
@dataclass
class LoopResult:
    """How a :func:`run_trials` call ended; ``trials`` counts the trials it ran."""

    trials: int
    seconds: float
    interrupted: bool

    @property
    def trials_per_minute(self) -> float:
        """Trials finished per wall-clock minute."""
        return 60.0 * self.trials / self.seconds if self.seconds > 0 else float("nan")


def best_feasible(study: optuna.Study, objectives: Sequence[str]) -> FrozenTrial | None:
    """The feasible trial best in the first objective (ties: the earlier trial)."""
    feasible = [t for t in study.get_trials(deepcopy=False) if is_feasible(t)]
    if not feasible:
        return None
    sign = -1.0 if SEARCH_OBJECTIVES[objectives[0]][1] == "maximize" else 1.0
    return min(feasible, key=lambda t: (sign * t.values[0], t.number))


def describe_trial(trial: FrozenTrial | None, objectives: Sequence[str]) -> str:
    """``trial 7: accuracy=0.931 latency_p50=1.23`` (or ``none feasible yet``)."""
    if trial is None:
        return "none feasible yet"
    vals = " ".join(f"{o}={_short(v)}" for o, v in zip(objectives, trial.values, strict=True))
    return f"trial {trial.number}: {vals}"


def _short(v: float) -> str:
    return f"{v:.4g}" if math.isfinite(v) else str(v)


@contextmanager
def _graceful_interrupt(on_first: Callable[[], None]) -> Iterator[None]:
    """First Ctrl-C calls ``on_first`` (stop after this trial); a second one aborts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGINT, previous if callable(previous) else signal.default_int_handler)
        on_first()

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


FEASIBLE_ATTR = "feasible"


def mark_feasible(objective: Callable[[optuna.Trial], Any]) -> Callable[[optuna.Trial], Any]:
    """``objective`` that also stores whether the trial met every budget as the user attr
    ``feasible``: optuna-dashboard shows user attrs in its trial table, and a ``random`` sampler
    takes no ``constraints_func`` (:func:`dashboard_constraints`) to grey the trial by."""
    def marked(trial: optuna.Trial) -> Any:
        values = objective(trial)
        running = trial.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        mine = next((t for t in running if t.number == trial.number), None)
        if mine is not None and mine.constraints:
            trial.set_user_attr(FEASIBLE_ATTR, all(v <= 0.0 for v in mine.constraints.values()))
        return values

    return marked


def run_trials(study: optuna.Study, objective: Callable[[optuna.Trial], Any], *,
               n_trials: int | None, timeout: float | None, objectives: Sequence[str],
               progress: bool = True,
               callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = ()
               ) -> LoopResult:
    """Run trials until ``n_trials`` ran, ``timeout`` seconds passed, or Ctrl-C.

    Exceptions inside a trial mark it FAIL (the objective stores ``fail_reason``); the loop goes
    on. The first Ctrl-C stops after the running trial; a second one interrupts it (the trial is
    recorded as failed). Either way, everything in the storage stays. ``callbacks`` steer the
    next trials (the warm start enqueues its next point), so they are not called after the
    loop's last trial (``n_trials`` ran, ``timeout`` passed or a stop was asked): the search
    ends with no trial of its own left queued (WAITING).
    """
    from tqdm.auto import tqdm

    if n_trials is None and timeout is None:
        raise PrunebenchError("give --trials N and/or --timeout SECONDS to bound the search")
    state = {"stop": False, "ran": 0, "last": False}
    bar = tqdm(total=n_trials, desc="search", unit="trial", disable=not progress, leave=True)

    def request_stop() -> None:
        state["stop"] = True
        bar.write("stopping after the current trial (Ctrl-C again to abort it)")

    def after_trial(st: optuna.Study, trial: FrozenTrial) -> None:
        state["ran"] += 1
        state["last"] = state["stop"] or (n_trials is not None and state["ran"] >= n_trials) \
            or (timeout is not None and time.perf_counter() - start >= timeout)
        n_ok = sum(1 for t in st.get_trials(deepcopy=False) if is_feasible(t))
        best = describe_trial(best_feasible(st, objectives), objectives)
        bar.set_postfix_str(f"feasible {n_ok}, best {best}", refresh=False)
        bar.update(1)
        if state["stop"]:
            st.stop()

    def steering(callback: Callable[[optuna.Study, FrozenTrial], None]
                 ) -> Callable[[optuna.Study, FrozenTrial], None]:
        def call(st: optuna.Study, trial: FrozenTrial) -> None:
            if not state["last"]:
                callback(st, trial)
        return call

    start = time.perf_counter()
    interrupted = False
    try:
        with _graceful_interrupt(request_stop):
            study.optimize(mark_feasible(objective), n_trials=n_trials, timeout=timeout,
                           catch=(Exception,),
                           callbacks=[after_trial, *map(steering, callbacks)],
                           gc_after_trial=True)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    return LoopResult(state["ran"], time.perf_counter() - start, interrupted or state["stop"])


def trial_summary(study: optuna.Study) -> dict[str, int]:
    """Counts of trials by state, and of feasible ones."""
    trials = study.get_trials(deepcopy=False)
    out = {s.name.lower(): sum(1 for t in trials if t.state == s) for s in TrialState}
    out["total"] = len(trials)
    out["feasible"] = sum(1 for t in trials if is_feasible(t))
    return out


# --------------------------------------------------------------------------- tables
def trial_row(trial: FrozenTrial, objectives: Sequence[str]) -> dict[str, Any]:
    """One trials.csv row: number/state/params/values/constraints + every stored field."""
    row: dict[str, Any] = {"trial_number": trial.number, "state": trial.state.name,
                           "run_kind": "search", "label": f"trial {trial.number}",
                           "feasible": is_feasible(trial),
                           "duration_s": trial.duration.total_seconds()
                           if trial.duration is not None else None}
    row.update({f"params_{k}": v for k, v in trial.params.items()})
    values = trial.values or [None] * len(objectives)
    row.update({f"value_{o}": v for o, v in zip(objectives, values, strict=False)})
    # keys "0", "1"... are the dashboard's copy (dashboard_constraints), not constraints
    row.update({f"constraint_{k}": v for k, v in trial.constraints.items() if not k.isdigit()})
    row.update(trial.user_attrs)
    row.setdefault("fail_reason", None)
    return row


def trials_frame(study: optuna.Study, objectives: Sequence[str]) -> pd.DataFrame:
    """Every trial of ``study`` as one row (failed and pruned ones too)."""
    rows = [trial_row(t, objectives) for t in study.get_trials(deepcopy=False)]
    return pd.DataFrame(rows)
