"""A study journal after a crash: a cut last line repaired, a dead process's trial retried.

Optuna's journal file (:class:`~optuna.storages.journal.JournalFileBackend`) appends one JSON
line per operation. A crash mid-write leaves a partial last line: Optuna reads past it, but the
next append lands after it and the file is unreadable from then on. :func:`repair_journal` runs
before every journal is opened (:func:`prunebench.search.storage.open_storage`): unreadable lines
at the end are dropped (the original is kept beside it as ``<name>.bak-<timestamp>``, and one
warning line says what went); damage followed by readable lines is refused with one line, since
cutting there would lose trials.

Journals have no heartbeat (database storages do, see :mod:`prunebench.search.storage`), so a
SIGKILLed local search leaves its running trial RUNNING for good. Every local trial records who
runs it (:func:`record_owner`: host, process id and the process's start time); on resume,
:func:`fail_dead_trials` marks the RUNNING trials of processes that no longer live FAIL
(``fail_reason`` says so) and queues their parameters again with Optuna's
:class:`~optuna.storages.RetryHeartbeatStaleTrialCallback`, the retry the database storages use.
"""

from __future__ import annotations

import copy
import json
import os
import socket
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from prunebench.harness.errors import PrunebenchError
from prunebench.harness.files import keep_copy
from prunebench.search.distributed import worker_identity

OWNER_ATTRS = ("worker_host", "worker_pid", "worker_id", "worker_started")
STALE = "stale: its process died"  # the start of a stale trial's fail_reason


def warn(message: str) -> None:
    """One warning line on stderr."""
    print(f"prunebench: warning: {message}", file=sys.stderr)


# --------------------------------------------------------------------------- repair
@dataclass(frozen=True)
class _Damage:
    keep: int  # bytes of the file that stay
    lines: int  # unreadable lines dropped (a partial last line counts as one)
    partial: bool  # the file ended without a line break
    complete_tail: bool  # the last line is whole JSON that only lacks its line break


def _readable(line: bytes) -> bool:
    try:
        record = json.loads(line)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return False
    return isinstance(record, dict) and "op_code" in record


def _find_damage(path: Path, data: bytes) -> _Damage | None:
    """Where ``data`` stops being a journal, or ``None``; refuses damage before readable lines."""
    *lines, tail = data.split(b"\n")  # ``tail`` is what follows the last line break
    bad = next((i for i, line in enumerate(lines) if not _readable(line)), None)
    if bad is None:
        if not tail:
            return None
        whole = _readable(tail)
        return _Damage(len(data) if whole else len(data) - len(tail), 1, True, whole)
    later = [i for i, line in enumerate(lines[bad + 1:], bad + 1) if _readable(line)]
    if later or (tail and _readable(tail)):
        total = len(lines) + (1 if tail else 0)
        raise PrunebenchError(
            f"study journal {path} is unreadable at line {bad + 1} of {total}, before readable "
            "lines (not a write cut short at its end, so prunebench will not cut it); delete "
            "that line if it is stray text, restore the journal from a copy, or start afresh "
            "with another --out")
    keep = sum(len(line) + 1 for line in lines[:bad])
    return _Damage(keep, len(lines) - bad + (1 if tail else 0), bool(tail), False)


