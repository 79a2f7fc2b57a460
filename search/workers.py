"""``prunebench worker``: join a study in a shared storage and run its trials until done.

A worker rebuilds the study's objective from the spec stored with the study (no other input), so
workers on many machines can join one study. Each worker measures on its own hardware only: it
refuses a study whose hardware profile does not match this machine (``--force`` records forced
measurements). Around timing it takes the per-machine lock of :func:`prunebench.search.distributed.
timing_lock`; measurements are kept in the study's :class:`~search.cache.MeasurementCache`.

Ending cleanly: SIGINT (Ctrl-C) or SIGTERM (SLURM/Kubernetes preemption) abandons the running
trial, which is recorded as FAIL with ``fail_reason = "interrupted"`` and re-queued with the
same parameters; a worker killed outright (SIGKILL, lost node) stops its heartbeat and the next
worker fails and re-queues its trial (see :mod:`prunebench.search.storage`).

A database that goes away (restart, failover) is waited for: every storage call goes through
:class:`~prunebench.search.retrying.RetryingStorage`, which retries across the outage (one line
when it starts, one when it ends) and gives up after ``db_outage_s`` with one line and exit 2.
"""

from __future__ import annotations

import dataclasses
import signal
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState
from torch import nn

from prunebench.harness.errors import ProfileError, PrunebenchError
from prunebench.harness.measure.latency import Settle
from prunebench.harness.measurement import Measurement
from prunebench.harness.pruning import PruningConfig
from prunebench.search.cache import MeasurementCache
from prunebench.search.distributed import timing_lock, worker_identity
from prunebench.search.objective import ANCHOR_ATTR, SPEC_ATTR, SearchObjective, SearchSpec
from prunebench.search.retrying import DEFAULT_DB_OUTAGE_S, DatabaseGone, open_retrying_storage
from prunebench.search.space import TrialConfig
from prunebench.search.storage import (
    DEFAULT_HEARTBEAT_S,
    DEFAULT_MAX_RETRY,
    load_study,
)

BUDGET_ATTR = "prunebench_n_trials"  # study user attr: total trials the study should get
SAMPLER_ATTR = "prunebench_sampler"  # study user attr: sampler name every worker uses
INTERRUPTED = "interrupted"
MAX_CONSECUTIVE_FAILURES = 3
_COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)


@dataclass(frozen=True)
class WorkerOptions:
    """How one worker runs; ``trials=None`` runs until the study's budget is reached."""

    trials: int | None = None
    force: bool = False
    use_cache: bool = True
    lock_dir: str | None = None
    heartbeat_interval_s: int = DEFAULT_HEARTBEAT_S
    grace_period_s: int | None = None
    max_retry: int | None = DEFAULT_MAX_RETRY
    db_outage_s: float = DEFAULT_DB_OUTAGE_S  # how long a lost database is waited for
    # where this worker trains (a harness.devices.TrainRuntime; None: the CPU): per machine,
    # not in the study's spec
    train_runtime: Any = None


@dataclass
class WorkerResult:
    """What a worker did: trials it ran, how many were cache hits, and why it stopped."""

    worker_id: str
    trials: int = 0
    completed: int = 0
    failed: int = 0
    cache_hits: int = 0
    stopped: str = ""
    interrupted: bool = False


class _Interrupts:
    """SIGINT/SIGTERM: inside a trial raise ``KeyboardInterrupt``; between trials just stop."""

    def __init__(self) -> None:
        self.requested = False
        self.in_trial = False

    def handler(self, signum: int, frame: Any) -> None:
        self.requested = True
        if self.in_trial:
            self.in_trial = False
            raise KeyboardInterrupt

    def check(self) -> None:
        """Raise the ``KeyboardInterrupt`` a signal asked for, if the handler's one was lost.

        A signal that lands while Python runs a finaliser (a weakref callback during
        ``gc.collect()``, say) has its exception printed and dropped ("Exception ignored in"),
        and the trial would otherwise run on to its end; trials call this between phases.
        """
        if self.requested:
            raise KeyboardInterrupt

    @contextmanager
    def installed(self) -> Iterator[_Interrupts]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        hook = sys.unraisablehook

        def quiet(unraisable: Any) -> None:
            # our own KeyboardInterrupt, dropped in a finaliser: check() raises it again, so
            # the user sees no "Exception ignored in" traceback for their Ctrl-C
            if not (self.requested and isinstance(unraisable.exc_value, KeyboardInterrupt)):
                hook(unraisable)

        for s in previous:
            signal.signal(s, self.handler)
        sys.unraisablehook = quiet
        try:
            yield self
        finally:
            sys.unraisablehook = hook
            for s, h in previous.items():
                signal.signal(s, h)


