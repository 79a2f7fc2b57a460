"""A local search killed outright (SIGKILL) mid-trial: the resume fails that trial and re-runs
its configuration, and every trial before it stays as it was."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from prunebench.search.cli import main


def _study(journal: Path) -> Any:  # an optuna.Study, read as it is (nothing repaired)
    import optuna

    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal)))
    return optuna.load_study(study_name="run", storage=storage)


def _kill_mid_trial(args: list[str], journal: Path, timeout_s: float = 60.0) -> int:
    """Start `prunebench` with ``args``; SIGKILL it once a trial is RUNNING with its
    configuration chosen and an earlier one COMPLETE. Returns the killed process's pid."""
    code = "import sys; from prunebench.search.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env={**os.environ})
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"the search ended (rc {proc.returncode}) before it could be killed: "
                            f"{proc.stderr.read().decode()[-2000:]}")
            if journal.is_file():
                with contextlib.suppress(Exception):  # no study yet, or a line being written
                    states = {t.state.name for t in _study(journal).trials
                              if t.state.name != "RUNNING" or "config" in t.user_attrs}
                    if {"COMPLETE", "RUNNING"} <= states:
                        proc.send_signal(signal.SIGKILL)
                        break
            time.sleep(0.02)
        else:
            pytest.fail("no trial was RUNNING within the time allowed")
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return proc.pid


@pytest.mark.slow
def test_resume_fails_the_killed_trial_and_runs_its_configuration_again(
        search_args: Callable[..., list[str]], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    journal = run / "study.journal"
    pid = _kill_mid_trial(search_args(run, "--trials", "50"), journal)
    lock = journal.with_name(journal.name + ".lock")
    if lock.exists():  # killed inside an append: Optuna would wait out its 30 s grace period
        lock.unlink()
    before = _study(journal).trials
    stale = [t for t in before if t.state.name == "RUNNING"]
    assert len(stale) == 1 and stale[0].params
    stale = stale[0]
    assert stale.user_attrs["worker_pid"] == pid

    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert main(search_args(run, "--trials", "1", "--resume")) == 0
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert "Traceback" not in "\n".join(lines)
    assert lines[-1].startswith(f"prunebench: warning: trial {stale.number} was left RUNNING by "
                                f"a process that died (pid {pid} on ")
    assert lines[-1].endswith("); marked it FAIL and queued its configuration again")
    # before it, at most the journal repair of an append the kill cut short
    assert all("ended in a partial line" in ln for ln in lines[:-1])

    after = _study(journal).trials
    for old in before:  # every earlier trial is kept as it was (the stale one now FAIL)
        new = after[old.number]
        assert (new.params, new.values) == (old.params, old.values)
        assert new.state == old.state or old.number == stale.number
    failed = after[stale.number]
    assert failed.state.name == "FAIL"
    assert failed.user_attrs["fail_reason"].startswith("stale: its process died (pid ")
    retry = after[len(before)]
    assert retry.state.name == "COMPLETE" and retry.params == stale.params
    assert retry.system_attrs["failed_trial"] == stale.number
    assert json.loads(out.getvalue())["counts"]["total"] == len(before) + 1
