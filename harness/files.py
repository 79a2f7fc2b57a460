"""Files written so that none is ever half-written: a temporary file beside it, then a rename.

A crash or Ctrl-C leaves either the old file or the new one, so a resumed run reads what was
there before. The temporary name carries the process id, so two processes writing one file
never share a temporary file. ``harness`` (checkpoints, AAP's round log) and ``search`` (run
folders) write through these.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from prunebench.harness.errors import PrunebenchError


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write; on success it is renamed over ``path``,
    on any error it is removed and ``path`` is left as it was. The data reach the disk before
    the rename and the rename before return (``fsync``), so not even a power cut leaves a
    half-written file under ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot sync a folder; the rename still is atomic
        if not path.is_dir():
            raise
    finally:
        os.close(fd)


def keep_copy(path: str | Path) -> Path:
    """Copy ``path`` beside itself as ``<name>.bak-<timestamp>`` (synced) before it is repaired;
    returns the copy's path."""
    path = Path(path)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    copy, n = path.with_name(f"{path.name}.bak-{stamp}"), 1
    while copy.exists():
        n += 1
        copy = path.with_name(f"{path.name}.bak-{stamp}-{n}")
    shutil.copy2(path, copy)
    _fsync(copy)
    return copy


def write_atomic(path: str | Path, text: str, *,
                 check: Callable[[Path], None] | None = None) -> None:
    """Write ``text`` to ``path`` atomically; ``check(tmp)`` runs on the written temporary file
    before the rename (if it raises, ``path`` is left as it was)."""
    with replacing(path) as tmp:
        tmp.write_text(text)
        if check is not None:
            check(tmp)


def check_writable_dir(path: str | Path, what: str) -> Path:
    """``path`` if it is a folder this process can write into, or can be created as one.

    Checked before any work starts; nothing is left behind (a probe file is created and removed
    in the nearest existing folder). Otherwise raises a one-line :class:`PrunebenchError` that
    starts with ``what`` (e.g. ``"--out"``) and names the path and the fix.
    """
    path = Path(path).expanduser()
    probe = path
    while not probe.exists() and not probe.is_symlink() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        where = f"{path} is" if probe == path else f"{path}: {probe} is"
        raise PrunebenchError(f"{what} {where} a file, not a folder; give a folder path (or move "
                              "the file away)")
    try:
        fd, name = tempfile.mkstemp(prefix=".prunebench-write-check-", dir=probe)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise PrunebenchError(f"{what} {path} cannot be written ({exc.strerror} in {probe}); "
                              "give a folder you can write to") from None
    return path
