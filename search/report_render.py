"""Render an :class:`~prunebench.search.analysis.Analysis` as Markdown, HTML and LaTeX.

The document is a flat list of blocks (``h1``/``h2``/``p``/``ul``/``table``/``img``/``pre``)
built once by :func:`document` and rendered twice, so the Markdown and HTML never disagree.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pandas as pd

from prunebench.search.analysis import energy_header
from prunebench.search.citations import bibtex_for
from prunebench.search.intervals import AT
from prunebench.search.runs.folders import distinct

if TYPE_CHECKING:
    from prunebench.search.analysis import Analysis

Block = tuple[str, Any]

ENERGY_METHODS = {
    "modelled": "modelled: an estimate from the profile's power model (busy cores x watts per "
                "core, plus idle power), not measured",
    "rapl": "measured with Intel RAPL package energy counters",
    "nvml": "measured with the NVML GPU energy counter",
    "nvml-sampled": "measured by sampling NVML GPU power and integrating over time",
    "none": "not measured",
}
COLUMNS = (  # (points column, table header, formatter); the energy header says "modelled"
    ("accuracy_top1", "top-1 (%)", lambda v: f"{100 * v:.2f}"),
    ("accuracy_ci_text", "top-1 95% CI (%)", str),  # Wilson, from accuracy_ci_low/high
    ("latency_p50_ms", "p50 (ms)", lambda v: f"{v:.3g}"),
    ("latency_p90_ms", "p90 (ms)", lambda v: f"{v:.3g}"),
    ("energy_mj_per_inference", "energy (mJ)", lambda v: f"{v:.3g}"),
    ("macs", "MACs (M, effective)", lambda v: f"{v / 1e6:.2f}"),
    ("params", "params (k)", lambda v: f"{v / 1e3:.1f}"),
)


def _fmt(value: Any, fn: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return "-" if value is None or pd.isna(value) else fn(float(value))
    except (TypeError, ValueError):
        return str(value)


def _with_ci_text(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` plus ``accuracy_ci_text`` (``[95.7, 98.9]`` in %; None without an interval)."""
    if "accuracy_ci_low" not in df:
        return df
    text = [f"[{100 * lo:.1f}, {100 * hi:.1f}]" if pd.notna(lo) and pd.notna(hi) else None
            for lo, hi in zip(df["accuracy_ci_low"], df["accuracy_ci_high"], strict=True)]
    return df.assign(accuracy_ci_text=text)


def _disturbed(value: Any) -> bool:
    return str(value).strip().lower() in ("true", "1", "1.0")


def header(df: pd.DataFrame, column: str, head: str) -> str:
    """A column's table header; the energy one carries "modelled" when it is modelled."""
    return energy_header(df, head) if column == "energy_mj_per_inference" else head


def point_table(df: pd.DataFrame, lead: tuple[str, ...] = ("series", "label")) -> pd.DataFrame:
    """Rows of ``df`` with readable headers and units (strings, ready to print); a label gets
    ``[disturbed]`` when its timing was (``timing_disturbed``)."""
    df = _with_ci_text(df)
    out = pd.DataFrame({c: df[c].astype(str) for c in lead if c in df})
    if "label" in out and "timing_disturbed" in df:
        out["label"] = [f"{lab} [disturbed]" if _disturbed(d) else lab
                        for lab, d in zip(out["label"], df["timing_disturbed"], strict=True)]
    for col, head, fn in COLUMNS:
        if col in df and df[col].notna().any():
            out[header(df, col, head)] = [_fmt(v, fn) for v in df[col]]
    return out.reset_index(drop=True)


def config_table(config_json: Any) -> pd.DataFrame:
    """The per-layer ratios / keep-ratios of one configuration (and its global settings)."""
    cfg = json.loads(config_json) if isinstance(config_json, str) else dict(config_json or {})
    rows = [(f"(all layers) {k}", cfg[k]) for k in ("global_ratio", "global_keep")
            if cfg.get(k) is not None]
    rows += [(name, f"ratio {v:.3f}") for name, v in sorted(cfg.get("ratios", {}).items())]
    rows += [(name, f"keep {v:.3f}") for name, v in sorted(cfg.get("keep", {}).items())]
    if cfg.get("exec_mode"):
        rows.append(("execution mode", cfg["exec_mode"]))
    rows += [(f"option {k}", v) for k, v in sorted(cfg.get("options", {}).items())]
    return pd.DataFrame(rows or [("(none)", "dense")], columns=["layer / setting", "amount"])


