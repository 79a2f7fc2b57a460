"""The library behind the ``prunebench`` commands: runs, and the folders they write.

- :mod:`.search_run`: a search run (:func:`run_search`, :class:`SearchResult`, ``SearchRun``);
  :mod:`.search_settings`: its settings, defaults and spec;
- :mod:`.remeasure`: re-measuring a search's front;
- :mod:`.sweep`: a baseline sweep of one static method over uniform ratios;
- :mod:`.shared_study`: a study in a shared database for ``prunebench worker`` processes;
- :mod:`.folders`: reading run folders (or a study in a storage) into :class:`RunData`;
- :mod:`.reports`: run folders -> a report folder (:func:`compare`, :func:`report`);
- :mod:`.files`: writing a run folder's files atomically.

The names below load on first use, so importing one module of the package stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "run_search": "search_run", "SearchResult": "search_run", "SearchRun": "search_run",
    "compare": "reports", "report": "reports",
    "run_sweep": "sweep", "SweepResult": "sweep",
    "RunData": "folders", "load_run": "folders",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
