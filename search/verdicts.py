"""Verdicts that hold: the best configuration under a budget, and dynamic vs static, with noise.

Pure functions on the merged points table after :func:`prunebench.search.intervals.
with_intervals`. A point competes under a budget when its latency interval lies within the budget
or contains it ("at the budget", labelled). Two points are *within noise* of each other when their
95% Wilson accuracy intervals overlap; then the report says "tie within noise: A and B" instead
of naming a winner. The dynamic-vs-static verdict compares each family's best point under each
budget (the best point of a family under a budget is on its front) in one sentence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from prunebench.search.intervals import (
    AT,
    UNDER,
    accuracy_overlap,
    accuracy_text,
    budget_status,
    latency_overlap,
)


@dataclass(frozen=True)
class BudgetVerdict:
    """What fits one latency budget: each series' best point, the winner or the tie."""

    budget_ms: float
    best: pd.DataFrame  # one row per series (its best under or at the budget), ``budget_status``
    winner: pd.Series | None  # the most accurate of them (faster first on equal accuracy)
    tied: list[pd.Series]  # the series' bests within noise of the winner, winner first (or [])

    @property
    def headline(self) -> str:
        """One sentence: the winner, or the tie within noise, or that nothing fits."""
        if self.winner is None:
            return ("No measured configuration fits this budget, not even within its latency "
                    "CI.")
        if self.tied:
            names = " and ".join(name(r) + (" [at the budget]" if r["budget_status"] == AT
                                             else "") for r in self.tied)
            accs = " vs ".join(accuracy_text(r) for r in self.tied)
            return (f"Tie within noise: {names}; their 95% accuracy intervals overlap "
                    f"({accs}).")
        text = f"Best: **{name(self.winner)}**, {accuracy_text(self.winner)} top-1"
        text += f" at {self.winner['latency_p50_ms']:.4g} ms p50"
        if self.winner["budget_status"] == AT:
            text += f" ({at_budget_text(self.winner, self.budget_ms)})"
        others = [r for _, r in self.best.iterrows() if r["series"] != self.winner["series"]]
        unknown = [r for r in others if accuracy_overlap(r, self.winner) is None]
        if unknown:
            text += ("; no interval for " + ", ".join(name(r) for r in unknown)
                     + ", so whether it is ahead of them beyond noise is unknown")
        elif others:
            text += "; ahead of every other series beyond noise (no interval overlaps)"
        return text + "."


def name(row: pd.Series) -> str:
    """``series, label (run R)``."""
    return f"{row['series']}, {row['label']} (run {row['run']})"


def at_budget_text(row: pd.Series, budget_ms: float) -> str:
    """``at the budget: its p50 CI [1.257, 1.303] ms contains 1.28 ms``."""
    return (f"at the budget: its p50 CI [{row['latency_ci_low_ms']:.4g}, "
            f"{row['latency_ci_high_ms']:.4g}] ms contains {budget_ms:g} ms")


def _fits(df: pd.DataFrame, budget_ms: float) -> pd.DataFrame:
    acc = pd.to_numeric(df["accuracy_top1"], errors="coerce")
    lat = pd.to_numeric(df["latency_p50_ms"], errors="coerce")
    rows = df[acc.notna() & lat.notna()]
    rows = rows.assign(budget_status=budget_status(rows, budget_ms))
    return rows[rows["budget_status"].isin([UNDER, AT])]


def _pick(rows: pd.DataFrame) -> pd.Series | None:
    """The most accurate row, the faster on equal accuracy, then the first."""
    if rows.empty:
        return None
    key = pd.DataFrame({"a": -pd.to_numeric(rows["accuracy_top1"]).to_numpy(float),
                        "l": pd.to_numeric(rows["latency_p50_ms"]).to_numpy(float),
                        "i": np.arange(len(rows))})
    return rows.iloc[int(key.sort_values(["a", "l", "i"]).iloc[0]["i"])]


def budget_verdict(df: pd.DataFrame, budget_ms: float) -> BudgetVerdict:
    """Each series' best point under or at ``budget_ms``, and the winner or the tie."""
    fits = _fits(df, budget_ms)
    best = [r for _, g in fits.groupby("series", sort=False) if (r := _pick(g)) is not None]
    frame = pd.DataFrame(best) if best else fits.iloc[:0]
    winner = _pick(frame)
    tied: list[pd.Series] = []
    if winner is not None:
        near = [r for r in best if r["series"] != winner["series"]
                and accuracy_overlap(r, winner)]
        tied = [winner, *near] if near else []
    return BudgetVerdict(budget_ms, frame, winner, tied)


def family_sentence(df: pd.DataFrame, budget_ms: float, kind: str = "dynamic") -> str:
    """One sentence: at ``budget_ms``, which front (static or ``kind``) is ahead, by how much, and
    whether that exceeds the noise (the accuracy intervals; on a tie, the latency intervals)."""
    pre = f"At {budget_ms:g} ms:"
    static = _pick(_fits(df[df["kind"] == "static"], budget_ms))
    other = _pick(_fits(df[df["kind"] == kind], budget_ms))
    if static is None and other is None:
        return f"{pre} neither the static nor the {kind} points reach the budget."
    if static is None or other is None:
        only, row = ("static", static) if other is None else (kind, other)
        return (f"{pre} only the {only} front reaches the budget (best {name(row)}, "
                f"{accuracy_text(row)} top-1).")
    gap = float(other["accuracy_top1"]) - float(static["accuracy_top1"])
    ahead = kind if gap > 0 else "static"
    pair = (f"{kind} {accuracy_text(other)}, {other['label']} vs static "
            f"{accuracy_text(static)}, {static['label']}")
    overlap = accuracy_overlap(other, static)
    if overlap is None:
        return (f"{pre} the {ahead} front is ahead by {100 * abs(gap):.2f} pp top-1 ({pair}); "
                "whether that exceeds the noise is unknown (no accuracy interval recorded).")
    if not overlap:
        return (f"{pre} the {ahead} front is ahead by {100 * abs(gap):.2f} pp top-1 ({pair}); "
                "this exceeds the noise (the 95% accuracy intervals do not overlap).")
    ls, lo = float(static["latency_p50_ms"]), float(other["latency_p50_ms"])
    faster, slow, fast = (kind, ls, lo) if lo < ls else ("static", lo, ls)
    lat = latency_overlap(other, static)
    noise = ("within the latency CIs" if lat else "beyond the latency CIs" if lat is False
             else "no latency CI to judge it")
    return (f"{pre} a tie within noise on accuracy ({100 * abs(gap):.2f} pp apart, the 95% "
            f"intervals overlap: {pair}); the {faster} point is faster by "
            f"{slow - fast:.3g} ms ({100 * (slow - fast) / slow:.1f}%, {noise}).")