def _setup(an: Analysis) -> list[Block]:
    rows = []
    for run in an.runs:
        pts = an.merged[an.merged["run"] == run.name]
        rows.append({"run": run.name, "series": ", ".join(dict.fromkeys(pts["series"])),
                     "points": str(len(pts)), "not completed": str(run.excluded),
                     **{c: distinct(pts, c) for c in ("model", "dataset", "profile",
                                                      "engine", "fingerprint", "device",
                                                      "threads", "batch_size", "dtype")}})
    blocks: list[Block] = [("h2", "Setup"), ("table", pd.DataFrame(rows)),
                           ("p", f"Accuracy: {an.split_note}. Failed or pruned trials are not "
                                 "plotted (column 'not completed').")]
    if an.warnings:
        blocks.append(("p", "**Warning: mixed measurement setups on shared axes (--allow-mixed); "
                            "differences may come from the machines, not the methods.**"))
        blocks.append(("ul", an.warnings))
    if an.findings:
        blocks.append(("p", "**Shown and labelled rather than refused (--strict refuses "
                            "them):**"))
        blocks.append(("ul", an.findings))
    if "timing_disturbed" in an.merged and an.merged["timing_disturbed"].map(_disturbed).any():
        blocks.append(("p", "Points marked [disturbed] were timed without their core to "
                            "themselves (CPU/wall below 0.95 after one re-timing) or beat their "
                            "MAC-ideal speedup beyond its CI: their latency is suspect."))
    return blocks


def _best(an: Analysis) -> list[Block]:
    blocks: list[Block] = [
        ("h2", "Best configuration under each budget"),
        ("p", f"Latency budgets: {an.budgets_note}. A point competes when its p50's 95% CI lies "
              "within the budget or contains it (\"at the budget\", labelled). The best has the "
              "highest top-1 accuracy (the faster on equal accuracy); series' bests whose 95% "
              "Wilson accuracy intervals overlap the best's are a tie within noise.")]
    for v in an.verdicts:
        blocks.append(("h3", f"Budget {v.budget_ms:g} ms"))
        blocks.append(("p", v.headline))
        if v.winner is None:
            continue
        table = point_table(v.best, ("series", "run", "label"))
        table["budget"] = ["at the budget" if s == AT else "under"
                           for s in v.best["budget_status"]]
        blocks.append(("table", table))
        blocks.append(("p", "Per-layer amounts of each series' best:"))
        for _, row in v.best.iterrows():
            if row["series"] != "dense":
                blocks += [("p", f"{row['series']}: {row['label']} (run {row['run']})"),
                           ("table", config_table(row.get("config")))]
    return blocks


def _dominance(an: Analysis) -> list[Block]:
    blocks: list[Block] = [("h2", "Dynamic vs static")]
    if not an.dominance:
        return blocks + [("p", "Not shown: the runs do not contain both static and dynamic "
                               "points.")]
    for name, df in an.dominance.items():
        blocks.append(("h3", name))
        blocks.append(("ul", an.family.get(name, [])))
        n_dom, n = int(df["dominated"].sum()), len(df)
        text = (f"Point by point: the {name.split()[0]} front dominates {n_dom} of the {n} "
                "points of the static (accuracy, p50 latency) front. Per static point: the "
                "latency the other front saves at equal-or-better accuracy, and the accuracy it "
                "gains at equal-or-lower latency (negative: static is better; '-': the other "
                "front never gets that accurate / that fast).")
        table = point_table(df, ("series", "label"))[["series", "label", "top-1 (%)", "p50 (ms)"]]
        table["dominated"] = ["yes" if d else "no" for d in df["dominated"]]
        table["latency saved (ms)"] = [_fmt(v, lambda x: f"{x:+.3g}") for v in df["cost_saved"]]
        table["saved (%)"] = [_fmt(v, lambda x: f"{100 * x:+.1f}") for v in df["cost_saved_rel"]]
        table["accuracy gained (pp)"] = [_fmt(v, lambda x: f"{100 * x:+.2f}")
                                         for v in df["quality_gained"]]
        blocks += [("p", text), ("table", table)]
    return blocks


def _methods(an: Analysis) -> list[Block]:
    names = _method_names(an)
    entries, unknown = bibtex_for(names)
    blocks: list[Block] = [("h2", "Methods"),
                           ("p", "Methods in this report: " + (", ".join(names) or "none")
                            + ". BibTeX of their papers (also in methods.bib):")]
    blocks += [("pre", e) for e in entries]
    if unknown:
        blocks.append(("p", "No BibTeX known for: " + ", ".join(unknown)
                            + " (not a registered method with a paper)."))
    return blocks