class WorkerObjective(SearchObjective):
    """The study's objective plus worker identity, the measurement cache and clean interrupts."""

    def __init__(self, spec: SearchSpec, *, cache: MeasurementCache, fingerprint: str,
                 interrupts: _Interrupts, **kwargs: Any) -> None:
        super().__init__(spec, **kwargs)
        self.cache = cache
        self.fingerprint = fingerprint
        # a new profile version (other timing/threads) must not reuse old measurements
        self.profile_key = f"{self.profile.name}@v{self.profile.version}"
        self.interrupts = interrupts
        self.identity = worker_identity()
        self.cache_hits = 0
        self.interrupted: list[int] = []  # numbers of trials abandoned on a signal
        self._trial: optuna.Trial | None = None
        self._hit: tuple[str, Measurement] | None = None

    def __call__(self, trial: optuna.Trial) -> tuple[float, ...]:
        for key, value in self.identity.items():
            trial.set_user_attr(key, value)
        self._trial, self._hit = trial, None
        if self.spec.latency_frame == "anchored":  # the stored frame, should another worker
            stored = trial.study.user_attrs.get(ANCHOR_ATTR)  # have set it after we joined
            if stored is not None:
                self.latency_anchor_ms = float(stored)
        self.interrupts.in_trial = True
        try:
            self.interrupts.check()
            values = super().__call__(trial)
            self.interrupts.check()  # measured, but the signal came first: abandon as promised
            return values
        except KeyboardInterrupt:
            self.interrupts.in_trial = False
            self.interrupted.append(trial.number)
            trial.set_user_attr("fail_reason", INTERRUPTED)
            raise
        finally:
            self.interrupts.in_trial = False
            self._trial, self._hit = None, None

    def build(self, chosen: TrialConfig, *, trial: optuna.Trial | None = None) -> nn.Module:
        """Skip building (and fine-tuning) when the trial's config was measured already."""
        if trial is not None:
            hit = self.cache.get(chosen.record.key, self.profile_key, self.fingerprint)
            if hit is not None:
                self._hit = (chosen.record.key, hit)
                self.cache_hits += 1
                trial.set_user_attr("cache_hit", True)
                return self.prepared.base_model  # never measured: the cached record stands in
        model = super().build(chosen, trial=trial)
        if trial is not None:
            self.interrupts.check()
        return model

    def measure(self, record: PruningConfig, model: nn.Module, *, split: str = "val",
                profile: Any = None, speedup_vs_dense: bool = False,
                settle: Settle | None = None) -> Measurement:
        """The cached measurement of a trial's config, else measure it and store it."""
        # a trial's own measurement (SearchObjective.__call__ times it with trial_profile)
        in_trial = self._trial is not None and split == "val" \
            and (profile is None or profile is self.trial_profile)
        if in_trial and self._hit is not None and self._hit[0] == record.key:
            return self._hit[1]
        m = super().measure(record, model, split=split, profile=profile,
                            speedup_vs_dense=speedup_vs_dense, settle=settle)
        if in_trial and self._trial is not None:
            self.cache.put(record.key, self.profile_key, self.fingerprint, m,
                           trial_number=self._trial.number)
        return m


def fingerprint_key() -> str:
    """This machine's fingerprint as stored in cache keys."""
    from prunebench.harness.fingerprint import machine_fingerprint

    return machine_fingerprint().short()


def study_budget(study: optuna.Study) -> int | None:
    """The study's total trial budget (``None``: unbounded, workers need ``--trials``)."""
    value = study.user_attrs.get(BUDGET_ATTR)
    return int(value) if value is not None else None


