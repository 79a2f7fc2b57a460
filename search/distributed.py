"""Many workers, one study: storage URLs, crash-safe RDB storages, the per-machine timing lock.

Workers on one or many machines share one Optuna study in a relational database (PostgreSQL for
real clusters; MySQL and SQLite also work). Crash safety comes from Optuna itself: each running
trial records a heartbeat every ``heartbeat_interval_s``; a trial whose worker died (SIGKILL, node
lost, preemption) stops beating, and the next worker that starts a trial marks it failed after
``grace_period_s`` and re-queues its parameters (``RetryHeartbeatStaleTrialCallback``, called by
Optuna 5 as the RDB storage's ``heartbeat_stale_trial_callback``; Optuna < 4.9 named the argument
``failed_trial_callback``).

Measurements on one machine are serialised by a file lock held around timing only
(:func:`timing_lock`), so two workers on one host never time at the same time while their
accuracy evaluation, pruning and fine-tuning still overlap.
"""

from __future__ import annotations

import os
import socket
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from filelock import FileLock

from prunebench.harness.errors import PrunebenchError

if TYPE_CHECKING:
    import pandas as pd

    from prunebench.search.runs.folders import RunData

DIALECTS = ("postgresql", "mysql", "sqlite")
DEFAULT_HEARTBEAT_S = 30
DEFAULT_MAX_RETRY = 3
LOCK_ENV = "PRUNEBENCH_LOCK_DIR"
LOCK_NAME = "prunebench-timing.lock"
EXAMPLE_URL = "postgresql://USER:PASSWORD@HOST:5432/DBNAME"


def redact(url: str) -> str:
    """The URL with its password replaced by ``***`` (safe for messages and logs)."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL: never echo what may be a secret
        return "<unparsable URL>"


def normalise_url(url: str) -> str:
    """Validate a storage URL's form (no connection yet); ``postgres://`` becomes ``postgresql://``
    and a bare ``postgresql://`` uses the psycopg2 driver.

    Raises :class:`PrunebenchError` naming the URL (password hidden) and an example of a good one.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise PrunebenchError(f"storage URL {url.split('@')[-1]!r} is not a database URL; use "
                              f"e.g. {EXAMPLE_URL} or sqlite:///study.db") from None
    backend = parsed.get_backend_name()
    if backend not in DIALECTS:
        raise PrunebenchError(f"storage URL {redact(url)!r} uses {backend!r}; many workers need "
                              f"one of {', '.join(DIALECTS)}, e.g. {EXAMPLE_URL}")
    if backend == "postgresql" and parsed.drivername == "postgresql":
        # SQLAlchemy >= 2.1 picks psycopg 3 for a bare postgresql://; prunebench ships psycopg2.
        url = parsed.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
    if backend != "sqlite" and not parsed.database:
        raise PrunebenchError(f"storage URL {redact(url)!r} names no database; append one, e.g. "
                              f"{EXAMPLE_URL}")
    return url


def _engine_kwargs(url: str) -> dict[str, Any]:
    from sqlalchemy.engine import make_url

    backend = make_url(url).get_backend_name()
    if backend == "postgresql":
        return {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}}
    if backend == "mysql":
        return {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}}
    return {"connect_args": {"timeout": 30}}


