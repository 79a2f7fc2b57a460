"""Run folders -> a publishable report: Markdown, self-contained HTML, plots, CSVs, LaTeX.

:func:`analyse` computes everything (fronts, hypervolumes with one shared reference point, the
best configuration under each budget, dynamic-vs-static dominance) with ``search.pareto``;
:func:`write_report` draws the plots with ``search.plots`` and renders the document through
``search.report_render``. Inputs are :class:`~prunebench.search.runs.folders.RunData`, so a
run read from an Optuna storage works the same as one read from a folder.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from prunebench.harness.errors import PrunebenchError
from prunebench.search import findings, intervals, pareto, plots, report_render
from prunebench.search.analysis import Analysis, energy_header
from prunebench.search.figures import FigureOptions, auto_limits, figure_options, outside
from prunebench.search.pareto import ACCURACY, LATENCY, OBJECTIVES
from prunebench.search.runs.folders import (
    RunData,
    check_comparable,
    distinct,
    merge_runs,
)
from prunebench.search.verdicts import budget_verdict, family_sentence

DEFAULT_OBJECTIVES = "accuracy,latency_p50"
DEFAULT_BUDGET_FRACTIONS = (0.5, 0.75)  # of the dense p50, when no budget is given anywhere


def _budgets(runs: Sequence[RunData], merged: pd.DataFrame,
             given: Sequence[float] | None) -> tuple[list[float], str]:
    if given:
        bad = [b for b in given if not (np.isfinite(b) and b > 0)]
        if bad:
            raise PrunebenchError(f"--budget-ms {bad[0]!r} is not a positive number of "
                                  "milliseconds; give e.g. --budget-ms 4")
        return sorted(set(map(float, given))), "given on the command line"
    from_runs = sorted({b for r in runs for b in r.budgets_ms})
    if from_runs:
        return from_runs, "from the runs' configurations"
    dense = pd.to_numeric(merged.loc[merged["kind"] == "dense", "latency_p50_ms"],
                          errors="coerce").dropna()
    if dense.empty:
        return [], "none (no budget given and no dense latency to derive one from)"
    ref = float(dense.median())
    return ([round(ref * f, 3) for f in DEFAULT_BUDGET_FRACTIONS],
            "default: " + " and ".join(f"{f:.0%}" for f in DEFAULT_BUDGET_FRACTIONS)
            + f" of the dense p50 latency ({ref:.3g} ms)")


def analyse(runs: Sequence[RunData], *, objectives: str | Sequence[str] = DEFAULT_OBJECTIVES,
            budgets_ms: Sequence[float] | None = None, allow_mixed: bool = False,
            split: str = "auto", margin: float = 0.1, strict: bool = False) -> Analysis:
    """Merge ``runs``, check they share axes, and compute fronts, hypervolumes and verdicts.

    Runs scored on different splits, searches with nothing under budget and different latency
    anchors are shown and labelled (:mod:`prunebench.search.findings`); ``strict`` refuses them.
    """
    objs = pareto.parse_objectives(objectives)
    runs = list(runs)
    every = merge_runs(runs)
    chosen = findings.choose_split(every, split, allow_mixed=allow_mixed, strict=strict)
    merged = intervals.with_intervals(chosen.rows)
    notes = list(chosen.warnings)
    notes += findings.label_unmet_budgets(runs, merged, strict=strict)
    notes += findings.anchor_findings(every, strict=strict)  # every split: trials carry it
    warnings = check_comparable(merged, allow_mixed=allow_mixed)
    fronts = pareto.fronts_by(merged, objs)
    reference = pareto.reference_point([merged], objs, margin=margin)
    ideal = pareto.ideal_point([merged], objs)
    hv = {s: pareto.hypervolume(f, objs, reference, ideal=ideal) for s, f in fronts.items()}
    hv_raw = {s: pareto.hypervolume(f, objs, reference) for s, f in fronts.items()}
    budgets, note = _budgets(runs, merged, budgets_ms)
    verdicts = [budget_verdict(merged, b) for b in budgets]
    dominance, family = {}, {}
    static = merged[merged["kind"] == "static"]
    for kind in ("dynamic", "hybrid"):
        other = merged[merged["kind"] == kind]
        if len(static) and len(other):
            base = pareto.pareto_front(static, [ACCURACY, LATENCY])
            cmp = pareto.compare_fronts(base, pareto.pareto_front(other, [ACCURACY, LATENCY]))
            dominance[f"{kind} vs static"] = base.join(cmp)
            family[f"{kind} vs static"] = [family_sentence(merged, b, kind) for b in budgets]
    left = intervals.with_intervals(chosen.left_out) if len(chosen.left_out) else None
    return Analysis(runs, merged, objs, fronts, reference, ideal, hv, hv_raw, budgets,
                    note, chosen.split_note, verdicts, family, dominance, warnings, notes, left)


def _machine(df: pd.DataFrame) -> str:
    envs = [json.loads(e) for e in df.get("environment", pd.Series(dtype=str)).dropna()
            if isinstance(e, str)]
    for key in ("cpu_model", "gpu_name", "cpu", "machine"):
        names = sorted({str(e[key]) for e in envs if e.get(key)})
        if names:
            return ", ".join(names)
    return "fingerprint " + distinct(df, "fingerprint")


def caption(merged: pd.DataFrame, *, energy: bool = False) -> str:
    """One plot caption: model, data set, profile (device, threads, batch), machine, torch."""
    threads = distinct(merged, "threads")
    text = (f"{distinct(merged, 'model')} on {distinct(merged, 'dataset')}; profile "
            f"{distinct(merged, 'profile')} ({distinct(merged, 'device')}, {threads} "
            f"thread{'' if threads == '1' else 's'}, {distinct(merged, 'dtype')}, batch "
            f"{distinct(merged, 'batch_size')}, engine {distinct(merged, 'engine')}); machine "
            f"{_machine(merged)}; torch {distinct(merged, 'torch_version')}.")
    if energy:
        methods = distinct(merged[merged["energy_mj_per_inference"].notna()], "energy_method")
        text += f" Energy: {methods}" + (" (an estimate, not measured)." if "modelled" in methods
                                         else ".")
    return text + " Faint: dominated points; lines: Pareto fronts; stars: dense reference."


PANELS = (  # (file stem, x objective short name, whisker columns per --whiskers, uses the budget)
    ("accuracy_latency", "latency_p50",
     {"ci": ("latency_ci_low_ms", "latency_ci_high_ms"), "p90": (None, "latency_p90_ms")}, True),
    ("accuracy_energy", "energy", {}, False),
    ("accuracy_macs", "macs", {}, False),
)
WHISKER_TEXT = {"ci": "Whiskers: the p50's 95% CI of front points.",
                "p90": "Whiskers: p50 to p90 of front points."}
ACCURACY_BARS = ("accuracy_ci_low", "accuracy_ci_high")


def _panel(an: Analysis, x_name: str, whisker_cols: dict, with_budget: bool,
           opts: FigureOptions) -> tuple[plots.Panel, str] | None:
    """The panel of one x objective with its limits, and the caption's notes on what it shows."""
    x = OBJECTIVES[x_name]
    rows = an.merged[pd.to_numeric(an.merged[x.column], errors="coerce").notna()]
    if rows.empty or rows["accuracy_top1"].isna().all():
        return None
    if x_name == "energy":
        x = replace(x, label=energy_header(rows, x.label))
    is_latency = x_name.startswith("latency")
    xerr = whisker_cols.get(opts.whiskers)
    yerr = ACCURACY_BARS if opts.accuracy_bars and rows["accuracy_ci_low"].notna().any() \
        else None
    fronts = pareto.fronts_by(rows, [ACCURACY, x])
    log_x = opts.log_latency and is_latency
    auto_x, auto_y = auto_limits(rows, fronts, x.column, ACCURACY.column,
                                 x_low=xerr[0] if xerr else None,
                                 x_high=xerr[1] if xerr else None,
                                 y_low=yerr[0] if yerr else None,
                                 y_high=yerr[1] if yerr else None,
                                 y_within=opts.y_within_pp / 100, log_x=log_x,
                                 ylim=opts.ylim if isinstance(opts.ylim, tuple) else None)
    given_x = opts.xlim if is_latency else "auto"
    xlim = given_x if isinstance(given_x, tuple) else auto_x if given_x == "auto" else None
    ylim = opts.ylim if isinstance(opts.ylim, tuple) else auto_y if opts.ylim == "auto" else None
    background = None
    if opts.all_trials and an.left_out is not None:
        background = an.left_out[pd.to_numeric(an.left_out[x.column],
                                               errors="coerce").notna()]
    budget = an.budgets_ms[0] if with_budget and len(an.budgets_ms) == 1 else None
    panel = plots.Panel(x, ACCURACY, rows, fronts, budget=budget, x_err_columns=xerr,
                        y_err_columns=yerr, log_x=log_x, xlim=xlim, ylim=ylim,
                        background=background)
    notes = [WHISKER_TEXT[opts.whiskers]] if xerr else []
    if yerr:
        notes.append("Vertical bars: 95% Wilson intervals of accuracy.")
    if background is not None and len(background):
        notes.append(f"Hollow: the {len(background)} trial(s) scored on another split.")
    n_out = outside(rows, x.column, ACCURACY.column, xlim, ylim)
    if n_out:
        notes.append(f"{n_out} point(s) lie outside the axes (all are in points.csv).")
    disturbed = int(rows.get("timing_disturbed", pd.Series(dtype=object)).map(_truthy).sum())
    if disturbed:
        notes.append(f"{disturbed} point(s) had a disturbed timing ([disturbed] in the tables).")
    return panel, " ".join(notes)


