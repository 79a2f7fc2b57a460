"""A study's measurement cache: one stored Measurement per (config, profile, machine fingerprint).

The cache lives in the study's own database (table ``prunebench_measurement_cache``, beside
Optuna's tables), keyed by the study's id, so it is shared by every worker of the study, scoped to
its workload (a study is one network on one data set), and deleted with the study by
``prunebench study delete``. A configuration proposed twice (samplers repeat points, retried
trials repeat parameters) is then measured once. Entries are written first-wins: two workers that
measure the same configuration at once keep the first record.
"""

from __future__ import annotations

import datetime as dt
import json

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

    def __init__(self, storage: optuna.storages.RDBStorage, study: optuna.Study, *,
                 enabled: bool = True) -> None:
        self._engine = storage.engine
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
        with self._engine.connect() as conn:
            row = conn.execute(stmt).first()
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
        try:
            with self._engine.begin() as conn:
                conn.execute(CACHE_TABLE.insert().values(**values))
        except IntegrityError:
            return False
        return True

    def __len__(self) -> int:
        stmt = select(func.count()).select_from(CACHE_TABLE).where(
            CACHE_TABLE.c.study_id == self._study_id)
        with self._engine.connect() as conn:
            return int(conn.execute(stmt).scalar_one())


def ensure_table(storage: optuna.storages.RDBStorage) -> None:
    """Create the cache table if missing (safe when several workers race to create it)."""
    try:
        CACHE_TABLE.create(storage.engine, checkfirst=True)
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