def _method_names(an: Analysis) -> list[str]:
    names = [str(m) for m in an.merged["method"].dropna()]
    for cfg in an.merged.get("config", pd.Series(dtype=object)).dropna():
        try:
            static = json.loads(cfg).get("static_method") if isinstance(cfg, str) else None
        except ValueError:
            static = None
        if static:
            names.append(str(static))
    return list(dict.fromkeys(n for n in names if n != "dense"))


def bibtex(an: Analysis) -> str:
    """methods.bib: the BibTeX entries of every method in the report."""
    entries, _ = bibtex_for(_method_names(an))
    return "\n\n".join(entries) + ("\n" if entries else "")


def _energy_env(an: Analysis) -> tuple[list[Block], list[Block]]:
    items = []
    for run in an.runs:
        pts = an.merged[(an.merged["run"] == run.name)]
        for method in dict.fromkeys(pts["energy_method"].fillna("none")):
            source = run.config.get("energy_source") or run.config.get("profile", {})
            extra = f" (source: {source.get('energy', {}).get('source')})" if isinstance(
                source, dict) and source.get("energy", {}).get("source") else ""
            items.append(f"{run.name}: {ENERGY_METHODS.get(method, method)}{extra}")
    env_rows = []
    for run in an.runs:
        envs = an.merged.loc[an.merged["run"] == run.name, "environment"].dropna()
        env = json.loads(envs.iloc[0]) if len(envs) and isinstance(envs.iloc[0], str) else {}
        env_rows += [{"run": run.name, "key": k, "value": str(v)} for k, v in sorted(env.items())]
        env_rows.append({"run": run.name, "key": "torch", "value": distinct(
            an.merged[an.merged["run"] == run.name], "torch_version")})
    return [("h2", "How energy was obtained"), ("ul", items)], [
        ("h2", "Appendix: environment"), ("table", pd.DataFrame(env_rows))]


def document(an: Analysis, figures: dict[str, list[Path]]) -> list[Block]:
    """All report blocks, in order."""
    objs = ", ".join(f"{o.label} ({o.direction})" for o in an.objectives)
    title = f"prunebench report: {distinct(an.merged, 'model')} on {distinct(an.merged, 'dataset')}"
    blocks: list[Block] = [("h1", title), ("p", f"Runs: {', '.join(r.name for r in an.runs)}. "
                                                f"Objectives: {objs}.")]
    blocks += _setup(an)
    blocks.append(("h2", "Trade-off plots"))
    for stem, paths in figures.items():
        pngs = [p for p in paths if p.suffix == ".png"]
        png = next((p for p in pngs if "_column" not in p.name), pngs[0] if pngs else None)
        if png:
            blocks.append(("img", (f"plots/{png.name}", stem.replace("_", " vs "))))
            caption = png.with_name(f"{stem}.caption.txt")
            if caption.is_file():
                blocks.append(("p", caption.read_text().strip()))
    ref = ", ".join(f"{o.label} {v * o.sign:.4g}"
                    for o, v in zip(an.objectives, an.reference, strict=True))
    hv = pd.DataFrame({"series": list(an.hypervolume),
                       "hypervolume (fraction of box)": [f"{v:.4f}" for v in
                                                         an.hypervolume.values()],
                       "hypervolume (raw units)": [f"{v:.4g}" for v in
                                                   an.hypervolume_raw.values()]})
    blocks += [("h2", "Hypervolume"),
               ("p", f"Shared reference point (worst value per objective over all runs, moved "
                     f"out by 10% of the range): {ref}. The fraction is of the box between the "
                     "best value seen per objective and the reference; larger is better."),
               ("table", hv), ("h2", "Pareto fronts")]
    for series, front in an.fronts.items():
        blocks += [("h3", series), ("table", point_table(front, ("run", "label")))]
    energy, env = _energy_env(an)
    blocks += _best(an) + _dominance(an) + energy + _methods(an)
    blocks += [("h2", "Files"), ("ul", [
        "points.csv: every point of every run, merged (energy_method says how each energy was "
        "obtained; accuracy_ci_*, latency_ci_*_ms: the 95% intervals)",
        "fronts.csv: the fronts (column series)",
        "fronts.tex: the fronts as a booktabs LaTeX table",
        "methods.bib: the BibTeX of the methods above",
        "plots/: PNG (dpi 200), SVG and PDF at two-column (full) and one-column (_column) "
        "width; <plot>.caption.txt and <plot>.caption.tex (a LaTeX \\caption{})",
        "summary.json: the numbers above as JSON"])]
    return blocks + env