def _truthy(value: object) -> bool:
    return str(value).strip().lower() in ("true", "1", "1.0")


def draw_plots(an: Analysis, out: Path, opts: FigureOptions | None = None,
               ) -> dict[str, list[Path]]:
    """The three trade-off plots (only those whose x was measured), each with its caption as
    ``<stem>.caption.txt`` and a LaTeX ``<stem>.caption.tex``; stem -> written figure files."""
    opts = opts or figure_options()
    styles = plots.series_styles(list(dict.fromkeys(an.merged["series"])))
    title = f"{distinct(an.merged, 'model')} / {distinct(an.merged, 'dataset')}"
    kinds = an.merged.groupby("series", sort=False)["kind"].agg(lambda k: k.mode().iloc[0])
    labels = {s: f"{s} ({k})" for s, k in kinds.items() if k not in ("dense", "unknown")}
    mixed = " Mixed measurement setups (--allow-mixed)." if an.warnings else ""
    written: dict[str, list[Path]] = {}
    for stem, x_name, whisker_cols, with_budget in PANELS:
        made = _panel(an, x_name, whisker_cols, with_budget, opts)
        if made is None:
            continue
        panel, notes = made
        cap = " ".join(filter(None, [caption(panel.points, energy=x_name == "energy") + mixed,
                                     notes]))
        plot_dir = out / "plots"
        plot_dir.mkdir(parents=True, exist_ok=True)
        (plot_dir / f"{stem}.caption.txt").write_text(cap + "\n")
        esc = report_render.tex_escape
        (plot_dir / f"{stem}.caption.tex").write_text(
            f"\\caption{{{esc(title)}: {esc(cap)}}}\n\\label{{fig:{stem}}}\n")
        for width in opts.widths:
            suffix = "" if width == "full" else f"_{width}"
            written.setdefault(stem, []).extend(plots.draw_tradeoff(
                panel, plot_dir / f"{stem}{suffix}", title=title, caption=cap, styles=styles,
                width=width, formats=opts.formats, labels=labels, style=opts.style,
                caption_in_figure=opts.caption_in_figure))
    return written


