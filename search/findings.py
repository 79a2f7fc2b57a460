"""What ``compare`` shows and labels instead of refusing (unless ``strict``).

- Runs scored on different splits (a search that re-measured nothing on test beside a sweep on
  test): each run keeps its own split, and the series of a run off the common split are labelled
  ``[val split]``.
- A search with nothing under its budget: shown, its series labelled ``[nothing under budget]``.
- Different latency anchors (the dense p50 a run's latencies are framed by: a search's recorded
  ``latency_anchor_ms``, else the run's own dense p50): a warning naming each and their ratio.

With ``strict`` each of these is a :class:`PrunebenchError` naming the runs and the way out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from prunebench.harness.errors import PrunebenchError
from prunebench.search.runs.folders import RunData, select_split

NOTHING_UNDER_BUDGET = "[nothing under budget]"


@dataclass
class Findings:
    """The rows kept, the accuracy note, the rows left out, and the warnings to show."""

    rows: pd.DataFrame
    split_note: str
    left_out: pd.DataFrame  # rows measured on a split not plotted (drawn faintly by --all-trials)
    warnings: list[str] = field(default_factory=list)


def _splits_per_run(merged: pd.DataFrame) -> dict[str, list[str]]:
    has_acc = pd.to_numeric(merged["accuracy_top1"], errors="coerce").notna()
    col = merged["accuracy_split"] if "accuracy_split" in merged else pd.Series(
        np.nan, index=merged.index)
    rows = merged[has_acc & col.notna()]
    return {str(r): sorted(map(str, g["accuracy_split"].unique()))
            for r, g in rows.groupby("run", sort=False)}


def _label(merged: pd.DataFrame, mask: pd.Series, tag: str) -> None:
    merged.loc[mask, "series"] = merged.loc[mask, "series"].astype(str) + f" {tag}"


def choose_split(merged: pd.DataFrame, split: str = "auto", *, allow_mixed: bool = False,
                 strict: bool = False) -> Findings:
    """Rows on one accuracy split, or, when runs were scored on different splits and neither a
    split nor ``strict`` is given, every run on its own split with the odd ones labelled."""
    per_run = _splits_per_run(merged)
    splits = sorted({s for vs in per_run.values() for s in vs})
    common = split == "auto" and not allow_mixed and len(splits) > 1 and not all(
        "test" in vs for vs in per_run.values())
    if not common:
        rows, note = select_split(merged, split, allow_mixed=allow_mixed)
        return Findings(rows, note, merged.drop(rows.index))
    where = "; ".join(f"{r}: {', '.join(v)}" for r, v in per_run.items())
    if strict:
        raise PrunebenchError(f"accuracies from different splits ({where}) cannot share one axis "
                              "under --strict; pass --split test or --split val, or drop "
                              "--strict to show them labelled")
    merged = merged.copy()
    col = merged["accuracy_split"]
    has_acc = pd.to_numeric(merged["accuracy_top1"], errors="coerce").notna()
    keep = pd.Series(True, index=merged.index)
    odd = []
    for run, vs in per_run.items():
        mine = merged["run"] == run
        if "test" in vs:
            keep &= ~(mine & has_acc & (col != "test"))
        else:
            odd.append(f"{run} ({', '.join(vs)})")
            for s in vs:
                _label(merged, mine & (col == s), f"[{s} split]")
    rows = merged[keep]
    warning = (f"accuracies on different splits ({where}): run(s) {', '.join(odd)} have no "
               "test accuracies and are shown on their own split, labelled; a search scores "
               "trials on val, so its accuracies are not directly comparable with test ones")
    note = ("accuracy on the test split where a run has it, else on the run's own split "
            "(labelled)")
    return Findings(rows, note, merged.drop(rows.index), [warning])


def _budget_text(run: RunData) -> str:
    spec = run.config.get("spec")
    budgets = spec.get("budgets") if isinstance(spec, dict) else None
    if isinstance(budgets, dict) and budgets:
        return ", ".join(f"{k} {v:g}" if isinstance(v, int | float) else f"{k} {v}"
                         for k, v in sorted(budgets.items()))
    return ", ".join(f"{b:g} ms" for b in run.budgets_ms)


def label_unmet_budgets(runs: list[RunData], merged: pd.DataFrame, *,
                        strict: bool = False) -> list[str]:
    """Label (in place) the series of searches none of whose trials met their budgets."""
    out = []
    if "feasible" not in merged:
        return out
    for run in runs:
        # the search's own rows that recorded whether they met its budgets
        mine = (merged["run"] == run.name) & (merged["run_kind"] == "search") & \
            merged["feasible"].notna()
        if not mine.any():
            continue
        feasible = merged.loc[mine, "feasible"].map(
            lambda v: str(v).strip().lower() in ("true", "1", "1.0"))
        if feasible.any():
            continue
        budgets = _budget_text(run) or "its budgets"
        if strict:
            raise PrunebenchError(f"search {run.name!r} has nothing under its budget ({budgets}) "
                                  "and --strict refuses it; drop --strict to show it labelled, "
                                  "or leave the run out")
        _label(merged, mine, NOTHING_UNDER_BUDGET)
        out.append(f"search {run.name} has nothing under its budget ({budgets}): shown, "
                   f"labelled {NOTHING_UNDER_BUDGET}")
    return out


def _anchor(rows: pd.DataFrame) -> tuple[float, str] | None:
    for env in rows.get("environment", pd.Series(dtype=object)).dropna():
        try:
            value = json.loads(env).get("latency_anchor_ms") if isinstance(env, str) else None
        except ValueError:
            continue
        if isinstance(value, int | float) and value > 0:
            return float(value), "recorded anchor"
    dense = pd.to_numeric(rows.loc[rows["kind"] == "dense", "latency_p50_ms"],
                          errors="coerce").dropna()
    return (float(dense.median()), "its dense p50") if len(dense) else None


def anchor_findings(merged: pd.DataFrame, *, strict: bool = False) -> list[str]:
    """A warning when the runs' latency frames (anchors) differ, naming each and their ratio."""
    anchors = {str(r): a for r, g in merged.groupby("run", sort=False)
               if (a := _anchor(g)) is not None}
    values = [v for v, _ in anchors.values()]
    if len(values) < 2 or max(values) == min(values):
        return []
    ratio = max(values) / min(values)
    where = "; ".join(f"{r}: {v:.4g} ms ({how})" for r, (v, how) in anchors.items())
    text = (f"runs use different latency anchors ({where}); the largest is {ratio:.3f}x the "
            "smallest, so their latencies are in different frames")
    if strict:
        raise PrunebenchError(f"{text}; under --strict give every search the same "
                              "--latency-anchor-ms (the sweep's dense p50), or drop --strict")
    return [text + "; give every search the same --latency-anchor-ms to compare them"]
