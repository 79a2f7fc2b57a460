"""Writing a run folder's files so that none is ever half-written.

Every file a run writes (``config.json``, ``dense.json``, ``points.csv``, ``trials.csv``, ...) is
written to a temporary file beside it and renamed over it, so a crash or Ctrl-C leaves either
the old file or the new one, and a resumed run reads what was there before.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


def write_atomic(path: str | Path, text: str, *,
                 check: Callable[[Path], None] | None = None) -> None:
    """Write ``text`` to ``path`` via a temporary file and a rename (never half-written).

    ``check(tmp)`` runs on the written temporary file before the rename; if it raises, the
    temporary file is removed and ``path`` is left as it was. The temporary name carries the
    process id, so two processes writing one file never share a temporary file.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    try:
        if check is not None:
            check(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: str | Path, data: Any) -> None:
    """Atomic JSON write (indented, keys sorted, anything else as ``str``)."""
    write_atomic(path, json.dumps(data, indent=1, sort_keys=True, default=str))


def write_csv(path: str | Path, frame: pd.DataFrame) -> None:
    """Atomic CSV write (no index column)."""
    write_atomic(path, frame.to_csv(index=False))
