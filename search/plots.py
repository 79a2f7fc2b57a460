"""Matplotlib drawing only: trade-off plots of what ``prunebench.search.pareto`` computed.

Nothing here decides what is on a front; callers pass the points and the fronts (STYLE item 10).
One colour and marker per series from the Okabe-Ito colour-blind-safe palette, the dense
reference as a black star, fronts as step lines (the best quality reachable at a given cost),
the latency budget as a dashed line, and a caption naming model, data set, profile and machine.
Each plot is written as PNG (dpi 200) for screens plus SVG and PDF for papers, at full width
(6.5 in) and at column width (3.5 in), with no font below 8 pt.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import EngFormatter, PercentFormatter  # noqa: E402

from prunebench.search.pareto import MINIMIZE, Objective  # noqa: E402

# Okabe & Ito (2008), "Color Universal Design"; black is kept for the dense reference.
OKABE_ITO = ("#E69F00", "#0072B2", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">")
DENSE = "dense"
FORMATS = ("png", "svg", "pdf")
WIDTHS_IN = {"full": 6.5, "column": 3.5}
FONT_PT = 8.0


@dataclass(frozen=True)
class Style:
    """How one series is drawn."""

    color: str
    marker: str


@dataclass(frozen=True)
class Panel:
    """One trade-off plot: y (usually accuracy) against x (a cost), with what to draw on it."""

    x: Objective
    y: Objective
    points: pd.DataFrame  # every point, with a ``series`` column
    fronts: dict[str, pd.DataFrame]  # series -> its non-dominated rows for (x, y)
    budget: float | None = None  # x value of the budget line (same unit as x), or None
    x_upper_column: str | None = None  # e.g. latency_p90_ms: whisker from x to this column
    log_x: bool = False


def series_styles(series: Sequence[str]) -> dict[str, Style]:
    """A fixed colour and marker per series (in the given order); ``dense`` is a black star."""
    out, i = {}, 0
    for name in dict.fromkeys(series):
        if name == DENSE:
            out[name] = Style("#000000", "*")
            continue
        out[name] = Style(OKABE_ITO[i % len(OKABE_ITO)], MARKERS[i % len(MARKERS)])
        i += 1
    return out


def _formatter(obj: Objective) -> PercentFormatter | EngFormatter | None:
    if obj.column.startswith("accuracy"):
        return PercentFormatter(xmax=1.0, decimals=None)
    if obj.column in ("macs", "params", "flops") or obj.column.endswith("bytes"):
        return EngFormatter(places=0, sep="")
    return None


def _step(ax: plt.Axes, front: pd.DataFrame, panel: Panel, style: Style) -> None:
    """The front as a staircase: the best y reachable at cost <= x (only when x is a cost)."""
    xs = pd.to_numeric(front[panel.x.column], errors="coerce").to_numpy(float)
    ys = pd.to_numeric(front[panel.y.column], errors="coerce").to_numpy(float)
    order = np.argsort(xs) if panel.x.direction == MINIMIZE else np.argsort(-xs)
    ax.step(xs[order], ys[order], where="post", color=style.color, lw=1.3, alpha=0.9, zorder=2)


def _draw_series(ax: plt.Axes, panel: Panel, name: str, style: Style, size: float) -> None:
    rows = panel.points[panel.points["series"] == name]
    x = pd.to_numeric(rows[panel.x.column], errors="coerce")
    y = pd.to_numeric(rows[panel.y.column], errors="coerce")
    if name == DENSE:
        ax.plot(x, y, ls="none", marker="*", ms=size * 2.2, color=style.color, mec="white",
                mew=0.6, zorder=5)
    else:  # dominated points faint, the front bold
        ax.plot(x, y, ls="none", marker=style.marker, ms=size * 0.8, color=style.color,
                alpha=0.3, mew=0, zorder=1)
    front = panel.fronts.get(name)
    if front is None or front.empty:
        return
    fx = pd.to_numeric(front[panel.x.column], errors="coerce").to_numpy(float)
    fy = pd.to_numeric(front[panel.y.column], errors="coerce").to_numpy(float)
    if panel.x_upper_column and panel.x_upper_column in front.columns:
        hi = pd.to_numeric(front[panel.x_upper_column], errors="coerce").to_numpy(float)
        err = np.vstack([np.zeros_like(fx), np.nan_to_num(np.clip(hi - fx, 0, None))])
        ax.errorbar(fx, fy, xerr=err, fmt="none", ecolor=style.color, elinewidth=0.9,
                    capsize=1.5, alpha=0.8, zorder=3)
    if name != DENSE:
        if len(front) > 1:
            _step(ax, front, panel, style)
        ax.plot(fx, fy, ls="none", marker=style.marker, ms=size, color=style.color, mec="white",
                mew=0.5, zorder=4)


def _handles(names: Sequence[str], styles: dict[str, Style], size: float,
             budget_label: str | None, labels: dict[str, str]) -> list[Line2D]:
    out = []
    for name in names:
        st = styles[name]
        label = "dense (reference)" if name == DENSE else labels.get(name, name)
        out.append(Line2D([], [], color=st.color, marker=st.marker, ls="-" if name != DENSE
                          else "none", ms=size * (2.0 if name == DENSE else 1.0), lw=1.3,
                          label=label))
    if budget_label:
        out.append(Line2D([], [], color="0.25", ls="--", lw=1.0, label=budget_label))
    return out


def draw_tradeoff(panel: Panel, out_stem: Path, *, title: str, caption: str,
                  styles: dict[str, Style] | None = None, width: str = "full",
                  formats: Sequence[str] = FORMATS,
                  labels: dict[str, str] | None = None) -> list[Path]:
    """Draw ``panel`` and write ``out_stem`` + ``.png``/``.svg``/``.pdf``; returns the paths.

    ``width`` is ``full`` (6.5 in) or ``column`` (3.5 in); fonts stay >= 8 pt at either.
    ``labels`` maps series names to legend text (default: the name).
    """
    names = list(dict.fromkeys(panel.points["series"]))
    styles = styles or series_styles(names)
    w = WIDTHS_IN[width]
    size = 5.0 if width == "column" else 6.0
    with plt.rc_context({"font.size": FONT_PT + (0 if width == "column" else 1),
                         "axes.titlesize": FONT_PT + 1, "legend.fontsize": FONT_PT,
                         "xtick.labelsize": FONT_PT, "ytick.labelsize": FONT_PT,
                         "svg.fonttype": "none", "pdf.fonttype": 42}):
        fig, ax = plt.subplots(figsize=(w, w * (1.0 if width == "column" else 0.62)),
                               layout="constrained")
        for name in names:
            _draw_series(ax, panel, name, styles[name], size)
        budget_label = None
        if panel.budget is not None:
            ax.axvline(panel.budget, color="0.25", ls="--", lw=1.0, zorder=0)
            budget_label = f"budget {panel.budget:g} ms"
        if panel.log_x:
            ax.set_xscale("log")
        for axis, obj in ((ax.xaxis, panel.x), (ax.yaxis, panel.y)):
            fmt = _formatter(obj)
            if fmt is not None:
                axis.set_major_formatter(fmt)
        ax.set_xlabel(panel.x.label)
        ax.set_ylabel(panel.y.label)
        ax.grid(True, color="0.9", lw=0.6)
        ax.set_axisbelow(True)
        ax.spines[["top", "right"]].set_visible(False)
        ncol = 2 if width == "column" else 3
        # above the axes, so it never covers data; constrained layout makes room for it
        ax.legend(handles=_handles(names, styles, size, budget_label, labels or {}),
                  loc="lower center", bbox_to_anchor=(0.5, 1.01),
                  ncol=min(ncol, len(names) + bool(budget_label)), frameon=False,
                  handlelength=1.8, columnspacing=1.2, borderaxespad=0.2)
        fig.suptitle(title, fontsize=FONT_PT + 2, fontweight="bold")
        chars = int(w * 72 / (FONT_PT * 0.58))  # ~ characters per line at 8 pt
        fig.supxlabel(textwrap.fill(caption, chars), fontsize=FONT_PT, ha="left", x=0.01,
                      color="0.2")
        out_stem.parent.mkdir(parents=True, exist_ok=True)
        paths = []
        for ext in formats:
            path = out_stem.with_suffix(f".{ext}")
            fig.savefig(path, dpi=200 if ext == "png" else None)
            paths.append(path)
        plt.close(fig)
    return paths
