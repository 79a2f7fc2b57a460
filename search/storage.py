"""Where studies live: a journal file by default (one run folder), a database for many workers.

:func:`storage_url` turns what a user gives (nothing, a journal file path, a database URL) into
one URL; :func:`open_storage` opens it. A run folder's default storage is its ``study.journal``
(Optuna's journal file: no server, safe to resume). Workers on one or many machines share one
study in a relational database (PostgreSQL for real clusters; MySQL and SQLite also work).

Crash safety comes from Optuna itself: each running trial of a database storage records a
heartbeat every ``heartbeat_interval_s``; a trial whose worker died (SIGKILL, node lost,
preemption) stops beating, and the next worker that starts a trial marks it failed after
``grace_period_s`` and re-queues its parameters (``RetryHeartbeatStaleTrialCallback``, called by
Optuna 5 as the RDB storage's ``heartbeat_stale_trial_callback``; Optuna < 4.9 named the argument
``failed_trial_callback``). Journal files have no heartbeat: a local search's dead trials are
failed and re-queued on resume, and a journal cut by a crash is repaired before it is opened
(:mod:`prunebench.search.journal`).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import optuna

from prunebench.harness.errors import PrunebenchError
from prunebench.search.journal import repair_journal

DEFAULT_STORAGE_FILE = "study.journal"  # a run folder's storage unless --storage names another
DIALECTS = ("postgresql", "mysql", "sqlite")
DEFAULT_HEARTBEAT_S = 30
DEFAULT_MAX_RETRY = 3
EXAMPLE_URL = "postgresql://USER:PASSWORD@HOST:5432/DBNAME"
_RDB_PREFIXES = ("sqlite:", "postgresql", "postgres:", "mysql")


def storage_url(storage: str | Path | None, run_dir: str | Path | None = None) -> str:
    """The storage a run uses: ``storage`` as given, or ``run_dir``'s journal file.

    Database URLs (``sqlite:///...``, ``postgresql://...``, ``mysql://...``) go to Optuna's
    RDB storage; anything else is a journal file path (``journal:`` prefix optional).
    """
    if storage is None:
        if run_dir is None:
            raise PrunebenchError("no storage given; pass a storage URL or a run folder")
        return f"journal:{Path(run_dir) / DEFAULT_STORAGE_FILE}"
    storage = str(storage)
    if storage.startswith(_RDB_PREFIXES) or storage.startswith("journal:"):
        return storage
    if "://" in storage:
        raise PrunebenchError(f"storage {storage.split('@')[-1]!r} is not a known storage URL; "
                              "use sqlite:///study.db, postgresql://USER:PW@HOST/DB or a "
                              "journal file path")
    return f"journal:{Path(storage).expanduser()}"


def redact(url: str) -> str:
    """The URL with its password replaced by ``***`` (safe for messages, logs, config.json).

    Journal files and other paths hold no secret and come back unchanged.
    """
    if url.startswith("journal:") or "://" not in url:
        return url
    scheme, _, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")  # the last '@': a password may hold any character
    if at and ":" in userinfo:
        return f"{scheme}://{userinfo.partition(':')[0]}:***@{host}"
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL: never echo what may be a secret
        return "<unparsable URL>"


def normalise_url(url: str) -> str:
    """Validate a database URL's form (no connection yet); ``postgres://`` becomes
    ``postgresql://`` and a bare ``postgresql://`` uses the psycopg2 driver.

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
    if parsed.host and "@" in parsed.host:  # SQLAlchemy split at the password's own '@'
        raise PrunebenchError(f"storage URL {redact(url)!r} has an '@' in its user or password; "
                              "percent-encode it as %40 (e.g. urllib.parse.quote(password, "
                              "safe=''))")
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


def open_storage(url: str | Path | None = None, *, run_dir: str | Path | None = None,
                 database_only: bool = False, heartbeat_interval_s: int | None = None,
                 grace_period_s: int | None = None,
                 max_retry: int | None = DEFAULT_MAX_RETRY) -> optuna.storages.BaseStorage:
    """Open a storage: ``url`` (see :func:`storage_url`) or, without one, ``run_dir``'s journal.

    ``database_only`` (many workers): ``url`` must be a database URL; a journal path is refused.
    ``heartbeat_interval_s`` (seconds, >= 1; database storages only, journals have none) enables
    Optuna's heartbeat, so stale trials are failed and re-queued; ``grace_period_s`` defaults to
    twice the interval; a stale trial is retried at most ``max_retry`` times (``None``: forever).
    Connection problems raise one-line :class:`PrunebenchError`.
    """
    url = str(url) if database_only and url is not None else storage_url(url, run_dir)
    if not database_only and url.startswith("journal:"):
        return _open_journal(Path(url[len("journal:"):]))
    return _open_database(url, heartbeat_interval_s=heartbeat_interval_s,
                          grace_period_s=grace_period_s, max_retry=max_retry)


def _open_journal(path: Path) -> optuna.storages.BaseStorage:
    from optuna.storages.journal import JournalFileBackend

    if not path.parent.is_dir():
        raise PrunebenchError(f"journal file directory {str(path.parent)!r} does not exist; "
                              "create it or give another --storage")
    _check_journal_writable(path)
    repair_journal(path)  # a write cut short by a crash would make the next append fatal
    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def _check_journal_writable(path: Path) -> None:
    """A journal file that can be appended to (a folder or a read-only file or folder is named
    here, before any work, instead of failing at the first trial)."""
    if path.is_dir():
        raise PrunebenchError(f"journal file {str(path)!r} is a folder; give a file path as "
                              "--storage (e.g. study.journal)")
    existed = path.exists()
    try:
        with open(path, "ab"):
            pass
    except OSError as exc:
        raise PrunebenchError(f"journal file {str(path)!r} cannot be written ({exc.strerror}); "
                              "make it writable or give another --storage") from None
    if not existed:
        path.unlink(missing_ok=True)  # Optuna creates it when it opens the journal


def _engine_kwargs(url: str) -> dict[str, Any]:
    from sqlalchemy.engine import make_url

    backend = make_url(url).get_backend_name()
    if backend in ("postgresql", "mysql"):
        return {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}}
    return {"connect_args": {"timeout": 30}}


def _open_database(url: str, *, heartbeat_interval_s: int | None, grace_period_s: int | None,
                   max_retry: int | None) -> optuna.storages.RDBStorage:
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
