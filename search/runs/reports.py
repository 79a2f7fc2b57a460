"""Comparing runs, and reporting one: run folders (or a study in a storage) -> a report folder.

A report folder holds report.md, a self-contained report.html, plots (with caption files),
points/fronts CSVs, fronts.tex, methods.bib and summary.json
(:func:`prunebench.search.report.write_report`). Latencies from different profiles, engines,
machine fingerprints or batch sizes, and energies from different energy methods, are refused on
one axis unless ``allow_mixed``; the error names the runs and values. Runs scored on different
splits, searches with nothing under budget and different latency anchors are shown and labelled,
or refused with ``strict`` (:mod:`prunebench.search.findings`). Figure options (limits, whiskers,
error bars, style, widths, caption) are checked before any run is read
(:func:`prunebench.search.figures.figure_options`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prunebench.harness.errors import PrunebenchError
from prunebench.search.figures import FigureOptions, figure_options
from prunebench.search.report import DEFAULT_OBJECTIVES, write_report
from prunebench.search.runs.files import check_out_dir
from prunebench.search.runs.folders import RunData, load_run, storage_run

DEFAULT_FORMATS = ("png", "svg", "pdf")
PLOT_FORMATS = ("png", "svg", "pdf")


def check_formats(formats: str | Sequence[str]) -> tuple[str, ...]:
    """Plot formats, lower case; png must be among them (the HTML report embeds it)."""
    parts = formats.split(",") if isinstance(formats, str) else list(formats)
    out = tuple(f.strip().lower() for f in parts if f.strip())
    bad = [f for f in out if f not in PLOT_FORMATS]
    if bad or "png" not in out:
        text = ",".join(parts)
        raise PrunebenchError(f"--formats {text!r}: use png, svg and/or pdf, with png included "
                              "(the HTML report embeds it); e.g. --formats png,pdf")
    return out


def compare(runs: Sequence[str | Path | RunData], *, out: str | Path | None = None,
            budget_ms: float | Sequence[float] | None = None,
            objectives: str | Sequence[str] = DEFAULT_OBJECTIVES, allow_mixed: bool = False,
            split: str = "auto", strict: bool = False,
            formats: str | Sequence[str] = DEFAULT_FORMATS, **figure: Any) -> Path:
    """Merge runs (searches, baseline sweeps) on common axes into one report; returns its folder.

    ``runs`` are run folders (or :class:`RunData`); ``out`` defaults to
    ``results/compare-<timestamp>``. ``budget_ms``: latency budget(s) in ms (default: the runs'
    budgets, else 50 % and 75 % of the dense p50). ``objectives``: the fronts' and hypervolumes'
    objectives (short names ``accuracy``, ``latency_p50``, ``latency_p90``, ``energy``,
    ``macs``, ``params``, ``memory``, or ``COLUMN:min`` / ``COLUMN:max``). ``split``: the
    accuracy split plotted (``auto``: the only one, else test, else each run's own, labelled).
    ``strict``: refuse runs on different splits, searches with nothing under budget and
    different latency anchors instead of labelling them. ``formats``: plot files (png
    included). ``figure``: keywords of :func:`~prunebench.search.figures.figure_options`
    (``xlim``, ``ylim``, ``y_within_pp``, ``whiskers``, ``accuracy_bars``, ``all_trials``,
    ``caption_in_figure``, ``style``, ``widths``, ``log_latency``).
    """
    opts = figure_options(formats=check_formats(formats), **figure)  # before anything is read
    loaded = [r if isinstance(r, RunData) else load_run(r) for r in runs]
    folder = Path(out) if out is not None else \
        Path("results") / f"compare-{time.strftime('%Y%m%d-%H%M%S')}"
    write(loaded, folder, budget_ms=budget_ms, objectives=objectives, allow_mixed=allow_mixed,
          split=split, strict=strict, figures=opts)
    return folder


def report(run: str | Path | RunData, *, study: str | None = None,
           out: str | Path | None = None, **options: Any) -> Path:
    """The report of one run; returns its folder.

    ``run`` is a run folder (report in ``<run>/report`` by default) or a database storage URL
    with ``study`` (report in ``results/study-<study>/report``). ``options`` as for
    :func:`compare`.
    """
    options = _checked(options)
    if isinstance(run, str) and "://" in run:
        if not study:
            raise PrunebenchError(f"report from storage {run.split('://')[0]}://... needs "
                                  "--study NAME (see `prunebench study status`)")
        return study_report(run, study, out=out, **options)
    loaded = run if isinstance(run, RunData) else load_run(Path(run))
    if out is None and loaded.path is None:
        raise PrunebenchError(f"run {loaded.name!r} has no folder; give out= for its report")
    folder = Path(out) if out is not None else Path(loaded.path) / "report"
    write([loaded], folder, **options)
    return folder


def study_report(storage: str, study: str, *, out: str | Path | None = None,
                 **options: Any) -> Path:
    """The report of a study's complete trials, read from its database storage; returns its
    folder (default ``results/study-<study>/report``)."""
    options = _checked(options)
    folder = Path(out) if out is not None else Path("results") / f"study-{study}" / "report"
    write([storage_run(storage, study)], folder, **options)
    return folder


REPORT_KEYS = ("budget_ms", "objectives", "allow_mixed", "split", "strict", "figures")


def _checked(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` as :func:`write` takes them: figure keywords (and ``formats``) folded into one
    checked ``figures`` (:class:`FigureOptions`) before anything is read."""
    if isinstance(options.get("figures"), FigureOptions):
        return options
    rest = {k: v for k, v in options.items() if k in REPORT_KEYS}
    figure = {k: v for k, v in options.items() if k not in REPORT_KEYS}
    formats = check_formats(figure.pop("formats", DEFAULT_FORMATS))
    return {**rest, "figures": figure_options(formats=formats, **figure)}


def write(runs: list[RunData], out: Path, *, budget_ms: float | Sequence[float] | None = None,
          objectives: str | Sequence[str] = DEFAULT_OBJECTIVES, allow_mixed: bool = False,
          split: str = "auto", strict: bool = False,
          figures: FigureOptions | None = None) -> dict[str, Any]:
    """Write the report of ``runs`` into ``out``; returns its summary (``summary.json``)."""
    check_out_dir(out)  # before anything is analysed or drawn
    budgets = [budget_ms] if isinstance(budget_ms, int | float) else budget_ms
    return write_report(runs, out, objectives=objectives,
                        budgets_ms=list(budgets) if budgets is not None else None,
                        allow_mixed=allow_mixed, split=split, strict=strict,
                        figures=figures or figure_options())
