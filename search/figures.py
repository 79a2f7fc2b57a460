"""Figure options of a report (limits, whiskers, error bars, style) and the automatic limits.

:class:`FigureOptions` is checked when it is made (:func:`figure_options`), before any run is
read. :func:`auto_limits` is a pure function: the y-axis runs from the lowest front point within
``y_within_pp`` points of dense accuracy to the best accuracy (error bars included), the x-axis
from the fastest point inside that y range (its whisker included) to the dense reference, each
padded by :data:`PAD`. Points outside the limits are counted (:func:`outside`) and the caption
says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from prunebench.harness.errors import PrunebenchError
from prunebench.search.plots import FIGURE_STYLES, FORMATS, WIDTHS

WHISKERS = ("off", "ci", "p90")
LIMIT_MODES = ("auto", "data")  # auto: the region that matters; data: every point (matplotlib's)
DEFAULT_Y_WITHIN_PP = 10.0  # accuracy points below dense that the automatic y-axis still shows
PAD = 0.05  # fraction of the span added on each side of automatic limits

Limits = tuple[float, float] | str


@dataclass(frozen=True)
class FigureOptions:
    """How the report's plots are drawn (``xlim`` in ms of the latency axis; ``ylim`` in %)."""

    xlim: Limits = "auto"
    ylim: Limits = "auto"
    y_within_pp: float = DEFAULT_Y_WITHIN_PP
    whiskers: str = "ci"
    accuracy_bars: bool = True
    all_trials: bool = False
    caption_in_figure: bool = False
    style: str = "paper"
    widths: tuple[str, ...] = WIDTHS
    formats: tuple[str, ...] = FORMATS
    log_latency: bool = False


def parse_limits(value: str | Sequence[float] | None, flag: str) -> Limits:
    """``"auto"``, ``"data"``, or ``"LOW,HIGH"`` (numbers, LOW < HIGH) -> a limit setting."""
    if value is None:
        return "auto"
    if isinstance(value, str) and value.strip().lower() in LIMIT_MODES:
        return value.strip().lower()
    parts = value.split(",") if isinstance(value, str) else list(value)
    try:
        low, high = (float(p) for p in parts)
    except (TypeError, ValueError):
        low = high = float("nan")
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise PrunebenchError(f"{flag} {value!r} is not LOW,HIGH with LOW < HIGH, 'auto' or "
                              f"'data'; give e.g. {flag} 0.5,2.0")
    return (low, high)


def figure_options(*, xlim: str | Sequence[float] | None = None,
                   ylim: str | Sequence[float] | None = None,
                   y_within_pp: float = DEFAULT_Y_WITHIN_PP, whiskers: str = "ci",
                   accuracy_bars: bool = True, all_trials: bool = False,
                   caption_in_figure: bool = False, style: str = "paper",
                   widths: str | Sequence[str] = WIDTHS, formats: Sequence[str] = FORMATS,
                   log_latency: bool = False) -> FigureOptions:
    """Checked :class:`FigureOptions`; a bad value is one line naming it and the fix."""
    if whiskers not in WHISKERS:
        raise PrunebenchError(f"--whiskers {whiskers!r}: use one of {', '.join(WHISKERS)}")
    if style not in FIGURE_STYLES:
        raise PrunebenchError(f"--style {style!r}: use one of {', '.join(FIGURE_STYLES)}")
    if not (np.isfinite(y_within_pp) and y_within_pp > 0):
        raise PrunebenchError(f"--ylim-within {y_within_pp!r} is not a positive number of "
                              "accuracy points; give e.g. --ylim-within 10")
    parts = widths.split(",") if isinstance(widths, str) else list(widths)
    chosen = tuple(w.strip() for w in parts if w.strip())
    if not chosen or any(w not in WIDTHS for w in chosen):
        raise PrunebenchError(f"--widths {','.join(parts)!r}: use full (two-column) and/or "
                              "column (one-column), e.g. --widths full,column")
    y = parse_limits(ylim, "--ylim")
    if isinstance(y, tuple):
        y = (y[0] / 100.0, y[1] / 100.0)  # given in %, accuracy is stored as a fraction
    return FigureOptions(parse_limits(xlim, "--xlim"), y, float(y_within_pp), whiskers,
                         accuracy_bars, all_trials, caption_in_figure, style, chosen,
                         tuple(formats), log_latency)