def repair_journal(path: str | Path) -> Path | None:
    """Drop the unreadable end of the journal at ``path`` (a write cut short by a crash).

    The original is copied beside it first (returned; ``None``: nothing to repair) and one
    warning line names the file and what was dropped. A last line that is whole JSON lacking
    only its line break gets the line break. Damage before readable lines raises
    :class:`PrunebenchError` and leaves the file alone.
    """
    from optuna.storages.journal import JournalFileSymlinkLock

    path = Path(path)
    if not path.is_file() or _find_damage(path, path.read_bytes()) is None:
        return None
    lock = JournalFileSymlinkLock(str(path))  # the lock Optuna's appends take
    lock.acquire()
    try:
        data = path.read_bytes()  # again, under the lock: a live writer may have finished
        damage = _find_damage(path, data)
        if damage is None:
            return None
        backup = keep_copy(path)
        with path.open("r+b") as f:
            if damage.complete_tail:
                f.seek(0, os.SEEK_END)
                f.write(b"\n")
            else:
                f.truncate(damage.keep)
            f.flush()
            os.fsync(f.fileno())
    finally:
        lock.release()
    if damage.complete_tail:
        warn(f"study journal {path} ended without a line break (a write cut short by a crash);"
             f" added it and kept the original as {backup.name}")
    else:
        one = damage.lines == 1
        what = ("a partial line" if damage.partial and one
                else f"{damage.lines} unreadable line{'' if one else 's'}")
        warn(f"study journal {path} ended in {what} ({len(data) - damage.keep} bytes, a write "
             f"cut short by a crash); dropped {'it' if one else 'them'} and kept the original "
             f"as {backup.name}")
    return backup


# --------------------------------------------------------------------------- dead trials
def owner_identity() -> dict[str, Any]:
    """This process as a trial records it: host, pid, id and start time (s since the epoch)."""
    import psutil

    return {**worker_identity(), "worker_started": psutil.Process().create_time()}


def record_owner(objective: Callable[[optuna.Trial], Any]) -> Callable[[optuna.Trial], Any]:
    """``objective`` that first stores :func:`owner_identity` in the trial's user attrs."""
    identity = owner_identity()

    def owned(trial: optuna.Trial) -> Any:
        for key, value in identity.items():
            trial.set_user_attr(key, value)
        return objective(trial)

    return owned


def _alive(pid: int, started: float | None) -> bool:
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        # a pid the system has given to a newer process is a dead owner too
        return started is None or abs(proc.create_time() - float(started)) < 1.0
    except psutil.Error:
        return False


def _dead_owner(trial: FrozenTrial, host: str) -> str | None:
    """Why ``trial``'s process is gone (``None``: it lives, or it runs on another host)."""
    attrs = trial.user_attrs
    pid = attrs.get("worker_pid")
    if pid is None:
        return "it recorded no process"
    if attrs.get("worker_host") != host:
        return None
    if _alive(int(pid), attrs.get("worker_started")):
        return None
    return f"pid {pid} on {host}"


def fail_dead_trials(study: optuna.Study, *, max_retry: int | None,
                     log: Callable[[str], None] = warn) -> list[int]:
    """Mark FAIL the RUNNING trials whose process died and queue their parameters again.

    A trial on another host is left alone (whether its process lives cannot be told from
    here) with one line saying so. Each stale trial's ``fail_reason`` starts with
    :data:`STALE`; its retry (at most ``max_retry`` per configuration, ``None``: no limit)
    carries Optuna's ``failed_trial``/``retry_history`` system attrs. Returns the numbers
    failed.
    """
    storage = study._storage
    host = socket.gethostname()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        who = _dead_owner(trial, host)
        if who is None:
            if trial.user_attrs.get("worker_host") != host:
                log(f"trial {trial.number} is RUNNING on host "
                    f"{trial.user_attrs.get('worker_host')}; left alone (its process cannot "
                    "be checked from here)")
            continue
        try:
            storage.set_trial_user_attr(trial._trial_id, "fail_reason", f"{STALE} ({who})")
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # it finished meanwhile
        failed.append(trial.number)
        queued = trial.params and _retry(study, storage.get_trial(trial._trial_id), max_retry)
        log(f"trial {trial.number} was left RUNNING by a process that died ({who}); marked it "
            f"FAIL and {'queued its configuration again' if queued else 'did not retry it'}")
    return failed


def _retry(study: optuna.Study, trial: FrozenTrial, max_retry: int | None) -> bool:
    """Queue ``trial``'s parameters as the database storages' stale-trial callback does."""
    stale = copy.deepcopy(trial)
    stale.user_attrs = {k: v for k, v in stale.user_attrs.items()
                        if k != "fail_reason" and k not in OWNER_ATTRS}
    before = len(study.get_trials(deepcopy=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)(study, stale)
    return len(study.get_trials(deepcopy=False)) > before
