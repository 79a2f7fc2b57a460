"""Matplotlib drawing only: trade-off plots of what ``prunebench.search.pareto`` computed.

Nothing here decides what is on a front or where the axes end; callers pass the points, the
fronts and the limits (STYLE item 10). One colour and marker per series from the Okabe-Ito
colour-blind-safe palette, the dense reference as a black star, fronts as step lines (the best
quality reachable at a given cost), the latency budget as a dashed line, whiskers on the cost
(the p50's CI or p50 to p90) and Wilson error bars on accuracy for front points, and, when given,
the other trials faintly behind. The caption is a separate file (the report writes it) and is
drawn into the image only when asked. Each plot is written as PNG (dpi 200) for screens plus SVG
and PDF for papers, at two-column (``full``) and one-column (``column``) width of a
:data:`FIGURE_STYLES` preset (``paper``: 7.0 / 3.5 in, 8 pt; ``slides``: larger fonts).
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

from prunebench.search.pareto import MINIMIZE, Objective, attainment_surfaces  # noqa: E402

# Okabe & Ito (2008), "Color Universal Design"; black is kept for the dense reference.
OKABE_ITO = ("#E69F00", "#0072B2", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">")
DENSE = "dense"
FORMATS = ("png", "svg", "pdf")
WIDTHS = ("full", "column")  # two-column (figure*) and one-column widths


@dataclass(frozen=True)
class FigureStyle:
    """Font size and the two widths of one preset; fonts never go below ``font_pt``."""

    font_pt: float
    widths_in: dict[str, float]
    marker: float  # front marker size (points) at column width


FIGURE_STYLES = {
    # a two-column paper's text width is ~7 in, one column ~3.5 in; 8 pt is the smallest
    # size most venues accept in figures
    "paper": FigureStyle(8.0, {"full": 7.0, "column": 3.5}, 5.0),
    # a 16:9 slide is 13.3 in wide: the full figure fills most of it, the column one half
    "slides": FigureStyle(16.0, {"full": 12.0, "column": 6.5}, 9.0),
}


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
    x_err_columns: tuple[str | None, str] | None = None  # whisker (low, high) columns of x;
    # low None: from x itself (p50 to p90)
    y_err_columns: tuple[str, str] | None = None  # error bar (low, high) columns of y (Wilson)
    log_x: bool = False
    xlim: tuple[float, float] | None = None  # None: matplotlib's own
    ylim: tuple[float, float] | None = None
    background: pd.DataFrame | None = None  # other trials, drawn faintly behind (--all-trials)


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


def _formatter(obj: Objective, span: float) -> PercentFormatter | EngFormatter | None:
    if obj.column.startswith("accuracy"):
        # whole percents once the axis spans a few points; decimals on a narrow one
        return PercentFormatter(xmax=1.0, decimals=0 if span >= 0.04 else None)
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
    xerr, yerr = _err(front, panel.x_err_columns, fx), _err(front, panel.y_err_columns, fy)
    if xerr is not None or yerr is not None:
        ax.errorbar(fx, fy, xerr=xerr, yerr=yerr, fmt="none", ecolor=style.color,
                    elinewidth=0.8, capsize=1.5, alpha=0.8, zorder=3)
    if name != DENSE:
        if len(front) > 1:
            _step(ax, front, panel, style)
        ax.plot(fx, fy, ls="none", marker=style.marker, ms=size, color=style.color, mec="white",
                mew=0.5, zorder=4)


def _err(rows: pd.DataFrame, columns: tuple[str | None, str] | None,
         values: np.ndarray) -> np.ndarray | None:
    """Asymmetric error bars (2, n) from (low, high) columns; None when there are none."""
    if columns is None or columns[1] not in rows.columns:
        return None
    high = pd.to_numeric(rows[columns[1]], errors="coerce").to_numpy(float)
    low = values if columns[0] is None or columns[0] not in rows.columns else \
        pd.to_numeric(rows[columns[0]], errors="coerce").to_numpy(float)
    if np.isnan(high).all():
        return None
    return np.vstack([np.nan_to_num(np.clip(values - low, 0, None)),
                      np.nan_to_num(np.clip(high - values, 0, None))])


def _background(ax: plt.Axes, panel: Panel, styles: dict[str, Style], size: float) -> None:
    """The other trials (e.g. a search's val-scored trials), hollow and faint, behind all."""
    rows = panel.background
    if rows is None or rows.empty:
        return
    for name, group in rows.groupby("series", sort=False):
        st = styles.get(str(name)) or Style("0.5", "o")
        ax.plot(pd.to_numeric(group[panel.x.column], errors="coerce"),
                pd.to_numeric(group[panel.y.column], errors="coerce"), ls="none",
                marker=st.marker, ms=size * 0.7, mfc="none", mec=st.color, mew=0.5,
                alpha=0.35, zorder=0.5)


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


def _rc(font: float) -> dict[str, float | str]:
    """Matplotlib settings of a figure at ``font`` points (text kept as text in SVG and PDF)."""
    return {"font.size": font, "axes.titlesize": font + 1, "legend.fontsize": font,
            "axes.labelsize": font, "xtick.labelsize": font, "ytick.labelsize": font,
            "svg.fonttype": "none", "pdf.fonttype": 42}


def _frame(ax: plt.Axes, x: Objective, y: Objective) -> None:
    """Axis labels, tick formats for the drawn span (not the points': some lie past a budget or
    a limit), a light grid behind the data, no top or right spine."""
    for axis, obj, (low, high) in ((ax.xaxis, x, ax.get_xlim()), (ax.yaxis, y, ax.get_ylim())):
        fmt = _formatter(obj, high - low)
        if fmt is not None:
            axis.set_major_formatter(fmt)
    ax.set_xlabel(x.label)
    ax.set_ylabel(y.label)
    ax.grid(True, color="0.9", lw=0.6)
    ax.set_axisbelow(True)
    ax.spines[["top", "right"]].set_visible(False)


def _save(fig: plt.Figure, out_stem: Path, formats: Sequence[str]) -> list[Path]:
    """``fig`` written as ``out_stem`` + each format, then closed; the paths."""
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in formats:
        path = out_stem.with_suffix(f".{ext}")
        fig.savefig(path, dpi=200 if ext == "png" else None)
        paths.append(path)
    plt.close(fig)
    return paths


def draw_tradeoff(panel: Panel, out_stem: Path, *, title: str, caption: str,
                  styles: dict[str, Style] | None = None, width: str = "full",
                  formats: Sequence[str] = FORMATS, labels: dict[str, str] | None = None,
                  style: str = "paper", caption_in_figure: bool = False) -> list[Path]:
    """Draw ``panel`` and write ``out_stem`` + ``.png``/``.svg``/``.pdf``; returns the paths.

    ``width`` is ``full`` (two-column) or ``column`` (one-column) of the ``style`` preset
    (:data:`FIGURE_STYLES`). ``labels`` maps series names to legend text (default: the name).
    ``title`` and ``caption`` are drawn only with ``caption_in_figure`` (a paper's caption is
    its own text; the report writes it beside the figure).
    """
    names = list(dict.fromkeys(panel.points["series"]))
    styles = styles or series_styles(names)
    preset = FIGURE_STYLES[style]
    w = preset.widths_in[width]
    font = preset.font_pt
    size = preset.marker * (1.0 if width == "column" else 1.2)
    with plt.rc_context(_rc(font)):
        fig, ax = plt.subplots(figsize=(w, w * (0.8 if width == "column" else 0.5)),
                               layout="constrained")
        _background(ax, panel, styles, size)
        for name in names:
            _draw_series(ax, panel, name, styles[name], size)
        budget_label = None
        if panel.budget is not None:
            ax.axvline(panel.budget, color="0.25", ls="--", lw=1.0, zorder=0)
            budget_label = f"budget {panel.budget:g} ms"
        if panel.log_x:
            ax.set_xscale("log")
        if panel.xlim is not None:
            ax.set_xlim(*panel.xlim)
        if panel.ylim is not None:
            ax.set_ylim(*panel.ylim)
        _frame(ax, panel.x, panel.y)
        ncol = 2 if width == "column" else 4
        # above the axes, so it never covers data; constrained layout makes room for it
        ax.legend(handles=_handles(names, styles, size, budget_label, labels or {}),
                  loc="lower center", bbox_to_anchor=(0.5, 1.01),
                  ncol=min(ncol, len(names) + bool(budget_label)), frameon=False,
                  handlelength=1.5, columnspacing=1.0, borderaxespad=0.2)
        if caption_in_figure:
            fig.suptitle(title, fontsize=font + 2, fontweight="bold")
            chars = int(w * 72 / (font * 0.58))  # ~ characters per line at this size
            fig.supxlabel(textwrap.fill(caption, chars), fontsize=font, ha="left", x=0.01,
                          color="0.2")
        return _save(fig, out_stem, formats)


@dataclass(frozen=True)
class AttainmentPanel:
    """One attainment plot: per series (an arm of a benchmark), one points table per seed."""

    title: str
    cost: Objective
    quality: Objective
    runs: dict[str, list[pd.DataFrame]]
    budget: float | None = None  # cost value of the budget line, or None


def draw_attainment(panels: Sequence[AttainmentPanel], out_stem: Path, *,
                    formats: Sequence[str] = FORMATS, style: str = "paper",
                    labels: dict[str, str] | None = None) -> list[Path]:
    """Empirical attainment surfaces (as OptunaHub's ``plot_empirical_attainment_surface``), one
    axes per panel, two per row: per series the median attainment surface as a line and the band
    from its best to its worst seed's surface. Writes ``out_stem`` + each format; the paths."""
    preset = FIGURE_STYLES[style]
    font, w = preset.font_pt, preset.widths_in["full"]
    ncol = min(2, len(panels))
    nrow = -(-len(panels) // ncol)
    names = list(dict.fromkeys(n for p in panels for n in p.runs))
    styles = series_styles(names)
    with plt.rc_context(_rc(font)):
        fig, axes = plt.subplots(nrow, ncol, figsize=(w, w * 0.4 * nrow), layout="constrained",
                                 squeeze=False)
        for ax, panel in zip(axes.flat, panels, strict=False):
            frames = [f for runs in panel.runs.values() for f in runs if len(f)]
            if not frames:
                ax.set_title(f"{panel.title}: no point in budget")
                continue
            costs = pd.concat([pd.to_numeric(f[panel.cost.column]) for f in frames])
            quality = pd.concat([pd.to_numeric(f[panel.quality.column]) for f in frames])
            right = panel.budget if panel.budget is not None else float(costs.max())
            grid = np.unique(np.append(costs.to_numpy(float), right))
            grid = grid[grid <= right] if panel.cost.direction == MINIMIZE else grid
            floor = float(quality.min())
            for rank, (name, runs) in enumerate(panel.runs.items()):
                top = 3 + len(panel.runs) - rank  # the first series is drawn on top
                surf = attainment_surfaces(runs, panel.cost, panel.quality, grid)
                median = surf[-(-len(runs) // 2) - 1]
                low = np.where(np.isnan(surf[-1]), floor, surf[-1])
                color = styles[name].color
                ax.fill_between(grid, low, surf[0], where=~np.isnan(surf[0]), step="post",
                                color=color, alpha=0.18, lw=0, zorder=1)
                ax.step(grid, median, where="post", color=color, lw=1.4, zorder=top)
            if panel.budget is not None:
                ax.axvline(panel.budget, color="0.25", ls="--", lw=1.0, zorder=0)
            ax.set_title(panel.title)
            _frame(ax, panel.cost, panel.quality)
        for ax in list(axes.flat)[len(panels):]:
            ax.set_visible(False)
        seeds = max(len(runs) for p in panels for runs in p.runs.values())
        handles = [Line2D([], [], color=styles[n].color, lw=1.4,
                          label=(labels or {}).get(n, n)) for n in names]
        fig.legend(handles=handles, loc="outside upper center", ncol=min(4, len(names)),
                   frameon=False, title=f"line: median attainment over {seeds} seeds; band: "
                   "best to worst seed; dashed: budget")
        return _save(fig, out_stem, formats)
