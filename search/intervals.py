"""Confidence intervals of the points a report compares, and the budget test that uses them.

Accuracy: the Wilson score interval of the binomial proportion ``correct / accuracy_n`` (the
count of correct test images is ``round(accuracy_top1 * accuracy_n)``). Latency: the p50's 95%
CI recorded with the measurement (``latency_ci_rel``, the larger half-width over the median, so
``p50 * (1 -/+ latency_ci_rel)`` is a symmetric, conservative interval). A point without
``accuracy_n`` or a finite ``latency_ci_rel`` has no interval (NaN), and the report says so.

The budget test (:func:`budget_status`) reads the latency interval: a point whose interval lies
within the budget is ``under``, one whose interval contains the budget is ``at`` the budget (shown
and labelled, never dropped), one whose interval lies above it is ``over``.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pandas as pd

CONFIDENCE = 0.95
UNDER, AT, OVER = "under", "at the budget", "over"
INTERVAL_COLUMNS = ("accuracy_correct", "accuracy_ci_low", "accuracy_ci_high",
                    "latency_ci_low_ms", "latency_ci_high_ms")


def wilson_interval(correct: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval ``(low, high)`` of the proportion ``correct / n`` (fractions)."""
    if n <= 0 or not 0 <= correct <= n:
        raise ValueError(f"wilson_interval needs 0 <= correct <= n and n > 0, got {correct}/{n}")
    z = NormalDist().inv_cdf(1.0 - (1.0 - confidence) / 2.0)
    p = correct / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def with_intervals(df: pd.DataFrame, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """``df`` plus :data:`INTERVAL_COLUMNS` (NaN where a point recorded no sample size / CI)."""
    out = df.copy()
    acc = pd.to_numeric(out["accuracy_top1"], errors="coerce")
    n = pd.to_numeric(out.get("accuracy_n"), errors="coerce") if "accuracy_n" in out else \
        pd.Series(np.nan, index=out.index)
    correct, low, high = [], [], []
    for a, k in zip(acc, n, strict=True):
        if np.isfinite(a) and np.isfinite(k) and k > 0:
            c = int(round(a * k))
            lo, hi = wilson_interval(c, int(k), confidence)
            correct.append(c)
            low.append(lo)
            high.append(hi)
        else:
            correct.append(np.nan)
            low.append(np.nan)
            high.append(np.nan)
    out["accuracy_correct"], out["accuracy_ci_low"], out["accuracy_ci_high"] = correct, low, high
    p50 = pd.to_numeric(out["latency_p50_ms"], errors="coerce")
    rel = pd.to_numeric(out["latency_ci_rel"], errors="coerce") if "latency_ci_rel" in out \
        else pd.Series(np.nan, index=out.index)
    rel = rel.where(np.isfinite(rel))
    out["latency_ci_low_ms"] = p50 * (1 - rel)
    out["latency_ci_high_ms"] = p50 * (1 + rel)
    return out


def budget_status(df: pd.DataFrame, budget_ms: float) -> pd.Series:
    """Per row: :data:`UNDER`, :data:`AT` or :data:`OVER` the latency budget (None: no latency).

    Needs the columns of :func:`with_intervals`; a row without a latency CI is judged by its p50.
    """
    p50 = pd.to_numeric(df["latency_p50_ms"], errors="coerce")
    low = df["latency_ci_low_ms"].where(df["latency_ci_low_ms"].notna(), p50)
    high = df["latency_ci_high_ms"].where(df["latency_ci_high_ms"].notna(), p50)
    status = np.where(high <= budget_ms, UNDER, np.where(low > budget_ms, OVER, AT))
    return pd.Series(np.where(p50.isna(), None, status), index=df.index, dtype=object)


def accuracy_overlap(a: pd.Series, b: pd.Series) -> bool | None:
    """Whether the accuracy intervals of rows ``a`` and ``b`` overlap (None: one has none)."""
    vals = [a.get("accuracy_ci_low"), a.get("accuracy_ci_high"), b.get("accuracy_ci_low"),
            b.get("accuracy_ci_high")]
    if any(v is None or pd.isna(v) for v in vals):
        return None
    return bool(vals[0] <= vals[3] and vals[2] <= vals[1])


def latency_overlap(a: pd.Series, b: pd.Series) -> bool | None:
    """Whether the p50 latency intervals of rows ``a`` and ``b`` overlap (None: one has none)."""
    vals = [a.get("latency_ci_low_ms"), a.get("latency_ci_high_ms"), b.get("latency_ci_low_ms"),
            b.get("latency_ci_high_ms")]
    if any(v is None or pd.isna(v) for v in vals):
        return None
    return bool(vals[0] <= vals[3] and vals[2] <= vals[1])


def accuracy_text(row: pd.Series) -> str:
    """``94.99% [92.3, 96.8]`` (the Wilson interval in brackets, or ``(no interval)``)."""
    acc = row.get("accuracy_top1")
    if acc is None or pd.isna(acc):
        return "no accuracy"
    lo, hi = row.get("accuracy_ci_low"), row.get("accuracy_ci_high")
    if lo is None or pd.isna(lo):
        return f"{100 * acc:.2f}% (no interval: accuracy_n not recorded)"
    return f"{100 * acc:.2f}% [{100 * lo:.1f}, {100 * hi:.1f}]"
