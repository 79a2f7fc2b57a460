"""Workers that ride out a database restart: a retrying proxy around a study's RDB storage.

:func:`open_retrying_storage` opens a database storage (:func:`~prunebench.search.storage.
open_storage`) and wraps it in :class:`RetryingStorage`, which every worker uses. A call that
fails because the server went away (connection refused, connection dropped, server shutting down)
is retried with bounded exponential backoff; the first failure of an outage logs one line naming
the (redacted) URL, the first success after it logs one more. An outage longer than ``outage_s``
raises :class:`DatabaseGone`, which the worker turns into one line and exit code 2.

Which calls are retried, and why that is safe:

* reads, and writes that Optuna stores as upserts or whose duplicate it ignores (parameters,
  user/system attributes, intermediate values, study attributes, heartbeats): sending one twice
  leaves the same rows, so they are simply sent again;
* a state change (``tell``, a waiting trial taken, a stale trial failed) may have reached the
  server before the reply was lost. Before sending it again the proxy reads the trial: if it
  already has the asked state and values, and Optuna's time stamp of the change (start for
  RUNNING, completion otherwise; the writer's clock) falls within one of the attempts that
  failed, it was ours and counts as done (another worker's change, made once the server was
  back, falls outside them); otherwise it is sent again, and the storage answers as it would
  have (a finished trial refuses updates, a trial already taken is not taken twice);
* a new trial (``ask``, ``enqueue``, a stale trial's retry) carries a unique token in its system
  attributes, written in the same transaction; before creating again the proxy looks for a trial
  with that token. Optuna retries trial creation itself on errors, so after a disconnect the
  proxy also fails (``fail_reason`` "duplicate ...") any second trial with the same token;
* creating and deleting studies (never done by a worker) are not retried.

The heartbeat thread never raises: a beat that fails is retried for at most one heartbeat
interval and then left to the next beat. After an outage, a worker waits one grace period before
failing other workers' trials as stale, so that their heartbeats (missed while the server was
down) can resume first.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Container, Sequence
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import FrozenTrial, TrialState

from prunebench.search.storage import open_storage, redact

DEFAULT_DB_OUTAGE_S = 300.0  # rides out a restart or a managed failover, yet a lost server ends
TOKEN_ATTR = "prunebench_create_token"
FIRST_DELAY_S = 0.25
MAX_DELAY_S = 5.0
Warn = Callable[[str], None]
Spans = list[tuple[dt.datetime, dt.datetime]]  # (start, failure) of attempts, local clock


class DatabaseGone(BaseException):
    """The database stayed unreachable for longer than the outage limit: the worker stops.

    A ``BaseException`` like ``KeyboardInterrupt``, so that it passes Optuna's ``catch=
    (Exception,)``: a trial cannot be recorded as failed in a database that is not there, and its
    heartbeat stopping lets another worker fail and re-queue it once the server is back.
    """


def is_connection_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it was raised from) says the database connection is gone."""
    from sqlalchemy import exc as sa

    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, (sa.OperationalError, sa.InterfaceError, sa.PendingRollbackError,
                          sa.TimeoutError)):
            return True
        if isinstance(e, sa.DBAPIError) and e.connection_invalidated:
            return True
        # the driver's own (PEP 249) classes, as SQLAlchemy's pool sees them unwrapped
        if any(c.__name__ in ("OperationalError", "InterfaceError") for c in type(e).__mro__):
            return True
        e = e.__cause__  # SQLAlchemy and Optuna wrap with ``raise ... from``
    return False