def _pad(low: float, high: float, log: bool) -> tuple[float, float]:
    if log and low > 0:
        span = np.log10(high / low) or 1.0
        return low / 10 ** (PAD * span), high * 10 ** (PAD * span)
    span = (high - low) or (abs(high) or 1.0)
    return low - PAD * span, high + PAD * span


def _num(rows: pd.DataFrame, column: str | None) -> np.ndarray:
    if column is None or column not in rows.columns:
        return np.full(len(rows), np.nan)
    return pd.to_numeric(rows[column], errors="coerce").to_numpy(float)


def auto_limits(points: pd.DataFrame, fronts: dict[str, pd.DataFrame], x: str, y: str, *,
                x_low: str | None = None, x_high: str | None = None,
                y_low: str | None = None, y_high: str | None = None,
                y_within: float = DEFAULT_Y_WITHIN_PP / 100, log_x: bool = False,
                ylim: tuple[float, float] | None = None,
                ) -> tuple[tuple[float, float] | None, tuple[float, float] | None]:
    """(xlim, ylim): y from the lowest front point within ``y_within`` (a fraction) of dense
    accuracy to the best (or the given ``ylim``); x from the fastest point inside that y range
    to dense. None where nothing bounds an axis.

    ``x_low``/``x_high``/``y_low``/``y_high`` name whisker and error-bar columns to include.
    """
    ylim = ylim if ylim is not None else _auto_y(points, fronts, y, y_low, y_high, y_within)
    dense = points[points["series"] == "dense"]
    ys = _num(points, y)
    shown = points[(ys >= ylim[0]) & (ys <= ylim[1])] if ylim is not None else points
    xs = np.concatenate([_num(shown, x), _num(shown, x_low)])
    xs = xs[np.isfinite(xs)]
    dense_x = np.concatenate([_num(dense, x), _num(dense, x_high)])
    dense_x = dense_x[np.isfinite(dense_x)]
    xlim = None
    if len(xs):
        high = dense_x.max() if len(dense_x) else xs.max()
        if high > xs.min():
            xlim = _pad(float(xs.min()), float(high), log_x)
    return xlim, ylim


def _auto_y(points: pd.DataFrame, fronts: dict[str, pd.DataFrame], y: str, y_low: str | None,
            y_high: str | None, y_within: float) -> tuple[float, float] | None:
    ys_all = np.concatenate([_num(points, y), _num(points, y_high)])
    ys_all = ys_all[np.isfinite(ys_all)]
    if not len(ys_all):
        return None
    dense_y = _num(points[points["series"] == "dense"], y)
    ref = np.nanmax(dense_y) if np.isfinite(dense_y).any() else ys_all.max()
    near = []
    for series, f in fronts.items():
        if series == "dense" or f.empty:
            continue
        fy, lo = _num(f, y), _num(f, y_low)
        ok = np.isfinite(fy) & (fy >= ref - y_within)
        near.append(np.where(np.isfinite(lo[ok]), lo[ok], fy[ok]))
    lows = np.concatenate(near) if near else np.array([])
    low = float(lows.min()) if len(lows) else float(ref - y_within)
    high = float(ys_all.max())
    return _pad(low, high, False) if high > low else None


def outside(points: pd.DataFrame, x: str, y: str, xlim: tuple[float, float] | None,
            ylim: tuple[float, float] | None) -> int:
    """How many points with both values lie outside the limits (None: that axis unbounded)."""
    xs, ys = _num(points, x), _num(points, y)
    ok = np.isfinite(xs) & np.isfinite(ys)
    out = np.zeros(len(points), dtype=bool)
    if xlim is not None:
        out |= (xs < xlim[0]) | (xs > xlim[1])
    if ylim is not None:
        out |= (ys < ylim[0]) | (ys > ylim[1])
    return int((out & ok).sum())
