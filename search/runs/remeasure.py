"""Re-measuring a search's front: the configurations it reported, timed again more strictly.

A search times each trial briefly and scores it on the validation split. When the trials are
done, :func:`remeasure` re-times the feasible front and the trials near a budget (noise can move
them across it) with :func:`~prunebench.search.objective.strict_profile` (4x the samples) and
evaluates them on the test split. :func:`feasible_front` picks the front of the re-measured
rows; the budget hit rate is the share of configurations the search reported feasible that
still meet the budget when re-measured.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from prunebench.search.objective import (
    SEARCH_OBJECTIVES,
    SearchObjective,
    SearchSpec,
    constraint_values,
    measurement_row,
    strict_profile,
)
from prunebench.search.pareto import non_dominated_mask
from prunebench.search.study import is_feasible


def remeasure_candidates(study: optuna.Study, spec: SearchSpec, *, near: float = 0.15,
                         limit: int = 20) -> list[FrozenTrial]:
    """The feasible front (by the search's values) plus trials within ``near`` of a budget.

    Near-budget trials (relative violation in ``[-near, near]``) on either side are re-timed too,
    since noise can move them across the budget. One trial per distinct config; front first,
    then by closeness to the budget; at most ``limit``.
    """
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    feasible = [t for t in complete if is_feasible(t)]
    signs = np.array([1.0 if d == "minimize" else -1.0 for d in spec.directions])
    front: list[FrozenTrial] = []
    if feasible:
        costs = np.array([t.values for t in feasible], dtype=float) * signs
        front = [t for t, keep in zip(feasible, non_dominated_mask(costs), strict=True) if keep]
    near_budget = sorted(
        (t for t in complete if t.constraints
         and max(abs(v) for v in t.constraints.values()) <= near),
        key=lambda t: max(abs(v) for v in t.constraints.values()))
    out, seen = [], set()
    for t in [*front, *near_budget]:
        key = t.user_attrs.get("config_key") or json.dumps(t.params, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(t)
    return out[:limit]


@dataclass
class Remeasured:
    """Re-measured candidates (test split, strict timing), the feasible front among them, and
    the budget hit rate (share of search-feasible candidates still feasible when re-measured)."""

    rows: pd.DataFrame
    front: pd.DataFrame
    hit_rate: float | None
    n_reported_feasible: int


def remeasure(study: optuna.Study, objective: SearchObjective, *, near: float = 0.15,
              limit: int = 20, factor: float = 4.0, progress: bool = True) -> Remeasured:
    """Re-time candidates with :func:`strict_profile` and evaluate them on the test split.

    The front is chosen with the search's *validation* accuracy (never the test accuracy) and the
    re-measured costs; rows report the test accuracy in ``accuracy_top1`` and the validation one
    in ``val_accuracy_top1``.
    """
    from tqdm.auto import tqdm

    spec = objective.spec
    profile = strict_profile(objective.profile, factor)
    rows = []
    for t in tqdm(remeasure_candidates(study, spec, near=near, limit=limit), desc="re-measure",
                  unit="config", disable=not progress, leave=False):
        chosen = objective.space.config(t.params)
        m = objective.measure(chosen.record, objective.build(chosen), split="test",
                              profile=profile, speedup_vs_dense=True)
        row = measurement_row(m)
        cons = constraint_values(row, spec.budgets, noise_margin=False)
        row.update({"run_kind": "search", "label": f"trial {t.number}",
                    "trial_number": t.number, "val_accuracy_top1": t.user_attrs.get(
                        "accuracy_top1"), "search_latency_p50_ms": t.user_attrs.get(
                        "latency_p50_ms"), "feasible_search": is_feasible(t),
                    "feasible": all(v <= 0 for v in cons.values()), "remeasured": True})
        row.update({f"constraint_{k}": v for k, v in cons.items()})
        rows.append(row)
    frame = pd.DataFrame(rows)
    return Remeasured(frame, feasible_front(frame, spec), *_hit_rate(frame))


def feasible_front(frame: pd.DataFrame, spec: SearchSpec,
                   accuracy_column: str = "val_accuracy_top1") -> pd.DataFrame:
    """Non-dominated feasible rows of ``frame``; accuracy is judged on ``accuracy_column``."""
    if frame.empty:
        return frame
    ok = frame[frame["feasible"].astype(bool)]
    if ok.empty:
        return ok
    cols = []
    for name in spec.objectives:
        column, direction = SEARCH_OBJECTIVES[name]
        column = accuracy_column if name == "accuracy" else column
        sign = 1.0 if direction == "minimize" else -1.0
        cols.append(pd.to_numeric(ok[column], errors="coerce").to_numpy(float) * sign)
    front = ok[non_dominated_mask(np.column_stack(cols))]
    first_col = SEARCH_OBJECTIVES[spec.objectives[0]][0]
    first_col = accuracy_column if spec.objectives[0] == "accuracy" else first_col
    ascending = SEARCH_OBJECTIVES[spec.objectives[0]][1] == "minimize"
    return front.sort_values(first_col, ascending=ascending, kind="stable")


def _hit_rate(frame: pd.DataFrame) -> tuple[float | None, int]:
    if frame.empty or "feasible_search" not in frame:
        return None, 0
    reported = frame[frame["feasible_search"].astype(bool)]
    if reported.empty:
        return None, 0
    return float(reported["feasible"].astype(bool).mean()), len(reported)