def reason(exc: BaseException) -> str:
    """The first line of the database driver's message under ``exc``."""
    e: BaseException | None = exc
    while e is not None and getattr(e, "orig", None) is None and e.__cause__ is not None:
        e = e.__cause__
    text = str(getattr(e, "orig", None) or e or exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


class Outage:
    """This process's view of the database being down; shared by the worker and its heartbeat."""

    def __init__(self, where: str, limit_s: float, warn: Warn) -> None:
        self.where, self.limit_s, self.warn = where, limit_s, warn
        self._lock = threading.Lock()
        self.since: float | None = None  # time.monotonic() of the first failure
        self.recovered_at: float | None = None
        self.gone: str | None = None  # the message once given up

    def failed(self, exc: BaseException) -> float:
        """Note a failed call; returns how long (s) the database has been unreachable."""
        with self._lock:
            now = time.monotonic()
            if self.since is None:
                self.since = now
                self.warn(f"prunebench worker: lost the database {self.where} ({reason(exc)}); "
                          f"retrying for up to {self.limit_s:g} s")
            return now - self.since

    def succeeded(self) -> None:
        """Note a call that worked; ends an outage (one line)."""
        if self.since is None:
            return
        with self._lock:
            if self.since is not None:
                now = time.monotonic()
                self.warn(f"prunebench worker: database {self.where} reachable again after "
                          f"{now - self.since:.0f} s; carrying on")
                self.since, self.recovered_at = None, now

    def recovered_within(self, seconds: float) -> bool:
        """Whether an outage ended less than ``seconds`` ago (or is still going on)."""
        if self.since is not None:
            return True
        return self.recovered_at is not None and time.monotonic() - self.recovered_at < seconds


class _PoolLines(logging.Filter):
    """SQLAlchemy's pool logs a failed reset or close of a connection with a traceback: for a
    connection lost in an outage (whose lines the outage says) nothing, else one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None:
            return True
        if is_connection_error(exc):
            return False
        record.msg, record.args = f"{record.getMessage()} ({type(exc).__name__}: " \
                                  f"{reason(exc)})", None
        record.exc_info, record.exc_text = None, None
        return True


_POOL_LINES = _PoolLines()


class _OutOfBudget(Exception):
    """A call with its own time budget (a heartbeat) ran out of it."""


class RetryingStorage(BaseStorage, BaseHeartbeat):
    """An Optuna storage that retries calls across a database outage (see the module docstring).

    ``inner`` is what Optuna would use (the cached wrapper of ``rdb``); ``rdb`` is the RDB storage
    itself, read directly when a write's fate must be checked. ``engine`` is ``rdb``'s engine, and
    :meth:`call` retries any callable the same way (the measurement cache uses both).
    """

    def __init__(self, inner: BaseStorage, rdb: optuna.storages.RDBStorage, *, url: str,
                 outage_s: float = DEFAULT_DB_OUTAGE_S, warn: Warn | None = None) -> None:
        from sqlalchemy import event

        self._inner, self._rdb, self.url = inner, rdb, url
        self.outage = Outage(repr(redact(url)), outage_s, warn or _stderr)
        interval = rdb.get_heartbeat_interval()
        self._grace_s = float(rdb.grace_period or 2 * interval) if interval else 0.0
        # MySQL may store whole seconds: a stamp can read up to 1 s before its attempt began
        self._slack = dt.timedelta(seconds=1 if rdb.engine.name == "mysql" else 0)
        self._errors = threading.local()  # per thread: connection errors seen by the engine
        event.listen(rdb.engine, "handle_error", self._on_engine_error)
        pool_log = logging.getLogger(getattr(rdb.engine.pool.logger, "name", "sqlalchemy.pool"))
        if _POOL_LINES not in pool_log.filters:
            pool_log.addFilter(_POOL_LINES)

    @property
    def engine(self) -> Any:
        """The SQLAlchemy engine of the database."""
        return self._rdb.engine

    @property
    def gone(self) -> bool:
        """Whether the proxy gave up (every call now raises :class:`DatabaseGone`)."""
        return self.outage.gone is not None

    def _on_engine_error(self, context: Any) -> None:
        from sqlalchemy import exc as sa

        if context.is_disconnect or isinstance(context.sqlalchemy_exception,
                                               (sa.OperationalError, sa.InterfaceError)):
            self._errors.n = getattr(self._errors, "n", 0) + 1

    def call(self, fn: Callable[..., Any], *args: Any,
             landed: Callable[[Spans], tuple[bool, Any]] | None = None,
             budget_s: float | None = None, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)``, retried while the database is unreachable.

        ``landed(spans)`` (for writes that must not be repeated) is asked before every new
        attempt after a failed one: ``(True, result)`` when one of the failed attempts, each
        ``(start, failure)`` in ``spans`` (local clock), took effect after all. ``budget_s``
        bounds this call's retrying (then :class:`_OutOfBudget`); without it, an outage past the
        limit raises :class:`DatabaseGone`.
        """
        delay, started, spans = FIRST_DELAY_S, time.monotonic(), []
        while True:
            if self.outage.gone is not None:
                raise DatabaseGone(self.outage.gone)
            begun = dt.datetime.now()
            try:
                if spans and landed is not None:
                    done, result = landed(spans)
                    if done:
                        self.outage.succeeded()
                        return result
                result = fn(*args, **kwargs)
            except Exception as exc:
                if not is_connection_error(exc):
                    self.outage.succeeded()  # the server answered, if only to refuse
                    raise
                spans.append((begun, dt.datetime.now()))
                down_s = self.outage.failed(exc)
                if budget_s is not None:
                    if time.monotonic() - started >= budget_s:
                        raise _OutOfBudget from None
                elif down_s >= self.outage.limit_s:
                    self._give_up(exc, down_s)
                left = (budget_s - (time.monotonic() - started) if budget_s is not None
                        else self.outage.limit_s - down_s)
                time.sleep(max(0.0, min(delay * (1 + 0.25 * random.random()), left)))
                delay = min(2 * delay, MAX_DELAY_S)
                self._rdb.remove_session()  # this thread's session may hold a dead connection
            else:
                self.outage.succeeded()
                return result

    def _give_up(self, exc: BaseException, down_s: float) -> None:
        from sqlalchemy.engine import make_url

        parsed = make_url(self.url)
        where = f"{parsed.host or 'localhost'}:{parsed.port or 'default port'}"
        self.outage.gone = (
            f"the database at {where} has been unreachable for {down_s:.0f} s ({reason(exc)}); "
            f"start it or fix host/port in {redact(self.url)!r}, then start the worker again "
            "(its running trial is re-queued once the server is back), or let workers wait "
            "longer with --db-outage-s")
        raise DatabaseGone(self.outage.gone) from None

    # -- the state changes whose fate is checked before they are sent again --------------------

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        token = uuid.uuid4().hex

        def attempt() -> int:
            return self._inner.create_new_trial(study_id, _tagged(template_trial, token))

        def landed(_spans: Spans) -> tuple[bool, Any]:
            mine = self._with_token(study_id, token)
            return (True, mine[0]._trial_id) if mine else (False, None)

        errors = getattr(self._errors, "n", 0)
        trial_id = self.call(attempt, landed=landed)
        if getattr(self._errors, "n", 0) != errors:  # Optuna may have created it twice
            for twin in self.call(self._with_token, study_id, token):
                if twin._trial_id != trial_id and not twin.state.is_finished():
                    self._fail_twin(twin, trial_id)
        return trial_id

    def _with_token(self, study_id: int, token: str) -> list[FrozenTrial]:
        # through the cached storage, so that a trial found here is known to it as well
        return [t for t in self._inner.get_all_trials(study_id, deepcopy=False)
                if t.system_attrs.get(TOKEN_ATTR) == token]

    def _fail_twin(self, twin: FrozenTrial, kept_id: int) -> None:
        kept = self.call(self._rdb.get_trial, kept_id).number
        self.call(self._inner.set_trial_user_attr, twin._trial_id, "fail_reason",
                  f"duplicate of trial {kept}, created twice across a database outage")
        self.set_trial_state_values(twin._trial_id, TrialState.FAIL)

    def set_trial_state_values(self, trial_id: int, state: TrialState,
                               values: Sequence[float] | None = None) -> bool:
        def landed(spans: Spans) -> tuple[bool, Any]:
            t = self._rdb.get_trial(trial_id)  # the database's copy, never a cached one
            # Optuna stamps the change with the writer's clock inside the transaction: ours
            # falls within one of our failed attempts (another worker's, after an outage, not)
            stamp = t.datetime_start if state == TrialState.RUNNING else t.datetime_complete
            ours = (t.state == state and stamp is not None
                    and any(a - self._slack <= stamp <= b for a, b in spans)
                    and (values is None or t.values == [float(v) for v in values]))
            return ours, True

        return self.call(self._inner.set_trial_state_values, trial_id, state, values,
                         landed=landed)

    # -- heartbeats ------------------------------------------------------------------------------

    def record_heartbeat(self, trial_id: int) -> None:
        """Beat once; never raises (a beat missed in an outage is retried, then left)."""
        try:
            self.call(self._inner.record_heartbeat, trial_id,
                      budget_s=float(self.get_heartbeat_interval() or 1))
        except (_OutOfBudget, DatabaseGone):
            pass
        except Exception as exc:  # the thread must live on; say why this beat was lost
            self.outage.warn(f"prunebench worker: heartbeat of trial id {trial_id} not "
                             f"recorded ({type(exc).__name__}: {reason(exc)})")

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        ids = self.call(self._inner._get_stale_trial_ids, study_id)
        # other workers' beats were missed in the outage too: give them one grace period
        return [] if self.outage.recovered_within(self._grace_s) else ids

    def get_heartbeat_interval(self) -> int | None:
        return self._rdb.get_heartbeat_interval()

    def get_heartbeat_stale_trial_callback(self) -> Callable[[optuna.Study, FrozenTrial],
                                                             None] | None:
        return self._rdb.get_heartbeat_stale_trial_callback()

    # -- reads and idempotent writes: sent again as they are -------------------------------------

    def get_study_id_from_name(self, study_name: str) -> int:
        return self.call(self._inner.get_study_id_from_name, study_name)

    def get_study_name_from_id(self, study_id: int) -> str:
        return self.call(self._inner.get_study_name_from_id, study_id)

    def get_study_directions(self, study_id: int) -> list[optuna.study.StudyDirection]:
        return self.call(self._inner.get_study_directions, study_id)

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        return self.call(self._inner.get_study_user_attrs, study_id)

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        return self.call(self._inner.get_study_system_attrs, study_id)

    def get_all_studies(self) -> list[optuna.study.FrozenStudy]:
        return self.call(self._inner.get_all_studies)

    def get_trial(self, trial_id: int) -> FrozenTrial:
        return self.call(self._inner.get_trial, trial_id)

    def get_all_trials(self, study_id: int, deepcopy: bool = True,
                       states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        return self.call(self._inner.get_all_trials, study_id, deepcopy=deepcopy, states=states)

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        return self.call(self._inner.get_trial_id_from_study_id_trial_number, study_id,
                         trial_number)

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        self.call(self._inner.set_study_user_attr, study_id, key, value)

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        self.call(self._inner.set_study_system_attr, study_id, key, value)

    def set_trial_param(self, trial_id: int, param_name: str, param_value_internal: float,
                        distribution: optuna.distributions.BaseDistribution) -> None:
        self.call(self._inner.set_trial_param, trial_id, param_name, param_value_internal,
                  distribution)

    def set_trial_intermediate_value(self, trial_id: int, step: int,
                                     intermediate_value: float) -> None:
        self.call(self._inner.set_trial_intermediate_value, trial_id, step, intermediate_value)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self.call(self._inner.set_trial_user_attr, trial_id, key, value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self.call(self._inner.set_trial_system_attr, trial_id, key, value)

    # -- not retried: a second attempt after a lost reply would report wrongly -------------------

    def create_new_study(self, directions: Sequence[optuna.study.StudyDirection],
                         study_name: str | None = None) -> int:
        return self._inner.create_new_study(directions, study_name)

    def delete_study(self, study_id: int) -> None:
        self._inner.delete_study(study_id)

    def remove_session(self) -> None:
        self._inner.remove_session()


def _tagged(template: FrozenTrial | None, token: str) -> FrozenTrial:
    """``template`` (or a plain RUNNING trial, what ``ask`` creates) carrying ``token``."""
    if template is None:
        return FrozenTrial(number=-1, state=TrialState.RUNNING, value=None, values=None,
                           datetime_start=dt.datetime.now(), datetime_complete=None, params={},
                           distributions={}, user_attrs={}, system_attrs={TOKEN_ATTR: token},
                           intermediate_values={}, trial_id=-1)
    import copy

    tagged = copy.copy(template)
    tagged.system_attrs = {**template.system_attrs, TOKEN_ATTR: token}
    return tagged


def _stderr(message: str) -> None:
    import sys

    print(message, file=sys.stderr, flush=True)


def open_retrying_storage(url: str, *, outage_s: float = DEFAULT_DB_OUTAGE_S,
                          warn: Warn | None = None, **kwargs: Any) -> RetryingStorage:
    """Open database ``url`` like :func:`open_storage` (``kwargs``: heartbeat settings) and wrap
    it in a :class:`RetryingStorage` that waits up to ``outage_s`` seconds for a lost server.

    Connecting must work now: a server that is not there at start is a one-line
    :class:`~prunebench.harness.errors.PrunebenchError`, as without retries.
    """
    from prunebench.harness.errors import PrunebenchError

    if not outage_s >= 0:
        raise PrunebenchError(f"--db-outage-s {outage_s!r} must be 0 or more seconds; use e.g. "
                              f"{DEFAULT_DB_OUTAGE_S:g}")
    rdb = open_storage(url, database_only=True, **kwargs)
    assert isinstance(rdb, optuna.storages.RDBStorage)
    return RetryingStorage(optuna.storages._CachedStorage(rdb), rdb, url=url, outage_s=outage_s,
                           warn=warn)
