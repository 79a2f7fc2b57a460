"""Storage URLs, connection errors, the stale-trial retry, the timing lock and the cache.

Everything runs against the real PostgreSQL server of ``conftest.py``.
"""

from __future__ import annotations

import subprocess
import sys
import time

import optuna
import pytest

from prunebench.harness.errors import PrunebenchError
from prunebench.harness.measurement import Measurement
from prunebench.search import cache as cache_mod
from prunebench.search import distributed as dist
from prunebench.search import storage as st


@pytest.mark.parametrize("url, fragment", [
    ("not a url", "not a database URL"),
    ("redis://localhost:6379/0", "redis"),
    ("postgresql://u:secret@localhost:5432", "names no database"),
])
def test_bad_urls_are_rejected_without_leaking_passwords(url: str, fragment: str) -> None:
    with pytest.raises(PrunebenchError, match=fragment) as info:
        st.normalise_url(url)
    assert "secret" not in str(info.value)


def test_postgres_scheme_alias_is_accepted() -> None:
    assert st.normalise_url("postgres://u:p@h/db") == "postgresql+psycopg2://u:p@h/db"


def test_bare_postgresql_url_uses_the_shipped_psycopg2_driver() -> None:
    url = st.normalise_url("postgresql://u:secret@db.example:5432/studies")
    assert url == "postgresql+psycopg2://u:secret@db.example:5432/studies"
    keep = "postgresql+psycopg2://u:p@h/db"
    assert st.normalise_url(keep) == keep


def test_wrong_password_unreachable_and_missing_database(postgres_server) -> None:  # noqa: ANN001
    with pytest.raises(PrunebenchError, match="wrong password") as info:
        st.open_storage(postgres_server.url("postgres", password="nope-secret"))
    assert "nope-secret" not in str(info.value)
    closed = postgres_server.url("postgres").replace(f":{postgres_server.port}/", ":1/")
    with pytest.raises(PrunebenchError, match="cannot reach"):
        st.open_storage(closed)
    with pytest.raises(PrunebenchError, match="does not exist"):
        st.open_storage(postgres_server.url("no_such_db"))


def test_missing_study_names_existing_ones(pg_url: str) -> None:
    storage = st.open_storage(pg_url)
    optuna.create_study(storage=storage, study_name="present")
    with pytest.raises(PrunebenchError, match="'absent' does not exist.*present"):
        st.load_study(storage, "absent")


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_stale_trial_is_failed_and_requeued(pg_url: str) -> None:
    storage = st.open_storage(pg_url, heartbeat_interval_s=1, grace_period_s=2)
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()
    trial.suggest_float("x", 0.0, 1.0)
    storage.record_heartbeat(trial._trial_id)  # then the "worker" dies: no more beats
    time.sleep(2.5)
    optuna.storages.fail_stale_trials(study)
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert states == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.WAITING]
    retry = study.get_trials(deepcopy=False)[1]
    assert retry.params == trial.params
    assert optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(retry) == 0


def test_grace_period_must_exceed_interval(pg_url: str) -> None:
    with pytest.raises(PrunebenchError, match="grace period"):
        st.open_storage(pg_url, heartbeat_interval_s=5, grace_period_s=5)


def test_timing_lock_excludes_another_process(tmp_path) -> None:  # noqa: ANN001
    probe = ("import sys, filelock; from prunebench.search.distributed import timing_lock\n"
             "try:\n    timing_lock(sys.argv[1], timeout_s=0.2).acquire()\n"
             "except filelock.Timeout:\n    sys.exit(3)\n")
    with dist.timing_lock(tmp_path):
        held = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], check=False)
    free = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], check=False)
    assert (held.returncode, free.returncode) == (3, 0)


def test_lock_dir_must_exist(tmp_path) -> None:  # noqa: ANN001
    with pytest.raises(PrunebenchError, match="lock directory"):
        dist.lock_path(tmp_path / "missing")


def _measurement(key: str, latency: float) -> Measurement:
    return Measurement(model="test_convnet", dataset="digits", method="l1", config={},
                       config_key=key, profile="p", fingerprint="fp", device="cpu",
                       dtype="float32", batch_size=1, threads=1, torch_version="x",
                       latency_p50_ms=latency, latency_samples_ms=(latency, latency))


def test_cache_first_wins_disabled_and_deleted_with_study(pg_url: str) -> None:
    storage = st.open_storage(pg_url)
    study = optuna.create_study(storage=storage, study_name="c")
    other = optuna.create_study(storage=storage, study_name="other")
    cache = cache_mod.MeasurementCache(storage, study)
    assert cache.get("k1", "p", "fp") is None
    assert cache.put("k1", "p", "fp", _measurement("k1", 1.5), trial_number=0)
    assert not cache.put("k1", "p", "fp", _measurement("k1", 9.9), trial_number=3)
    hit = cache.get("k1", "p", "fp")
    assert hit is not None and hit.latency_p50_ms == 1.5 and hit.latency_samples_ms == (1.5, 1.5)
    assert cache.get("k1", "p", "other-machine") is None
    assert cache_mod.MeasurementCache(storage, other).get("k1", "p", "fp") is None
    assert cache_mod.MeasurementCache(storage, study, enabled=False).get("k1", "p", "fp") is None
    assert cache_mod.drop_study_entries(storage, study._study_id) == 1
    assert len(cache) == 0
