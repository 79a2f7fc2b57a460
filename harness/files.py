"""Files written so that none is ever half-written: a temporary file beside it, then a rename.

A crash or Ctrl-C leaves either the old file or the new one, so a resumed run reads what was
there before. The temporary name carries the process id, so two processes writing one file
never share a temporary file. ``harness`` (checkpoints, AAP's round log) and ``search`` (run
folders) write through these.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write; on success it is renamed over ``path``,
    on any error it is removed and ``path`` is left as it was."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | Path, text: str, *,
                 check: Callable[[Path], None] | None = None) -> None:
    """Write ``text`` to ``path`` atomically; ``check(tmp)`` runs on the written temporary file
    before the rename (if it raises, ``path`` is left as it was)."""
    with replacing(path) as tmp:
        tmp.write_text(text)
        if check is not None:
            check(tmp)
