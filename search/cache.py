"""A study's measurement cache: one stored Measurement per (config, profile, machine fingerprint).

The cache lives in the study's own database (table ``prunebench_measurement_cache``, beside
Optuna's tables), keyed by the study's id, so it is shared by every worker of the study, scoped to
its workload (a study is one network on one data set), and deleted with the study by
``prunebench study delete``. A configuration proposed twice (samplers repeat points, retried
trials repeat parameters) is then measured once. Entries are written first-wins: two workers that
measure the same configuration at once keep the first record. On a worker's
:class:`~prunebench.search.retrying.RetryingStorage` its queries are retried across a database
outage like the study's own (a read, and an insert whose repeat is refused as a duplicate).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import optuna
from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    delete,
    func,
    select,
)
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.sql.elements import ColumnElement

from prunebench.harness.measurement import Measurement
from prunebench.search.retrying import RetryingStorage

TABLE_NAME = "prunebench_measurement_cache"

_METADATA = MetaData()
CACHE_TABLE = Table(
    TABLE_NAME, _METADATA,
    Column("study_id", Integer, primary_key=True),
    Column("config_key", String(64), primary_key=True),
    Column("profile", String(255), primary_key=True),
    Column("fingerprint", String(512), primary_key=True),
    Column("trial_number", Integer, nullable=True),
    Column("created_at", DateTime, nullable=False),
    Column("measurement", Text, nullable=False),
)


class MeasurementCache:
    """Measurements of one study, stored in the study's RDB storage.

    ``enabled=False`` (``--no-cache``) makes :meth:`get` always miss; :meth:`put` still records,
    so a re-measurement is available to later trials.
    """

    def __init__(self, storage: optuna.storages.RDBStorage | RetryingStorage,
                 study: optuna.Study, *, enabled: bool = True) -> None:
        self._engine = storage.engine
        self._call = _calls(storage)
        self._study_id = study._study_id
        self.enabled = enabled
        ensure_table(storage)

    def _where(self, config_key: str, profile: str, fingerprint: str) -> ColumnElement[bool]:
        t = CACHE_TABLE.c
        return and_(t.study_id == self._study_id, t.config_key == config_key,
                    t.profile == profile, t.fingerprint == fingerprint)

    def get(self, config_key: str, profile: str, fingerprint: str) -> Measurement | None:
        """The stored measurement for this key, or ``None`` (always ``None`` when disabled)."""
        if not self.enabled:
            return None
        stmt = select(CACHE_TABLE.c.measurement).where(
            self._where(config_key, profile, fingerprint))

        def read() -> Any:
            with self._engine.connect() as conn:
                return conn.execute(stmt).first()

        row = self._call(read)
        return Measurement.from_dict(json.loads(row[0])) if row else None

    def put(self, config_key: str, profile: str, fingerprint: str, measurement: Measurement, *,
            trial_number: int | None = None) -> bool:
        """Store ``measurement`` under this key; ``False`` if an entry was already there."""
        values = {
            "study_id": self._study_id, "config_key": config_key,
            "profile": profile, "fingerprint": fingerprint,
            "trial_number": trial_number, "measurement": measurement.to_json(),
            "created_at": dt.datetime.now(dt.timezone.utc).replace(tzinfo=None),
        }

        def insert() -> None:
            with self._engine.begin() as conn:
                conn.execute(CACHE_TABLE.insert().values(**values))

        try:
            self._call(insert)
        except IntegrityError:  # first wins (also: our own insert, sent again after a drop)
            return False
        return True

    def __len__(self) -> int:
        stmt = select(func.count()).select_from(CACHE_TABLE).where(
            CACHE_TABLE.c.study_id == self._study_id)

        def count() -> int:
            with self._engine.connect() as conn:
                return int(conn.execute(stmt).scalar_one())

        return int(self._call(count))


def _calls(storage: Any) -> Callable[..., Any]:
    """How to run a query on ``storage``: retried on a worker's storage, else once."""
    if isinstance(storage, RetryingStorage):
        return storage.call
    return lambda fn, *args, **kwargs: fn(*args, **kwargs)


def ensure_table(storage: optuna.storages.RDBStorage) -> None:
    """Create the cache table if missing (safe when several workers race to create it)."""
    try:
        _calls(storage)(CACHE_TABLE.create, storage.engine, checkfirst=True)
    except DBAPIError:
        # Another worker created it between our check and our CREATE; PostgreSQL reports a
        # duplicate type/table. Anything else will surface on first use.
        pass


def drop_study_entries(storage: optuna.storages.RDBStorage, study_id: int) -> int:
    """Delete the cache entries of one study (``study delete``); returns how many."""
    ensure_table(storage)
    with storage.engine.begin() as conn:
        result = conn.execute(delete(CACHE_TABLE).where(CACHE_TABLE.c.study_id == study_id))
    return int(result.rowcount or 0)
