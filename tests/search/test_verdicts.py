"""Intervals and the verdicts that use them: Wilson on known counts, "at the budget", ties."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from prunebench.search import intervals, verdicts
from prunebench.search.figures import figure_options
from prunebench.search.report import analyse, write_report
from prunebench.search.runs.folders import run_from_frame


@pytest.mark.parametrize("correct,n,low,high", [
    (5, 10, 0.2366, 0.7634),   # the textbook case (Wilson 1927; Newcombe 1998, table I)
    (0, 10, 0.0, 0.2775),
    (10, 10, 0.7225, 1.0),
    (81, 263, 0.2553, 0.3662),  # Newcombe (1998), example (b)
])
def test_wilson_known_counts(correct: int, n: int, low: float, high: float) -> None:
    lo, hi = intervals.wilson_interval(correct, n)
    assert lo == pytest.approx(low, abs=1e-4) and hi == pytest.approx(high, abs=1e-4)


def test_wilson_refuses_impossible_counts() -> None:
    with pytest.raises(ValueError, match="0 <= correct <= n"):
        intervals.wilson_interval(11, 10)


def _row(series: str, label: str, acc: float, lat: float, *, n: int | None = 359,
         ci: float | None = 0.018, kind: str = "static", run: str | None = None,
         disturbed: bool = False) -> dict:
    return {"series": series, "label": label, "run": run or series, "kind": kind,
            "method": {"static": "l1", "dynamic": "antidote_fast"}.get(kind, "dense"),
            "accuracy_top1": acc, "accuracy_n": n, "accuracy_split": "test",
            "latency_p50_ms": lat, "latency_ci_rel": ci, "latency_p90_ms": lat * 1.1,
            "energy_mj_per_inference": lat * 5, "energy_method": "modelled", "macs": 1e6 * lat,
            "timing_disturbed": disturbed,
            "config": json.dumps({"ratios": {"conv1": 0.2}} if kind == "static" else
                                 {"keep": {"g1": 0.5}} if kind == "dynamic" else {})}


def test_intervals_from_counts_and_ci() -> None:
    df = intervals.with_intervals(pd.DataFrame([_row("a", "x", 341 / 359, 2.0),
                                                _row("b", "y", 0.9, 2.0, n=None, ci=None)]))
    assert df.loc[0, "accuracy_correct"] == 341
    lo, hi = intervals.wilson_interval(341, 359)
    assert (df.loc[0, "accuracy_ci_low"], df.loc[0, "accuracy_ci_high"]) == (lo, hi)
    assert df.loc[0, "latency_ci_low_ms"] == pytest.approx(2.0 * (1 - 0.018))
    assert df.loc[0, "latency_ci_high_ms"] == pytest.approx(2.0 * (1 + 0.018))
    assert df.loc[1, ["accuracy_ci_low", "latency_ci_low_ms"]].isna().all()
    assert "no interval" in intervals.accuracy_text(df.loc[1])


def test_point_within_its_ci_of_budget_is_at_the_budget_and_competes() -> None:
    # the case: l1 r=0.2 read 1.280177 ms against a 1.28 ms budget, +/-1.8% CI
    df = intervals.with_intervals(pd.DataFrame([
        _row("l1 uniform", "l1 r=0.2", 356 / 359, 1.280177),
        _row("antidote_fast search", "trial 3", 341 / 359, 1.10, kind="dynamic"),
        _row("l1 search", "trial 9", 300 / 359, 1.40)]))  # 1.40 * (1 - 0.018) > 1.28: over
    status = intervals.budget_status(df, 1.28)
    assert list(status) == [intervals.AT, intervals.UNDER, intervals.OVER]
    v = verdicts.budget_verdict(df, 1.28)
    assert list(v.best["series"]) == ["l1 uniform", "antidote_fast search"]  # shown, not dropped
    assert v.winner["label"] == "l1 r=0.2" and v.winner["budget_status"] == intervals.AT
    assert "at the budget" in v.headline and "1.28 ms" in v.headline and not v.tied
    # without a CI the same p50 is simply over
    no_ci = intervals.with_intervals(pd.DataFrame([_row("l1", "r", 0.99, 1.280177, ci=None)]))
    assert verdicts.budget_verdict(no_ci, 1.28).winner is None


def test_points_within_noise_are_a_tie() -> None:
    # 94.99% vs 94.15% of 359 test images: three images apart, intervals overlap
    df = intervals.with_intervals(pd.DataFrame([
        _row("antidote_fast search", "trial 7", 341 / 359, 1.1, kind="dynamic"),
        _row("l1 search", "trial 2", 338 / 359, 1.0),
        _row("random uniform", "r=0.5", 250 / 359, 0.9)]))
    v = verdicts.budget_verdict(df, 1.28)
    assert [r["label"] for r in v.tied] == ["trial 7", "trial 2"]
    assert v.headline.startswith("Tie within noise: antidote_fast search, trial 7")
    assert "l1 search, trial 2 (run l1 search);" in v.headline  # under: no label
    assert "random" not in v.headline
    # a tied point whose CI contains the budget says so
    at = intervals.with_intervals(df.assign(latency_p50_ms=[1.1, 1.28, 0.9]))
    assert "l1 search, trial 2 (run l1 search) [at the budget]" in \
        verdicts.budget_verdict(at, 1.28).headline
    sentence = verdicts.family_sentence(df, 1.28, "dynamic")
    assert "tie within noise on accuracy" in sentence and "static point is faster" in sentence
    # far apart: a winner, ahead beyond noise
    apart = intervals.with_intervals(pd.DataFrame([
        _row("antidote_fast search", "trial 7", 355 / 359, 1.1, kind="dynamic"),
        _row("l1 search", "trial 2", 300 / 359, 1.0)]))
    assert not verdicts.budget_verdict(apart, 1.28).tied
    assert "beyond noise" in verdicts.budget_verdict(apart, 1.28).headline
    sentence = verdicts.family_sentence(apart, 1.28, "dynamic")
    assert "the dynamic front is ahead by 15.32 pp" in sentence and "exceeds the noise" in sentence


def test_family_sentence_when_one_side_misses_the_budget() -> None:
    df = intervals.with_intervals(pd.DataFrame([
        _row("antidote_fast search", "trial 7", 0.95, 3.0, kind="dynamic"),
        _row("l1 search", "trial 2", 0.93, 1.0)]))
    assert "only the static front reaches the budget" in verdicts.family_sentence(df, 1.5)
    assert "neither" in verdicts.family_sentence(df, 0.5)


def _report_runs() -> list:
    dense = _row("dense", "dense", 357 / 359, 1.6, kind="dense")
    sweep = [dense] + [_row("l1", f"l1 r={r}", (357 - 40 * r) / 359, 1.6 * (1 - r),
                            disturbed=r == 0.4) for r in (0.2, 0.4, 0.6)]
    dyn = [dense] + [_row("d", f"trial {i}", (355 - 30 * k) / 359, 1.6 * (1 - k) + 0.1,
                          kind="dynamic") for i, k in enumerate((0.2, 0.4, 0.6))]
    frames = []
    for name, rows, kind in (("sweep", sweep, "baseline"), ("dyn", dyn, "search")):
        df = pd.DataFrame(rows).drop(columns=["series", "run", "kind"])
        df["run_kind"] = [("dense" if r["label"] == "dense" else kind) for r in rows]
        df = df.assign(model="resnet20", dataset="digits", profile="cpu-1t", fingerprint="f",
                       engine="eager", batch_size=1, threads=1, device="cpu",
                       environment=json.dumps({"cpu_model": "test cpu"}))
        frames.append(run_from_frame(name, df, config={"latency_budget_ms": 1.0}))
    return frames


def test_report_states_verdicts_labels_and_modelled_energy(tmp_path: Path) -> None:
    runs = _report_runs()
    an = analyse(runs)
    assert [v.budget_ms for v in an.verdicts] == [1.0]
    assert list(an.family) == ["dynamic vs static"] and len(an.family["dynamic vs static"]) == 1
    summary = write_report(runs, tmp_path, figures=figure_options(formats=("png",),
                                                                  widths=("column",)))
    md = (tmp_path / "report.md").read_text().replace("\\[", "[").replace("\\]", "]")
    assert "l1 r=0.4 [disturbed]" in md and "[disturbed] were timed" in md
    assert "At 1 ms:" in md and summary["dynamic_vs_static"]["dynamic vs static"][0] in md
    assert "energy (mJ, modelled)" in md
    tex = (tmp_path / "fronts.tex").read_text()
    assert "energy (mJ, modelled)" in tex
    points = pd.read_csv(tmp_path / "points.csv")
    has_energy = points["energy_mj_per_inference"].notna()
    assert has_energy.any() and (points.loc[has_energy, "energy_method"] == "modelled").all()
    assert {"accuracy_ci_low", "accuracy_ci_high", "latency_ci_low_ms"} <= set(points.columns)
    assert "## Methods" in md and "@inproceedings{yu2020antidote" in md
    assert "@inproceedings{li2017pruning" in (tmp_path / "methods.bib").read_text()
    # the environment dump is the last section: an appendix
    assert md.rindex("## ") == md.index("## Appendix: environment")
    best = summary["best_under_budget"][0]
    assert best["best"]["accuracy_ci_low"] < best["best"]["accuracy_top1"]
