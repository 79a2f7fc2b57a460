"""What a report shows, computed once from run folders (no drawing, no rendering).

:mod:`search.report` computes it; :mod:`search.report_render` renders it; both import it from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from prunebench.search.pareto import Objective
from prunebench.search.runs.folders import RunData


@dataclass
class Analysis:
    """What the report shows, computed once (no drawing)."""

    runs: list[RunData]
    merged: pd.DataFrame
    objectives: list[Objective]
    fronts: dict[str, pd.DataFrame]
    reference: np.ndarray
    ideal: np.ndarray
    hypervolume: dict[str, float]  # fraction of the shared box [ideal, reference]
    hypervolume_raw: dict[str, float]  # in the objectives' own units
    budgets_ms: list[float]
    budgets_note: str
    split_note: str
    best: list[dict[str, Any]]  # per budget: {"budget_ms", "overall": row, "series": {name: row}}
    dominance: dict[str, pd.DataFrame]  # "dynamic vs static" -> per static front point
    warnings: list[str] = field(default_factory=list)
