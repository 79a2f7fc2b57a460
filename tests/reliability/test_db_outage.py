"""Workers ride out a PostgreSQL restart, and give up in one line when it stays down.

A PostgreSQL server of this module's own (not the session's, which other tests share) is stopped
with ``pg_ctl stop -m fast`` (clients are cut off, as in a restart) while real ``prunebench
worker`` processes are in the middle of trials, with heartbeats due every second, and started
again on the same port and data directory. A trial times for a few seconds, so trials end (their
``tell``) and begin (``ask``) while the server is down.

A reply lost after the server acted on the call (the case a retry must not repeat) cannot be
timed from outside, so those tests make the storage lose one reply on purpose.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from prunebench.search.cli import main
from prunebench.search.retrying import TOKEN_ATTR, RetryingStorage, open_retrying_storage
from prunebench.search.storage import load_study, open_storage
from tests.search.conftest import LocalPostgres, pg_bindir_or_skip

REPO = Path(__file__).resolve().parents[2]
HEARTBEAT = ["--heartbeat-interval", "1", "--grace-period", "4"]
TRIALS = 3
LOST, BACK = "lost the database", "reachable again"
PROFILE = """\
name = "pb-outage"
version = 1
description = "a second or more of timing per network, for the outage tests"
device = "cpu"
threads = 1
batch_sizes = [1]
dtype = "float32"
memory_format = "contiguous"
[timing]
warmup_iters = 1
min_samples = 3
min_time_s = 1.0
max_time_s = 1.5
target_rel_ci = 0.5
[energy]
meter = "none"
watts_per_busy_core = 7.0
idle_watts = 40.0
source = "test"
[fingerprint]
cpu_model = "*"
gpu_name = "*"
"""


@pytest.fixture(scope="module")
def pg() -> Iterator[LocalPostgres]:
    """A server of this module's own, which the tests stop and start again."""
    server = LocalPostgres(pg_bindir_or_skip())
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture()
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Profile, lock dir and an untrained test_convnet checkpoint, for the test and workers."""
    from prunebench.harness.models import create_model
    from prunebench.harness.train import save_checkpoint

    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "pb-outage.toml").write_text(PROFILE)
    (tmp_path / "lock").mkdir()
    ckpt = tmp_path / "convnet.pt"
    save_checkpoint(create_model("test_convnet", 10, 1), ckpt,
                    {"model": "test_convnet", "num_classes": 10, "in_channels": 1})
    out = {"PRUNEBENCH_PROFILES": str(tmp_path / "profiles"),
           "PRUNEBENCH_LOCK_DIR": str(tmp_path / "lock"), "OMP_NUM_THREADS": "1"}
    for key, value in out.items():
        monkeypatch.setenv(key, value)
    return {**out, "CHECKPOINT": str(ckpt)}


def create_study(url: str, env: dict[str, str]) -> optuna.Study:
    assert main(["study", "create", "--storage", url, "--study", "outage", "--model",
                 "test_convnet", "--dataset", "digits", "--checkpoint", env["CHECKPOINT"],
                 "--profile", "pb-outage", "--sampler", "random", "--max-ratio", "0.5",
                 "--ratio-step", "0.25", "--trials", str(TRIALS),
                 "--latency-anchor-ms", "5"]) == 0  # no dense timing before the first trial
    return load_study(open_storage(url), "outage")


def worker(url: str, *extra: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "search.cli", "worker", "--storage", url, "--study", "outage",
           "--quiet", "--json", *HEARTBEAT, *extra]
    return subprocess.Popen(cmd, cwd=REPO, env=os.environ.copy(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_mid_trial(study: optuna.Study, pids: set[int], timeout: float = 90) -> None:
    """Until every worker in ``pids`` runs a trial and one of them is timing it."""
    from filelock import Timeout

    from prunebench.search.distributed import timing_lock

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = {t.user_attrs.get("worker_pid")
                   for t in study.get_trials(states=(TrialState.RUNNING,))}
        if pids <= running:
            lock = timing_lock(timeout_s=0)
            try:
                lock.acquire()
            except Timeout:
                return  # a worker holds the timing lock: in its trial's longest phase
            lock.release()
        time.sleep(0.05)
    raise AssertionError("the workers never were in a trial together")


def stop_for(pg: LocalPostgres, seconds: float) -> None:
    pg.stop("fast")
    try:
        time.sleep(seconds)
    finally:
        pg.start()


@pytest.mark.slow
def test_workers_ride_out_a_restart(pg: LocalPostgres, env: dict[str, str]) -> None:
    url = pg.server.url(pg.server.create_database())
    study = create_study(url, env)
    procs = [worker(url, "--db-outage-s", "60") for _ in range(2)]
    try:
        wait_mid_trial(study, {p.pid for p in procs})
        stop_for(pg, 6)
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0 and "Traceback" not in err, err[-3000:]
        assert err.count(LOST) == 1 and err.count(BACK) == 1, err[-3000:]
        (lost,) = [line for line in err.splitlines() if LOST in line]
        assert ":***@127.0.0.1" in lost and pg.server.password not in err, lost
        assert json.loads(out.strip().splitlines()[-1])["failed"] == 0
    trials = load_study(open_storage(url), "outage").get_trials()
    seen = ", ".join(f"{t.number}:{t.state.name}:{t.params}" for t in trials)
    # every trial of the budget ran once and completed: none lost, none made twice. Both
    # workers come back from the outage together, so both may ask for the last trial: the
    # later one is ended before any work, marked over budget
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    surplus = [t for t in trials if t.state != TrialState.COMPLETE]
    assert len(complete) == TRIALS, seen
    assert all(t.state == TrialState.PRUNED and t.user_attrs.get("over_budget")
               and t.number >= TRIALS for t in surplus), seen
    assert sorted(t.number for t in complete) == list(range(TRIALS)), seen
    assert all(len(t.params) == 3 and t.values for t in complete), seen
    assert len({t.system_attrs[TOKEN_ATTR] for t in complete}) == TRIALS, seen
    assert not [t for t in trials if "retry_of" in t.user_attrs or "failed_trial" in
                t.system_attrs], seen


@pytest.mark.slow
def test_worker_gives_up_in_one_line(pg: LocalPostgres, env: dict[str, str]) -> None:
    url = pg.server.url(pg.server.create_database())
    study = create_study(url, env)
    p = worker(url, "--db-outage-s", "3")
    try:
        wait_mid_trial(study, {p.pid})
        pg.stop("fast")
        started = time.monotonic()
        try:
            _, err = p.communicate(timeout=60)
        finally:
            pg.start()
    finally:
        p.kill()
    assert p.returncode == 2, err[-3000:]
    assert time.monotonic() - started < 20  # gave up after about 3 s, not at some later time
    assert "Traceback" not in err, err[-3000:]
    (line,) = [line for line in err.splitlines() if line.startswith("prunebench: error:")]
    assert err.strip().endswith(line), err[-3000:]  # the last thing the worker says
    assert f"127.0.0.1:{pg.port} has been unreachable" in line, line
    assert ":***@127.0.0.1" in line and "--db-outage-s" in line, line
    assert err.count(LOST) == 1 and BACK not in err, err[-3000:]
    # the abandoned trial is still RUNNING; its heartbeat stopped, so another worker re-queues it
    trials = load_study(open_storage(url), "outage").get_trials()
    assert [t.state for t in trials if t.state != TrialState.COMPLETE] == [TrialState.RUNNING]


def lose_reply(storage: RetryingStorage, method: str, monkeypatch: pytest.MonkeyPatch,
               then: Callable[..., object] | None = None) -> None:
    """The next ``method`` call of the storage reaches the database, its reply is lost.

    ``then(real, result, *args)``, if given, stands for the lost reply instead (and returns).
    """
    from sqlalchemy.exc import OperationalError

    real, calls = getattr(storage._inner, method), []

    def once(*args: object, **kwargs: object) -> object:
        calls.append(args)
        result = real(*args, **kwargs)
        if len(calls) > 1:
            return result
        if then is not None:
            return then(real, result, *args, **kwargs)
        cut = OperationalError("COMMIT", None, Exception("server closed the connection "
                                                         "unexpectedly"))
        raise optuna.exceptions.StorageInternalError("commit failed") from cut

    monkeypatch.setattr(storage._inner, method, once)


Retrying = tuple[optuna.Study, RetryingStorage, list[str]]


@pytest.fixture()
def retrying(pg: LocalPostgres) -> Retrying:
    """A study on a retrying storage, and the lines the storage says."""
    lines: list[str] = []
    storage = open_retrying_storage(pg.server.url(pg.server.create_database()),
                                    warn=lines.append)
    study = optuna.create_study(storage=storage, study_name="lost", directions=["minimize"])
    return study, storage, lines


def test_a_tell_whose_reply_was_lost_is_not_sent_again(
        retrying: Retrying, monkeypatch: pytest.MonkeyPatch) -> None:
    study, storage, lines = retrying
    trial = study.ask()
    lose_reply(storage, "set_trial_state_values", monkeypatch)
    study.tell(trial, 1.5)  # sent again as it was, Optuna would refuse it: trial finished
    (t,) = study.get_trials()
    assert t.state == TrialState.COMPLETE and t.values == [1.5]
    assert [LOST in lines[0], BACK in lines[1]] == [True, True] and len(lines) == 2, lines


def test_a_queued_trial_taken_as_the_reply_was_lost_is_run(
        retrying: Retrying, monkeypatch: pytest.MonkeyPatch) -> None:
    study, storage, _ = retrying
    study.enqueue_trial({"x": 0.25})
    lose_reply(storage, "set_trial_state_values", monkeypatch)
    trial = study.ask()  # sent again, Optuna would see it RUNNING, skip it and make a new one
    trial.suggest_float("x", 0, 1)
    study.tell(trial, 0.0)
    (t,) = study.get_trials()
    assert (t.number, t.state, t.params) == (0, TrialState.COMPLETE, {"x": 0.25})


def test_a_new_trial_whose_reply_was_lost_is_not_made_twice(
        retrying: Retrying, monkeypatch: pytest.MonkeyPatch) -> None:
    study, storage, _ = retrying
    lose_reply(storage, "create_new_trial", monkeypatch)
    study.tell(study.ask(), 2.0)
    (t,) = study.get_trials()
    assert t.state == TrialState.COMPLETE and t.system_attrs[TOKEN_ATTR]


def test_a_trial_optuna_made_twice_across_a_drop_is_failed(
        retrying: Retrying, monkeypatch: pytest.MonkeyPatch) -> None:
    """Optuna retries trial creation itself: after a real disconnect the proxy finds the twin."""
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    study, storage, _ = retrying

    def drop_and_create_again(real: Callable[..., int], first_id: int, study_id: int,
                              template: object) -> int:
        with pytest.raises(OperationalError), storage.engine.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
        return real(study_id, template)  # what Optuna's retry loop would do

    lose_reply(storage, "create_new_trial", monkeypatch, then=drop_and_create_again)
    trial = study.ask()
    study.tell(trial, 3.0)
    twin, kept = study.get_trials()
    assert kept.number == trial.number and kept.state == TrialState.COMPLETE
    assert twin.state == TrialState.FAIL
    assert twin.user_attrs["fail_reason"].startswith(f"duplicate of trial {kept.number}")


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with")
def test_the_heartbeat_thread_lives_through_an_outage(
        pg: LocalPostgres, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from optuna.storages._heartbeat import get_heartbeat_thread
    from sqlalchemy import text

    died: list[object] = []
    monkeypatch.setattr(threading, "excepthook", died.append)
    lines: list[str] = []
    storage = open_retrying_storage(pg.server.url(pg.server.create_database()),
                                    heartbeat_interval_s=1, warn=lines.append)
    study = optuna.create_study(storage=storage, directions=["minimize"])
    trial = study.ask()
    beating = get_heartbeat_thread(trial._trial_id, storage)
    beating.start()
    try:
        stop_for(pg, 3)
        time.sleep(2)  # the next beat after the restart
        assert beating._thread.is_alive() and not died, died
        with storage.engine.connect() as conn:
            age = conn.execute(text("SELECT EXTRACT(EPOCH FROM now() - heartbeat) FROM "
                                    "trial_heartbeats")).scalar_one()
    finally:
        beating.join()
    assert float(age) < 1.5 and not died, (age, died)
    assert len(lines) == 2 and LOST in lines[0] and BACK in lines[1], lines


def test_the_pool_says_a_lost_connection_in_no_traceback(
        pg: LocalPostgres, caplog: pytest.LogCaptureFixture) -> None:
    """Closing or resetting a connection the server dropped: SQLAlchemy's pool logs that with a
    traceback (on stderr, without logging set up); the outage's own lines say it instead."""
    import psycopg2

    storage = open_retrying_storage(pg.server.url(pg.server.create_database()))
    pool_log = storage.engine.pool.logger
    for exc in (psycopg2.OperationalError("server closed the connection unexpectedly"),
                ValueError("something else\nwith more lines")):
        try:
            raise exc
        except Exception:
            pool_log.error("Exception during reset or similar", exc_info=True)
    assert [(r.getMessage(), r.exc_info) for r in caplog.records] == [
        ("Exception during reset or similar (ValueError: something else)", None)]
