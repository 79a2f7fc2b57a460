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
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from prunebench.harness.errors import PrunebenchError
from prunebench.search import pareto, plots
from prunebench.search.analysis import Analysis
from prunebench.search.pareto import ACCURACY, LATENCY, OBJECTIVES
from prunebench.search.runs.folders import (
    RunData,
    check_comparable,
    distinct,
    merge_runs,
    select_split,
)

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
            split: str = "auto", margin: float = 0.1) -> Analysis:
    """Merge ``runs``, check they share axes, and compute fronts, hypervolumes and lookups."""
    objs = pareto.parse_objectives(objectives)
    merged, split_note = select_split(merge_runs(list(runs)), split, allow_mixed=allow_mixed)
    warnings = check_comparable(merged, allow_mixed=allow_mixed)
    fronts = pareto.fronts_by(merged, objs)
    reference = pareto.reference_point([merged], objs, margin=margin)
    ideal = pareto.ideal_point([merged], objs)
    hv = {s: pareto.hypervolume(f, objs, reference, ideal=ideal) for s, f in fronts.items()}
    hv_raw = {s: pareto.hypervolume(f, objs, reference) for s, f in fronts.items()}
    budgets, note = _budgets(runs, merged, budgets_ms)
    best = [{"budget_ms": b, "overall": pareto.best_under_budget(merged, b),
             "series": {s: pareto.best_under_budget(g, b) for s, g in
                        merged.groupby("series", sort=False)}} for b in budgets]
    dominance = {}
    static = merged[merged["kind"] == "static"]
    for kind in ("dynamic", "hybrid"):
        other = merged[merged["kind"] == kind]
        if len(static) and len(other):
            base = pareto.pareto_front(static, [ACCURACY, LATENCY])
            cmp = pareto.compare_fronts(base, pareto.pareto_front(other, [ACCURACY, LATENCY]))
            dominance[f"{kind} vs static"] = base.join(cmp)
    return Analysis(list(runs), merged, objs, fronts, reference, ideal, hv, hv_raw, budgets,
                    note, split_note, best, dominance, warnings)


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
    text = (f"{distinct(merged, 'model')} on {distinct(merged, 'dataset')}; profile "
            f"{distinct(merged, 'profile')} ({distinct(merged, 'device')}, "
            f"{distinct(merged, 'threads')} threads, {distinct(merged, 'dtype')}, batch "
            f"{distinct(merged, 'batch_size')}); machine {_machine(merged)}; torch "
            f"{distinct(merged, 'torch_version')}.")
    if energy:
        methods = distinct(merged[merged["energy_mj_per_inference"].notna()], "energy_method")
        text += f" Energy: {methods}" + (" (an estimate, not measured)." if "modelled" in methods
                                         else ".")
    return text + " Faint: dominated points; lines: Pareto fronts; stars: dense reference."


PANELS = (  # (file stem, x objective short name, x upper whisker column, uses the budget)
    ("accuracy_latency", "latency_p50", "latency_p90_ms", True),
    ("accuracy_energy", "energy", None, False),
    ("accuracy_macs", "macs", None, False),
)


def draw_plots(an: Analysis, out: Path, *, formats: Sequence[str] = plots.FORMATS,
               widths: Sequence[str] = ("full", "column"), log_latency: bool = False,
               ) -> dict[str, list[Path]]:
    """The three trade-off plots (only those whose x was measured); stem -> written files."""
    styles = plots.series_styles(list(dict.fromkeys(an.merged["series"])))
    title = f"{distinct(an.merged, 'model')} / {distinct(an.merged, 'dataset')}"
    kinds = an.merged.groupby("series", sort=False)["kind"].agg(lambda k: k.mode().iloc[0])
    labels = {s: f"{s} ({k})" for s, k in kinds.items() if k not in ("dense", "unknown")}
    mixed = " Mixed measurement setups (--allow-mixed)." if an.warnings else ""
    written: dict[str, list[Path]] = {}
    for stem, x_name, upper, with_budget in PANELS:
        x = OBJECTIVES[x_name]
        rows = an.merged[pd.to_numeric(an.merged[x.column], errors="coerce").notna()]
        if rows.empty or rows["accuracy_top1"].isna().all():
            continue
        budget = an.budgets_ms[0] if with_budget and len(an.budgets_ms) == 1 else None
        panel = plots.Panel(x, ACCURACY, rows, pareto.fronts_by(rows, [ACCURACY, x]),
                            budget=budget, x_upper_column=upper,
                            log_x=log_latency and x_name.startswith("latency"))
        cap = caption(rows, energy=x_name == "energy") + mixed
        if upper:
            cap += " Whiskers: p50 to p90 of front points."
        for width in widths:
            suffix = "" if width == "full" else f"_{width}"
            written.setdefault(stem, []).extend(plots.draw_tradeoff(
                panel, out / "plots" / f"{stem}{suffix}", title=title, caption=cap,
                styles=styles, width=width, formats=formats, labels=labels))
    return written


def write_report(runs: Sequence[RunData], out: str | Path, *,
                 objectives: str | Sequence[str] = DEFAULT_OBJECTIVES,
                 budgets_ms: Sequence[float] | None = None, allow_mixed: bool = False,
                 split: str = "auto", formats: Sequence[str] = plots.FORMATS,
                 widths: Sequence[str] = ("full", "column"),
                 log_latency: bool = False) -> dict[str, Any]:
    """Analyse ``runs`` and write the report into ``out``; returns a JSON-able summary.

    Files are built in a sibling ``.partial`` folder and moved in at the end, so a failure never
    leaves a half-written report over an earlier one.
    """
    from prunebench.search import report_render

    an = analyse(runs, objectives=objectives, budgets_ms=budgets_ms, allow_mixed=allow_mixed,
                 split=split)
    out = Path(out)
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    figures = draw_plots(an, tmp, formats=formats, widths=widths, log_latency=log_latency)
    an.merged.to_csv(tmp / "points.csv", index=False)
    fronts = [f.assign(series=s) for s, f in an.fronts.items()]
    pd.concat(fronts, ignore_index=True).to_csv(tmp / "fronts.csv", index=False)
    (tmp / "fronts.tex").write_text(report_render.latex_fronts(an))
    doc = report_render.document(an, figures)
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
    """The one JSON object ``--json`` prints: where, what, hypervolumes, best per budget."""
    def pick(row: pd.Series | None) -> dict[str, Any] | None:
        if row is None:
            return None
        out = {k: (None if pd.isna(row.get(k)) else row.get(k)) for k in
               ("run", "series", "label", "accuracy_top1", "latency_p50_ms")}
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
        "best_under_budget": [{"budget_ms": b["budget_ms"], **{"best": pick(b["overall"])}}
                              for b in an.best],
        "warnings": an.warnings,
    }
