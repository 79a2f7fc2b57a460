"""Many workers, one study: the per-machine timing lock and who ran a trial.

Workers on one or many machines share one Optuna study in a database (:mod:`.storage` opens it,
with the heartbeat that fails and re-queues a dead worker's trial). Measurements on one machine
are serialised by a file lock held around timing only (:func:`timing_lock`), so two workers on
one host never time at the same time while their accuracy evaluation, pruning and fine-tuning
still overlap. Every trial records the worker that ran it (:func:`worker_identity`).
"""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path
from typing import Any

from filelock import FileLock

from prunebench.harness.errors import PrunebenchError

LOCK_ENV = "PRUNEBENCH_LOCK_DIR"
LOCK_NAME = "prunebench-timing.lock"


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