_MD_SPECIAL = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "[": "\\[", "]": "\\]",
                             "`": "\\`", "\n": " ", "\r": " "})


def _md(text: Any) -> str:
    """Plain text (run and study names, labels, warnings) made inert in Markdown: no raw HTML,
    links, code spans or line breaks; ``**`` stays the report's own bold."""
    return str(text).translate(_MD_SPECIAL)


def _md_table(df: pd.DataFrame) -> str:
    cells = [[_md(c).replace("|", "\\|") for c in row] for row in df.astype(str).to_numpy()]
    head = "| " + " | ".join(_md(c).replace("|", "\\|") for c in df.columns) + " |"
    return "\n".join([head, "|" + "---|" * len(df.columns)] + ["| " + " | ".join(r) + " |"
                                                                for r in cells])


def to_markdown(blocks: list[Block]) -> str:
    """The report as GitHub-flavoured Markdown (plots linked relative to the report)."""
    level = {"h1": "# ", "h2": "## ", "h3": "### "}
    out = []
    for kind, content in blocks:
        if kind in level:
            out.append(level[kind] + _md(content))
        elif kind == "p":
            out.append(_md(content))
        elif kind == "ul":
            out.append("\n".join(f"- {_md(item)}" for item in content))
        elif kind == "table":
            out.append(_md_table(content))
        elif kind == "img":
            out.append(f"![{_md(content[1])}]({quote(content[0])})")
        elif kind == "pre":
            fence = "~~~~" if "```" in content else "```"
            out.append(f"{fence}bibtex\n{content}\n{fence}" if content.startswith("@")
                       else f"{fence}\n{content}\n{fence}")
    return "\n\n".join(out) + "\n"


def _inline(text: str) -> str:
    parts = html.escape(text).split("**")
    return "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts))


def to_html(blocks: list[Block], *, base: Path) -> str:
    """The report as one self-contained HTML page (PNG plots embedded as base64)."""
    body = []
    for kind, content in blocks:
        if kind in ("h1", "h2", "h3"):
            body.append(f"<{kind}>{html.escape(content)}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{_inline(content)}</p>")
        elif kind == "ul":
            body.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in content) + "</ul>")
        elif kind == "table":
            body.append(content.to_html(index=False, border=0, escape=True))
        elif kind == "pre":
            body.append(f"<pre>{html.escape(content)}</pre>")
        elif kind == "img":
            data = base64.b64encode((base / content[0]).read_bytes()).decode()
            body.append(f'<figure><img alt="{html.escape(content[1])}" '
                        f'src="data:image/png;base64,{data}"></figure>')
    style = ("body{font-family:sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;"
             "color:#222}table{border-collapse:collapse;margin:.5rem 0 1rem;font-size:.9rem}"
             "th,td{padding:.2rem .6rem;border-bottom:1px solid #ddd;text-align:left}"
             "img{max-width:100%}pre{background:#f6f6f6;padding:.5rem;overflow-x:auto}")
    title = html.escape(next((c for k, c in blocks if k == "h1"), "prunebench report"))
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}"
            f"</title><style>{style}</style></head><body>\n" + "\n".join(body)
            + "\n</body></html>\n")


def tex_escape(text: str) -> str:
    """Escape LaTeX's special characters in plain text."""
    special = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#",
               "$": r"\$", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
               "^": r"\textasciicircum{}"}
    return "".join(special.get(ch, ch) for ch in text)


def latex_fronts(an: Analysis) -> str:
    """The fronts as one booktabs table (needs ``\\usepackage{booktabs}``)."""
    merged = _with_ci_text(an.merged)
    cols = [(c, header(merged, c, h), f) for c, h, f in COLUMNS
            if c in merged and merged[c].notna().any()]
    lines = [r"\begin{tabular}{ll" + "r" * len(cols) + "}", r"\toprule",
             " & ".join(["Method", "Configuration"] + [tex_escape(h) for _, h, _ in cols])
             + r" \\",
             r"\midrule"]
    for i, (series, front) in enumerate(an.fronts.items()):
        if i:
            lines.append(r"\midrule")
        for _, row in _with_ci_text(front).iterrows():
            vals = [_fmt(row.get(c), f) for c, _, f in cols]
            lead = [tex_escape(series), tex_escape(str(row.get("label", "")))]
            lines.append(" & ".join(lead + vals) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"
