"""Writing a run folder's files so that none is ever half-written.

Every file a run writes (``config.json``, ``dense.json``, ``points.csv``, ``trials.csv``, ...) goes
through :func:`harness.files.write_atomic` (a temporary file beside it, then a rename), so a crash
or Ctrl-C leaves either the old file or the new one, and a resumed run reads what was there before.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prunebench.harness.errors import PrunebenchError
from prunebench.harness.files import check_writable_dir, write_atomic

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["check_out_dir", "write_atomic", "write_csv", "write_json"]


def write_json(path: str | Path, data: Any) -> None:
    """Atomic JSON write (indented, keys sorted, anything else as ``str``)."""
    write_atomic(path, json.dumps(data, indent=1, sort_keys=True, default=str))


def write_csv(path: str | Path, frame: pd.DataFrame) -> None:
    """Atomic CSV write (no index column)."""
    write_atomic(path, frame.to_csv(index=False))


def check_out_dir(path: str | Path, flag: str = "--out") -> Path:
    """A run or report folder ``path``, checked before any work: a folder (or creatable as
    one) that can be written; else a one-line error naming ``flag``, the path and the fix."""
    return check_writable_dir(path, flag)


def read_json(path: Path, fix: str) -> Any:
    """``path``'s JSON; unreadable (cut by a crash, edited) is one line naming it and ``fix``."""
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        reason = getattr(exc, "msg", None) or type(exc).__name__
    raise PrunebenchError(f"{path} is unreadable ({reason}: cut short by a crash, or edited); "
                          f"{fix}")