def write_report(runs: Sequence[RunData], out: str | Path, *,
                 objectives: str | Sequence[str] = DEFAULT_OBJECTIVES,
                 budgets_ms: Sequence[float] | None = None, allow_mixed: bool = False,
                 split: str = "auto", strict: bool = False,
                 figures: FigureOptions | None = None) -> dict[str, Any]:
    """Analyse ``runs`` and write the report into ``out``; returns a JSON-able summary.

    Files are built in a sibling ``.partial`` folder and moved in at the end, so a failure never
    leaves a half-written report over an earlier one.
    """
    an = analyse(runs, objectives=objectives, budgets_ms=budgets_ms, allow_mixed=allow_mixed,
                 split=split, strict=strict)
    out = Path(out)
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    drawn = draw_plots(an, tmp, figures)
    an.merged.to_csv(tmp / "points.csv", index=False)
    fronts = [f.assign(series=s) for s, f in an.fronts.items()]
    pd.concat(fronts, ignore_index=True).to_csv(tmp / "fronts.csv", index=False)
    (tmp / "fronts.tex").write_text(report_render.latex_fronts(an))
    (tmp / "methods.bib").write_text(report_render.bibtex(an))
    doc = report_render.document(an, drawn)
    (tmp / "report.md").write_text(report_render.to_markdown(doc))
    (tmp / "report.html").write_text(report_render.to_html(doc, base=tmp))
    summary = summarise(an, out)
    (tmp / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
    for src in sorted(tmp.rglob("*")):
        if src.is_file():
            dst = out / src.relative_to(tmp)
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
    shutil.rmtree(tmp, ignore_errors=True)
    return summary


def summarise(an: Analysis, out: Path) -> dict[str, Any]:
    """The one JSON object ``--json`` prints: where, what, hypervolumes, best per budget (with
    its intervals, whether it is at the budget, and the tie within noise, if any)."""
    def pick(row: pd.Series | None) -> dict[str, Any] | None:
        if row is None:
            return None
        out = {k: (None if pd.isna(row.get(k)) else row.get(k)) for k in
               ("run", "series", "label", "accuracy_top1", "accuracy_ci_low",
                "accuracy_ci_high", "latency_p50_ms", "latency_ci_low_ms",
                "latency_ci_high_ms", "budget_status")}
        return {k: float(v) if isinstance(v, np.floating) else v for k, v in out.items()}

    return {
        "out": str(out),
        "runs": [r.name for r in an.runs],
        "objectives": [o.column for o in an.objectives],
        "reference_point": [float(v) * o.sign
                            for v, o in zip(an.reference, an.objectives, strict=True)],
        "hypervolume": {k: round(v, 6) for k, v in an.hypervolume.items()},
        "budgets_ms": an.budgets_ms,
        "accuracy": an.split_note,
        "best_under_budget": [{"budget_ms": v.budget_ms, "best": pick(v.winner),
                               "tie_within_noise": [pick(r) for r in v.tied],
                               "verdict": v.headline.replace("**", "")} for v in an.verdicts],
        "dynamic_vs_static": an.family,
        "warnings": an.warnings + an.findings,
    }