def explain_connection_error(url: str, exc: BaseException) -> str:
    """One line saying why connecting to ``url`` failed and what to do."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    where = f"{parsed.host or 'localhost'}:{parsed.port or 'default port'}"
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0] if str(exc) else ""
    low = text.lower()
    if "password authentication failed" in low or "access denied" in low:
        return (f"the database at {where} rejected user {parsed.username!r} (wrong password?); "
                f"fix the user/password in the storage URL {redact(url)!r}")
    if "does not exist" in low and "database" in low:
        return (f"database {parsed.database!r} does not exist on {where}; create it (e.g. "
                f"`createdb -h {parsed.host} -U {parsed.username} {parsed.database}`)")
    if any(s in low for s in ("connection refused", "could not connect", "timeout expired",
                              "could not translate host", "name or service not known",
                              "no route to host", "can't connect")):
        return (f"cannot reach the database server at {where} ({text}); start it or fix host/"
                f"port in {redact(url)!r}")
    if "unable to open database file" in low:
        return f"cannot open SQLite file of {redact(url)!r}; check that its directory exists"
    return f"cannot open storage {redact(url)!r}: {text or type(exc).__name__}"


def open_storage(url: str, *, heartbeat_interval_s: int | None = None,
                 grace_period_s: int | None = None,
                 max_retry: int | None = DEFAULT_MAX_RETRY) -> optuna.storages.RDBStorage:
    """Connect to an RDB storage; with a heartbeat, stale trials are failed and re-queued.

    ``heartbeat_interval_s`` (seconds, >= 1) enables Optuna's heartbeat; ``grace_period_s``
    defaults to twice the interval; a stale trial is retried at most ``max_retry`` times
    (``None``: forever). Connection problems raise one-line :class:`PrunebenchError`.
    """
    from sqlalchemy.exc import SQLAlchemyError

    url = normalise_url(url)
    hb: dict[str, Any] = {}
    if heartbeat_interval_s is not None:
        if heartbeat_interval_s < 1:
            raise PrunebenchError(f"heartbeat interval {heartbeat_interval_s!r} s is below 1; "
                                  f"use e.g. {DEFAULT_HEARTBEAT_S}")
        grace = grace_period_s if grace_period_s is not None else 2 * heartbeat_interval_s
        if grace <= heartbeat_interval_s:
            raise PrunebenchError(f"grace period {grace!r} s must exceed the heartbeat interval "
                                  f"{heartbeat_interval_s} s; use e.g. {2 * heartbeat_interval_s}")
        hb = {"heartbeat_interval": heartbeat_interval_s, "grace_period": grace}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if hb:
                hb["heartbeat_stale_trial_callback"] = \
                    optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
            return optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(url), **hb)
    except SQLAlchemyError as exc:
        raise PrunebenchError(explain_connection_error(url, exc)) from None
    except ImportError as exc:
        raise PrunebenchError(f"the driver for {redact(url)!r} is not installed ({exc}); "
                              "install psycopg2-binary for PostgreSQL") from None


def load_study(storage: optuna.storages.BaseStorage, name: str, *,
               sampler: optuna.samplers.BaseSampler | None = None,
               pruner: optuna.pruners.BasePruner | None = None) -> optuna.Study:
    """Load an existing study; a missing one names the studies that do exist."""
    try:
        return optuna.load_study(study_name=name, storage=storage, sampler=sampler,
                                 pruner=pruner)
    except KeyError:
        names = optuna.get_all_study_names(storage)
        raise PrunebenchError(
            f"study {name!r} does not exist in this storage (it has: "
            f"{', '.join(names[:10]) or 'none'}); create it with `prunebench study create "
            f"--storage URL --study {name} ...` or `prunebench search --storage URL --study "
            f"{name} ...`") from None


# --------------------------------------------------------------------------- timing lock
def lock_path(lock_dir: str | Path | None = None) -> Path:
    """The per-machine timing lock file: ``$PRUNEBENCH_LOCK_DIR`` or the system temp dir.

    The directory must be local to the machine (not a shared file system), so that workers on
    different machines never wait for one another.
    """
    base = Path(lock_dir or os.environ.get(LOCK_ENV) or tempfile.gettempdir()).expanduser()
    if not base.is_dir():
        raise PrunebenchError(f"lock directory {str(base)!r} does not exist; create it or set "
                              f"${LOCK_ENV} to a local directory")
    return base / LOCK_NAME


def timing_lock(lock_dir: str | Path | None = None, timeout_s: float = -1) -> FileLock:
    """A file lock every worker on this machine takes around timing (latency, energy) only.

    Use as a context manager (``with timing_lock(): ...``); pass it as ``evaluate(...,
    timing_lock=...)``. ``timeout_s < 0`` waits forever. World-writable so workers of different
    users share it.
    """
    return FileLock(str(lock_path(lock_dir)), timeout=timeout_s, mode=0o666)


def worker_identity() -> dict[str, Any]:
    """Who runs a trial: host name and process id (stored in every trial's user attrs)."""
    host = socket.gethostname()
    pid = os.getpid()
    return {"worker_host": host, "worker_pid": pid, "worker_id": f"{host}:{pid}"}


# --------------------------------------------------------------------------- reading back
def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per complete trial: the stored Measurement row plus trial and worker columns.

    The columns follow ``docs/CONTRACTS.md`` (``run_kind = "search"``, ``label = "trial N"``,
    ``trial_number``), plus ``feasible`` (every constraint <= 0), ``worker_id`` and
    ``cache_hit``, so ``prunebench.search.report`` can use a study in a storage like a run folder.
    """
    import pandas as pd
    from optuna.trial import TrialState

    rows = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        row = {k: v for k, v in t.user_attrs.items() if not k.startswith("val_accuracy_epoch_")}
        row.update(run_kind="search", label=f"trial {t.number}", trial_number=t.number,
                   feasible=all(v <= 0.0 for v in t.constraints.values()))
        row.setdefault("cache_hit", False)
        rows.append(row)
    return pd.DataFrame(rows)


def storage_run(url: str, study_name: str) -> RunData:
    """A :class:`~prunebench.search.runs.folders.RunData` read from a study in a storage (for
    ``prunebench report``)."""
    from prunebench.search.runs.folders import run_from_frame

    study = load_study(open_storage(url), study_name)
    frame = trials_frame(study)
    if frame.empty:
        raise PrunebenchError(f"study {study_name!r} has no complete trials yet; run workers "
                              "first (`prunebench worker --storage URL --study NAME`)")
    config = {"storage": redact(url), "study": study_name, **study.user_attrs}
    return run_from_frame(study_name, frame, config=config)
