"""Calling one subcommand's ``run(args)`` as the ``prunebench`` command does: a
:class:`PrunebenchError` becomes one line on stderr and exit code 2, an operating-system error one
line naming the path, Ctrl-C exit code 130 after the command has saved its work."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from prunebench.harness.errors import PrunebenchError


def os_error_line(exc: OSError) -> str:
    """One line for an operating-system error: what failed, on which path, and the fix."""
    where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
    reason = exc.strerror or type(exc).__name__
    return (f"{reason}: {where or 'a file of this run'}; check that the path exists, is of the "
            "right kind (file or folder) and is writable, or give another")


def call(run: Callable[[argparse.Namespace], int | None], args: argparse.Namespace) -> int:
    """``run(args)``'s exit code, user errors and interruptions turned into codes 2 and 130."""
    try:
        return int(run(args) or 0)
    except PrunebenchError as exc:
        print(f"prunebench: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file the checks before the work could not foresee (disk full)
        print(f"prunebench: error: {os_error_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("prunebench: interrupted; everything written so far is kept", file=sys.stderr)
        return 130
