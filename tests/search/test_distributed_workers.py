"""Many ``prunebench worker`` processes on one real PostgreSQL study (issue #9).

Tiny network (``test_convnet`` on digits, trained one epoch), a test profile with tiny timing
settings, heartbeats every second. Workers run as real subprocesses of the real CLI.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from prunebench.search.cli import main
from prunebench.search.pareto import pareto_front, parse_objectives
from prunebench.search.runs.folders import study_points
from prunebench.search.storage import load_study, open_storage

REPO = Path(__file__).resolve().parents[2]
HEARTBEAT = ["--heartbeat-interval", "1", "--grace-period", "4"]
PROFILE_TOML = """\
name = "{name}"
version = 1
description = "tiny timing for tests"
device = "cpu"
threads = 1
batch_sizes = [1]
dtype = "float32"
memory_format = "contiguous"
[timing]
warmup_iters = 1
min_samples = 3
min_time_s = {min_time_s}
max_time_s = {max_time_s}
target_rel_ci = 0.5
[energy]
meter = "none"
watts_per_busy_core = 7.0
idle_watts = 40.0
source = "test"
[fingerprint]
cpu_model = "{cpu}"
gpu_name = "*"
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Profiles, caches, lock dir and a one-epoch checkpoint shared by the test and workers."""
    from prunebench.harness.datasets import load_dataset
    from prunebench.harness.models import create_model
    from prunebench.harness.train import DEFAULT_RECIPE, save_checkpoint, train_model

    root = tmp_path_factory.mktemp("workers")
    (root / "profiles").mkdir()
    (root / "lock").mkdir()
    # pb-slow times for at least 2 s, so a trial seen RUNNING is still running when the test
    # signals it (with no floor, a 3-sample timing could finish first and the test raced)
    for name, min_time, max_time, cpu in (("pb-test", 0.0, 0.05, "*"),
                                          ("pb-slow", 2.0, 3.0, "*"),
                                          ("pb-elsewhere", 0.0, 0.05, "No Such CPU 9000*")):
        (root / "profiles" / f"{name}.toml").write_text(
            PROFILE_TOML.format(name=name, min_time_s=min_time, max_time_s=max_time, cpu=cpu))
    splits = load_dataset("digits")
    model = create_model("test_convnet", splits.num_classes, splits.input_size[0])
    import dataclasses

    train_model(model, splits, dataclasses.replace(DEFAULT_RECIPE, epochs=1), progress=False)
    ckpt = root / "convnet.pt"
    save_checkpoint(model, ckpt, {"model": "test_convnet", "num_classes": splits.num_classes,
                                  "in_channels": splits.input_size[0]})
    out = {"PRUNEBENCH_PROFILES": str(root / "profiles"), "PRUNEBENCH_CACHE": str(root / "cache"),
           "PRUNEBENCH_LOCK_DIR": str(root / "lock"), "OMP_NUM_THREADS": "1",
           "CHECKPOINT": str(ckpt)}
    return out


@pytest.fixture(autouse=True)
def _apply_env(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)


def create(url: str, name: str, env: dict[str, str], *extra: str, profile: str = "pb-test",
           trials: int = 100) -> None:
    argv = ["study", "create", "--storage", url, "--study", name, "--model", "test_convnet",
            "--dataset", "digits", "--checkpoint", env["CHECKPOINT"], "--profile", profile,
            "--sampler", "random", "--max-ratio", "0.5", "--ratio-step", "0.25",
            "--trials", str(trials), *extra]
    assert main(argv) == 0


def worker(url: str, name: str, *extra: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "search.cli", "worker", "--storage", url, "--study", name,
           "--quiet", "--json", *HEARTBEAT, *extra]
    return subprocess.Popen(cmd, cwd=REPO, env=os.environ.copy(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(p: subprocess.Popen[str], timeout: float = 240) -> dict:
    out, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, err[-2000:]
    return json.loads(out.strip().splitlines()[-1])


def wait_running(study: optuna.Study, pid: int, timeout: float = 120) -> optuna.trial.FrozenTrial:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for t in study.get_trials(states=(TrialState.RUNNING,)):
            if t.user_attrs.get("worker_pid") == pid:
                return t
        time.sleep(0.05)
    raise AssertionError(f"worker {pid} never ran a trial")


def wait_timing(timeout: float = 120) -> None:
    """Until some worker holds this machine's timing lock (a trial in its timing phase).

    Signalling then lands inside the trial's longest phase (``pb-slow`` times for seconds), the
    case these tests are about.
    """
    from filelock import Timeout

    from prunebench.search.distributed import timing_lock

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lock = timing_lock(timeout_s=0)
        try:
            lock.acquire()
        except Timeout:
            return
        lock.release()
        time.sleep(0.05)
    raise AssertionError("no worker took the timing lock")


@pytest.mark.slow
def test_two_workers_share_a_study(pg_url: str, env: dict[str, str]) -> None:
    create(pg_url, "pair", env)
    a, b = worker(pg_url, "pair", "--trials", "3"), worker(pg_url, "pair", "--trials", "3")
    ra, rb = finish(a), finish(b)
    assert ra["trials"] == rb["trials"] == 3
    study = load_study(open_storage(pg_url), "pair")
    trials = study.get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 6 and len(trials) == 6
    assert len({t.number for t in trials}) == len(trials)
    assert {t.user_attrs["worker_id"] for t in complete} == {ra["worker_id"], rb["worker_id"]}
    from prunebench.search.objective import ANCHOR_ATTR

    anchor = study.user_attrs[ANCHOR_ATTR]  # set by the first worker; both time in its frame
    assert {json.loads(t.user_attrs["environment"])["latency_anchor_ms"] for t in complete} \
        == {anchor}
    from prunebench.search.cache import MeasurementCache

    cache = MeasurementCache(open_storage(pg_url), study)
    for t in complete:  # every measurement is stored with its trial and in the cache
        assert t.user_attrs["latency_p50_ms"] > 0 and 0 <= t.user_attrs["accuracy_top1"] <= 1
        hit = cache.get(json_key(t), "pb-test@v1", t.user_attrs["fingerprint"])
        assert hit is not None
    assert len(cache) == len({json_key(t) for t in complete})


def json_key(t: optuna.trial.FrozenTrial) -> str:
    from prunebench.harness.pruning import PruningConfig

    return PruningConfig.from_json(t.user_attrs["config"]).key


@pytest.mark.slow
def test_killed_worker_trial_is_retried_and_front_matches(pg_url: str,
                                                          env: dict[str, str]) -> None:
    create(pg_url, "crash", env, profile="pb-slow")
    storage = open_storage(pg_url)
    study = load_study(storage, "crash")
    doomed = worker(pg_url, "crash", "--trials", "50")
    victim = wait_running(study, doomed.pid)
    wait_timing()
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(timeout=30)
    time.sleep(5)  # past the grace period: the trial is stale
    survivor = finish(worker(pg_url, "crash", "--trials", "2"))
    trials = {t.number: t for t in study.get_trials()}
    dead = trials[victim.number]
    assert dead.state == TrialState.FAIL
    retries = [t for t in trials.values() if t.system_attrs.get("failed_trial") == dead.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    # the retry keeps what the dead trial had drawn (it may have died mid-way through drawing)
    assert dead.params.items() <= retries[0].params.items()
    assert retries[0].user_attrs["worker_id"] == survivor["worker_id"]
    assert not [t for t in trials.values() if t.state == TrialState.RUNNING]
    # the study's own front (Optuna) equals the front computed from the stored trials
    frame = study_points(study)
    front = pareto_front(frame, parse_objectives("accuracy,latency_p50"))
    assert sorted(front["trial_number"]) == sorted(t.number for t in study.best_trials)


@pytest.mark.slow
def test_sigint_fails_the_trial_as_interrupted_and_requeues_it(pg_url: str,
                                                               env: dict[str, str]) -> None:
    create(pg_url, "intr", env, profile="pb-slow")
    study = load_study(open_storage(pg_url), "intr")
    p = worker(pg_url, "intr", "--trials", "50")
    running = wait_running(study, p.pid)
    wait_timing()
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    trials = study.get_trials()
    seen = f"worker stderr: {err[-3000:]}; trials: " + ", ".join(
        f"{t.number}:{t.state.name}:{t.user_attrs.get('fail_reason')}" for t in trials)
    assert p.returncode == 130, seen
    assert not [t for t in trials if t.state == TrialState.RUNNING], seen
    mine = [t for t in trials if t.number >= running.number and t.state == TrialState.FAIL]
    assert mine and mine[0].user_attrs["fail_reason"] == "interrupted", seen
    queued = [t for t in trials if t.state == TrialState.WAITING]
    assert [t.user_attrs["retry_of"] for t in queued] == [mine[0].number]


def test_repeated_config_comes_from_the_cache(pg_url: str, env: dict[str, str]) -> None:
    from prunebench.search.workers import WorkerOptions, run_worker

    create(pg_url, "cache", env)
    study = load_study(open_storage(pg_url), "cache")
    params = {"conv1": 0.25, "conv2": 0.5, "conv3": 0.0}
    for _ in range(3):
        study.enqueue_trial(params, skip_if_exists=False)
    first = run_worker(pg_url, "cache", WorkerOptions(trials=2), log=lambda _m: None)
    assert (first.completed, first.cache_hits) == (2, 1)
    again = run_worker(pg_url, "cache", WorkerOptions(trials=1, use_cache=False),
                       log=lambda _m: None)
    assert (again.completed, again.cache_hits) == (1, 0)
    t0, t1, t2 = study.get_trials()[:3]
    assert t1.user_attrs.get("cache_hit") and not t2.user_attrs.get("cache_hit")
    assert t1.values == t0.values


def test_budget_stops_workers(pg_url: str, env: dict[str, str]) -> None:
    from prunebench.search.workers import WorkerOptions, run_worker

    create(pg_url, "budget", env, trials=2)
    first = run_worker(pg_url, "budget", WorkerOptions(), log=lambda _m: None)
    late = run_worker(pg_url, "budget", WorkerOptions(trials=5), log=lambda _m: None)
    assert first.completed == 2 and late.trials == 0
    assert "budget" in late.stopped


@pytest.mark.slow
def test_status_report_and_delete(pg_url: str, env: dict[str, str], tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    from prunebench.search.workers import WorkerOptions, run_worker

    create(pg_url, "st", env)
    run_worker(pg_url, "st", WorkerOptions(trials=2), log=lambda _m: None)
    capsys.readouterr()
    assert main(["study", "status", "--storage", pg_url, "--study", "st", "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["trials"]["complete"] == 2 and len(st["workers"]) == 1
    assert st["best_feasible"] is not None and st["cached_measurements"] >= 1
    assert main(["study", "report", "--storage", pg_url, "--study", "st",
                 "--out", str(tmp_path / "rep"), "--formats", "png"]) == 0
    assert (tmp_path / "rep" / "report.md").is_file()
    assert main(["study", "delete", "--storage", pg_url, "--study", "st"]) == 2
    assert main(["study", "delete", "--storage", pg_url, "--study", "st", "--yes"]) == 0
    assert optuna.get_all_study_names(open_storage(pg_url)) == []


def test_user_errors_exit_2(pg_url: str, postgres_server, env: dict[str, str],  # noqa: ANN001
                            capsys: pytest.CaptureFixture[str]) -> None:
    def fails(argv: list[str], fragment: str) -> None:
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert fragment in err and len(err.strip().splitlines()) == 1, err

    w = ["worker", "--study", "s", "--trials", "1", "--storage"]
    fails([*w, "redis://localhost/0"], "many workers need")
    fails([*w, postgres_server.url("postgres", password="wrong")], "wrong password")
    fails([*w, pg_url], "study 's' does not exist")
    fails(["study", "create", "--storage", pg_url, "--study", "bad", "--model", "nope",
           "--dataset", "digits"], "nope")
    assert optuna.get_all_study_names(open_storage(pg_url)) == []  # nothing half-created
    create(pg_url, "elsewhere", env, profile="pb-elsewhere")
    fails([*w[:2], "elsewhere", *w[3:], pg_url], "cannot join study 'elsewhere'")


@pytest.mark.slow
def test_study_created_with_an_anchor_keeps_it(pg_url: str, env: dict[str, str]) -> None:
    from prunebench.search.objective import ANCHOR_ATTR

    create(pg_url, "given", env, "--latency-anchor-ms", "12.5")
    study = load_study(open_storage(pg_url), "given")
    assert study.user_attrs[ANCHOR_ATTR] == 12.5
    assert finish(worker(pg_url, "given", "--trials", "1"))["trials"] == 1
    (t,) = study.get_trials()
    assert json.loads(t.user_attrs["environment"])["latency_anchor_ms"] == 12.5
    assert t.user_attrs["latency_p50_ms"] == pytest.approx(12.5 / t.user_attrs["speedup_vs_dense"])


def test_an_interrupt_dropped_by_a_finaliser_is_raised_at_the_next_check() -> None:
    """CI caught this: SIGINT landing in a weakref callback during ``gc.collect()`` was printed
    ("Exception ignored in") and dropped, and the trial ran on to COMPLETE."""
    import gc

    from prunebench.search.workers import _Interrupts

    interrupts = _Interrupts()
    reported: list[object] = []

    class SignalledWhileFinalised:
        def __del__(self) -> None:
            interrupts.handler(signal.SIGINT, None)

    previous = sys.unraisablehook
    sys.unraisablehook = reported.append  # what the interpreter would print
    try:
        with interrupts.installed():
            interrupts.in_trial = True
            obj = SignalledWhileFinalised()
            del obj  # the handler's KeyboardInterrupt is dropped by the interpreter here
            gc.collect()
            assert interrupts.requested and not interrupts.in_trial
            with pytest.raises(KeyboardInterrupt):
                interrupts.check()
    finally:
        sys.unraisablehook = previous
    assert reported == []  # no "Exception ignored in" traceback for the user's Ctrl-C
    assert _Interrupts().check() is None  # no signal: nothing raised


def test_a_trial_asked_after_the_budget_was_taken_does_no_work() -> None:
    """Two workers can pass the budget check together; the later-numbered trial is ended
    PRUNED with ``over_budget`` before its objective runs, the earlier one runs."""
    import optuna

    from prunebench.search.workers import OVER_BUDGET_ATTR, _within_budget

    study = optuna.create_study(directions=["maximize"])
    calls: list[int] = []

    def objective(trial: optuna.Trial) -> float:
        calls.append(trial.number)
        return 1.0

    running = study.ask()  # another worker's trial, still running: the budget of 1 is taken
    study.optimize(_within_budget(objective, study, 1), n_trials=1)
    late = study.trials[-1]
    assert late.state == optuna.trial.TrialState.PRUNED and late.user_attrs[OVER_BUDGET_ATTR]
    assert calls == []
    study.tell(running, 1.0)
    fresh = optuna.create_study(directions=["maximize"])
    fresh.optimize(_within_budget(objective, fresh, 1), n_trials=1)
    assert fresh.trials[0].state == optuna.trial.TrialState.COMPLETE and calls == [0]