def counted_trials(study: optuna.Study) -> int:
    """Trials that use up the budget: complete, pruned, or running (failed ones are retried)."""
    return len(study.get_trials(deepcopy=False, states=_COUNTED))


def join(storage_url: str, study_name: str, options: WorkerOptions, *,
         interrupts: _Interrupts | None = None, progress: bool = False,
         warn: Any = None) -> tuple[optuna.Study, WorkerObjective]:
    """Connect, load the study, check this machine against its profile, build the objective.

    The study's storage retries across database outages (``warn``: where their lines go).
    """
    storage = open_retrying_storage(storage_url, outage_s=options.db_outage_s, warn=warn,
                                    heartbeat_interval_s=options.heartbeat_interval_s,
                                    grace_period_s=options.grace_period_s,
                                    max_retry=options.max_retry)
    data = load_study(storage, study_name).user_attrs
    if SPEC_ATTR not in data:
        raise PrunebenchError(f"study {study_name!r} has no prunebench search spec; create it "
                              "with `prunebench study create` or `prunebench search`")
    spec = SearchSpec.from_dict(data[SPEC_ATTR])
    from prunebench.search.study import make_pruner, make_sampler

    # no seed: workers with one seed would propose the same points
    study = load_study(storage, study_name,
                       sampler=make_sampler(str(data.get(SAMPLER_ATTR, "tpe"))),
                       pruner=make_pruner(len(spec.objectives), spec.space.finetune_epochs,
                                          spec.pruner))
    if options.force:
        spec = dataclasses.replace(spec, force=True)
    cache = MeasurementCache(storage, study, enabled=options.use_cache)
    try:
        objective = WorkerObjective(spec, cache=cache, fingerprint=fingerprint_key(),
                                    interrupts=interrupts or _Interrupts(),
                                    timing_lock=timing_lock(options.lock_dir), progress=progress,
                                    train_runtime=options.train_runtime)
    except ProfileError as exc:
        raise ProfileError(f"this machine cannot join study {study_name!r}: {exc}") from None
    if spec.latency_frame == "anchored":
        # The study's latency frame: the first worker times dense and stores the anchor. Under
        # this machine's timing lock (re-entrant), so that workers starting together on one
        # machine read the first one's anchor instead of each storing their own.
        with objective.timing_lock:
            stored = study.user_attrs.get(ANCHOR_ATTR)
            if stored is not None:  # nothing to time: the dense measurement is not kept here
                objective.latency_anchor_ms = float(stored)
            else:
                _, anchor = objective.dense_reference(None)
                study.set_user_attr(ANCHOR_ATTR, anchor)
    return study, objective


def requeue(study: optuna.Study, trial_number: int) -> None:
    """Queue the parameters of an abandoned trial again (another worker will run them)."""
    trial = study.get_trials(deepcopy=False)[trial_number]
    study.enqueue_trial(dict(trial.params), user_attrs={"retry_of": trial_number},
                        skip_if_exists=False)


def _fail_own_running(study: optuna.Study, worker_id: str) -> list[int]:
    """Mark this worker's RUNNING trials FAIL ("interrupted"); returns their numbers."""
    storage = study._storage
    numbers = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.user_attrs.get("worker_id") != worker_id:
            continue
        try:
            storage.set_trial_user_attr(t._trial_id, "fail_reason", INTERRUPTED)
            storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            numbers.append(t.number)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass
    return numbers


def run_worker(storage_url: str, study_name: str, options: WorkerOptions, *,
               progress: bool = False, log: Any = print, warn: Any = None) -> WorkerResult:
    """Run trials of ``study_name`` until its budget, ``options.trials``, or a signal.

    Failing trials are recorded (``fail_reason``) and the worker goes on, except after
    ``MAX_CONSECUTIVE_FAILURES`` in a row (a broken setup), which raises one line. Trials
    abandoned on a signal are failed ("interrupted") and their parameters queued again. A lost
    database is waited for up to ``options.db_outage_s`` (``warn``, default stderr, gets one line
    when it goes and one when it is back); longer raises one line.
    """
    if options.trials is not None and options.trials < 1:
        raise PrunebenchError(f"--trials {options.trials} must be at least 1")
    interrupts = _Interrupts()
    with interrupts.installed():
        try:
            return _run(storage_url, study_name, options, interrupts, progress, log, warn)
        except DatabaseGone as exc:
            raise PrunebenchError(str(exc)) from None


