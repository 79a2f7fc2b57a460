"""Distribution-free statistics for timing samples: percentiles, the median's confidence interval.

The confidence interval of the median uses order statistics (no normality assumption): with
``n`` samples, ``[x_(k), x_(n-k+1)]`` covers the true median with probability at least the
confidence level, where ``k`` is the largest rank with ``P(Binomial(n, 1/2) < k) <= alpha / 2``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from statistics import NormalDist

_EXACT_UP_TO = 300  # above this the normal approximation of the binomial is used


@functools.lru_cache(maxsize=4096)
def median_ci_ranks(n: int, confidence: float = 0.95) -> tuple[int, int] | None:
    """1-based ranks ``(lo, hi)`` of the median's CI among ``n`` sorted samples, or ``None``.

    ``None`` means ``n`` is too small for the requested confidence (e.g. ``n < 6`` at 95%).
    """
    alpha_half = (1.0 - confidence) / 2.0
    if n <= _EXACT_UP_TO:
        k, cum = 0, 0.0
        # the cumulative binomial P(X <= k-1); grow k while it stays within alpha/2
        while k < n:
            nxt = cum + math.comb(n, k) / 2.0**n
            if nxt > alpha_half:
                break
            cum, k = nxt, k + 1
        if k == 0:
            return None
        return k, n - k + 1
    z = NormalDist().inv_cdf(1.0 - alpha_half)
    k = max(1, math.floor(n / 2.0 - z * math.sqrt(n) / 2.0))
    return k, n - k + 1


def percentile(sorted_samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation between order statistics."""
    if not sorted_samples:
        raise ValueError("percentile of no samples")
    pos = (len(sorted_samples) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_samples) - 1)
    return sorted_samples[lo] + (sorted_samples[hi] - sorted_samples[lo]) * (pos - lo)


def median_ci(sorted_samples: Sequence[float],
              confidence: float = 0.95) -> tuple[float, float] | None:
    """``(low, high)`` confidence interval of the median of already sorted samples, or ``None``."""
    ranks = median_ci_ranks(len(sorted_samples), confidence)
    if ranks is None:
        return None
    return sorted_samples[ranks[0] - 1], sorted_samples[ranks[1] - 1]


def median_ci_rel(sorted_samples: Sequence[float], confidence: float = 0.95) -> float:
    """The CI's larger half-width relative to the median (``inf`` if not yet defined)."""
    ci = median_ci(sorted_samples, confidence)
    if ci is None:
        return math.inf
    med = percentile(sorted_samples, 50.0)
    if med <= 0:
        return math.inf
    return max(med - ci[0], ci[1] - med) / med


def iqr(values: Sequence[float]) -> float:
    """Interquartile range (p75 - p25) with linear interpolation; 0 for a single value."""
    s = sorted(values)
    return percentile(s, 75.0) - percentile(s, 25.0)
