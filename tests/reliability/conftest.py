"""Fixtures for the reliability tests: a tiny search workload and the command line's output.

Each test damages what a crash (SIGKILL, power cut, full disk) leaves behind and checks three
things: the exit code, the one line the user reads (no traceback), and that everything written
before is intact.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def search_args(assets: dict[str, str]) -> Callable[..., list[str]]:
    """``search_args(out, *extra)``: a quiet, seeded `prunebench search` of the tiny workload."""

    def build(out: str | Path, *extra: str) -> list[str]:
        return ["search", "--model", "test_convnet", "--dataset", "digits", "--checkpoint",
                assets["checkpoint"], "--profile", assets["profile"], "--sampler", "random",
                "--seed", "0", "--warm-start", "0", "--remeasure-max", "0", "--out", str(out),
                "--quiet", "--json", *extra]

    return build


def one_line(err: str) -> str:
    """``err`` (stderr) as its single line; fails on a traceback or on more lines."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture()
def only_line() -> Callable[[str], str]:
    """:func:`one_line` as a fixture (test modules cannot import a conftest)."""
    return one_line