def _run(storage_url: str, study_name: str, options: WorkerOptions, interrupts: _Interrupts,
         progress: bool, log: Any, warn: Any) -> WorkerResult:
    study, objective = join(storage_url, study_name, options, interrupts=interrupts,
                            progress=progress, warn=warn)
    storage = study._storage
    budget = study_budget(study)
    if budget is None and options.trials is None:
        raise PrunebenchError(f"study {study_name!r} has no trial budget; give the worker "
                              "--trials N (or create the study with --trials N)")
    result = WorkerResult(worker_id=objective.identity["worker_id"])
    try:
        _loop(study, objective, options, budget, result, interrupts, log)
    except KeyboardInterrupt:
        interrupts.requested = True
    except Exception:
        if storage.gone:  # Optuna's own error handling tripped over the lost database
            raise DatabaseGone(storage.outage.gone) from None
        raise
    finally:
        if not storage.gone:  # else the trial's heartbeat stops and another worker re-queues it
            # a signal between Optuna's ask and the objective can leave a trial RUNNING
            abandoned = objective.interrupted + _fail_own_running(study, result.worker_id)
            for number in sorted(set(abandoned)):
                requeue(study, number)
    if interrupts.requested:
        result.interrupted, result.stopped = True, INTERRUPTED
    result.cache_hits = objective.cache_hits
    return result


OVER_BUDGET_ATTR = "over_budget"  # a trial asked after other workers had taken the budget


def _within_budget(objective: WorkerObjective, study: optuna.Study, budget: int | None) -> Any:
    """``objective``, except for a trial asked after the budget was taken: workers check the
    budget and then ask, so two of them can pass the check together for the last trial. The
    later-numbered one is ended PRUNED with user attr ``over_budget`` before any work."""
    def run(trial: optuna.Trial) -> tuple[float, ...]:
        if budget is not None:
            before = [t for t in study.get_trials(deepcopy=False, states=_COUNTED)
                      if t.number < trial.number]
            if len(before) >= budget:
                trial.set_user_attr(OVER_BUDGET_ATTR, True)
                raise optuna.TrialPruned(f"the study's {budget} trials were taken by other "
                                         "workers while this one was asked")
        return objective(trial)
    return run


def _loop(study: optuna.Study, objective: WorkerObjective, options: WorkerOptions,
          budget: int | None, result: WorkerResult, interrupts: _Interrupts, log: Any) -> None:
    failures = 0
    while not interrupts.requested:
        if options.trials is not None and result.trials >= options.trials:
            result.stopped = f"ran its {options.trials} trials"
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        if budget is not None and counted_trials(study) >= budget:
            result.stopped = f"study budget of {budget} trials reached"
            return
        done: list[optuna.trial.FrozenTrial] = []
        try:
            study.optimize(_within_budget(objective, study, budget), n_trials=1,
                           catch=(Exception,), gc_after_trial=True,
                           callbacks=[lambda _s, trial, sink=done: sink.append(trial)])
        except (ValueError, optuna.exceptions.UpdateFinishedTrialError) as exc:
            # Another worker declared our trial stale (heartbeat late under load) and queued a
            # retry; the measurement is in the cache, so the retry costs little.
            log(f"worker {result.worker_id}: trial failed by another worker ({exc}); re-queued")
        if done and done[0].user_attrs.get(OVER_BUDGET_ATTR):
            result.stopped = f"study budget of {budget} trials reached"
            return
        result.trials += 1
        if done and done[0].state == TrialState.COMPLETE:
            result.completed += 1
            failures = 0
            continue
        result.failed += 1
        failures += 1
        if failures >= MAX_CONSECUTIVE_FAILURES:
            reason = done[0].user_attrs.get("fail_reason", "unknown") if done else "unknown"
            raise PrunebenchError(f"{failures} trials in a row failed on this worker (last: "
                                  f"{reason}); fix the cause and start the worker again")
