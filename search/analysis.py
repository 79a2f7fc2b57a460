"""What a report shows, computed once from run folders (no drawing, no rendering).

:mod:`search.report` computes it; :mod:`search.report_render` renders it; both import it from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from prunebench.search.pareto import Objective
from prunebench.search.runs.folders import RunData
from prunebench.search.verdicts import BudgetVerdict


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
    verdicts: list[BudgetVerdict]  # per budget: each series' best, the winner or the tie
    family: dict[str, list[str]]  # "dynamic vs static" -> one sentence per budget
    dominance: dict[str, pd.DataFrame]  # "dynamic vs static" -> per static front point
    warnings: list[str] = field(default_factory=list)  # mixed setups (--allow-mixed)
    findings: list[str] = field(default_factory=list)  # shown and labelled (compare, not --strict)
    left_out: pd.DataFrame | None = None  # rows on a split not plotted (--all-trials draws them)


def energy_tag(points: pd.DataFrame) -> str:
    """``modelled`` when every energy of ``points`` is modelled, ``modelled/rapl`` when mixed,
    ``""`` when measured by one meter: what every energy label and header must carry."""
    has = pd.to_numeric(points["energy_mj_per_inference"], errors="coerce").notna()
    methods = sorted(set(points.loc[has, "energy_method"].fillna("none").astype(str)))
    if "modelled" not in methods:
        return ""
    return "/".join(["modelled", *(m for m in methods if m != "modelled")])


def energy_header(points: pd.DataFrame, base: str = "energy (mJ)") -> str:
    """``energy (mJ, modelled)`` when the energies are modelled, else ``base``."""
    tag = energy_tag(points)
    return f"{base[:-1]}, {tag})" if tag and base.endswith(")") else \
        (f"{base} ({tag})" if tag else base)
