"""Figure options through the report: limits (given and automatic), caption files, modelled
energy on the axis, bad values refused before any work."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from prunebench.harness.errors import PrunebenchError
from prunebench.search import figures, plots
from prunebench.search.cli import main
from prunebench.search.figures import figure_options
from prunebench.search.report import analyse, draw_plots
from prunebench.search.runs import folders as run_folders
from tests.search.test_report import make_runs


@pytest.fixture()
def saved(monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """Saved figures by file stem, kept open (``draw_tradeoff`` closes each one)."""
    figs: dict[str, object] = {}
    close, savefig = plots.plt.close, plots.plt.Figure.savefig

    def record(fig, path, *args, **kwargs):  # noqa: ANN001, ANN202 - matplotlib's signature
        figs[Path(path).stem] = fig
        return savefig(fig, path, *args, **kwargs)

    monkeypatch.setattr(plots.plt.Figure, "savefig", record)
    monkeypatch.setattr(plots.plt, "close", lambda fig=None: None)
    yield figs
    for fig in figs.values():
        close(fig)


def _analysis(tmp_path: Path):  # noqa: ANN202
    return analyse([run_folders.load_run(p) for p in make_runs(tmp_path / "runs")])


def test_auto_limits_fastest_to_dense_and_near_dense_accuracy() -> None:
    pts = pd.DataFrame({"series": ["dense", "a", "a", "a"], "lat": [6.0, 1.0, 3.0, 5.0],
                        "acc": [0.92, 0.15, 0.85, 0.90]})
    fronts = {"dense": pts[:1], "a": pts[1:]}
    xlim, ylim = figures.auto_limits(pts, fronts, "lat", "acc", y_within=0.10)
    pad = figures.PAD
    # the collapsed point (15%) is below dense - 10 pp: the axis starts at the 85% point, and
    # the x-axis at the fastest point inside that range (3 ms), ending at dense (6 ms)
    assert ylim == pytest.approx((0.85 - pad * 0.07, 0.92 + pad * 0.07))
    assert xlim == pytest.approx((3.0 - pad * 3.0, 6.0 + pad * 3.0))
    assert figures.outside(pts, "lat", "acc", xlim, ylim) == 1
    # a given y range decides which points bound x
    xlim, ylim = figures.auto_limits(pts, fronts, "lat", "acc", ylim=(0.0, 1.0))
    assert ylim == (0.0, 1.0) and xlim == pytest.approx((1.0 - pad * 5.0, 6.0 + pad * 5.0))


def test_report_plots_follow_the_options(tmp_path: Path, saved: dict) -> None:
    an = _analysis(tmp_path)
    opts = figure_options(xlim="2,5", ylim="85,93", formats=("png",), widths=("full",))
    draw_plots(an, tmp_path / "given", opts)
    ax = saved["accuracy_latency"].axes[0]
    assert ax.get_xlim() == (2.0, 5.0) and ax.get_ylim() == pytest.approx((0.85, 0.93))
    energy_ax = saved["accuracy_energy"].axes[0]
    assert "modelled" in energy_ax.get_xlabel()  # the energy is modelled in make_runs
    draw_plots(an, tmp_path / "auto", figure_options(formats=("png",), widths=("column",)))
    auto = saved["accuracy_latency_column"].axes[0]
    dense = an.merged[an.merged["series"] == "dense"]
    assert auto.get_xlim()[1] < 1.1 * float(dense["latency_p50_ms"].max())
    low = float(dense["accuracy_top1"].max()) - figures.DEFAULT_Y_WITHIN_PP / 100
    assert auto.get_ylim()[0] > low - 0.02
    draw_plots(an, tmp_path / "data", figure_options(xlim="data", ylim="data",
                                                     formats=("png",), widths=("full",)))
    every = saved["accuracy_latency"].axes[0]
    assert every.get_ylim()[0] <= float(an.merged["accuracy_top1"].min())
    cap = (tmp_path / "auto" / "plots" / "accuracy_latency.caption.txt").read_text()
    tex = (tmp_path / "auto" / "plots" / "accuracy_latency.caption.tex").read_text()
    assert "resnet20 on cifar10" in cap and "95% Wilson" in cap and "2 threads" in cap
    assert tex.startswith("\\caption{") and "\\label{fig:accuracy_latency}" in tex
    assert "95\\% Wilson" in tex  # escaped for LaTeX
    energy_cap = (tmp_path / "auto" / "plots" / "accuracy_energy.caption.txt").read_text()
    assert "modelled (an estimate, not measured)" in energy_cap


def test_all_trials_draws_the_other_split_faintly(tmp_path: Path, saved: dict) -> None:
    an = _analysis(tmp_path)
    assert an.left_out is not None and (an.left_out["accuracy_split"] == "val").all()
    draw_plots(an, tmp_path / "out", figure_options(all_trials=True, formats=("png",),
                                                    widths=("full",), xlim="data",
                                                    ylim="data"))
    ax = saved["accuracy_latency"].axes[0]
    hollow = [ln for ln in ax.lines if ln.get_markerfacecolor() == "none"]
    assert sum(len(ln.get_xdata()) for ln in hollow) == len(an.left_out)


@pytest.mark.parametrize("kw,word", [({"xlim": "5,2"}, "--xlim"), ({"ylim": "a,b"}, "--ylim"),
                                     ({"whiskers": "p99"}, "--whiskers"),
                                     ({"style": "poster"}, "--style"),
                                     ({"widths": "wide"}, "--widths"),
                                     ({"y_within_pp": -1.0}, "--ylim-within")])
def test_bad_figure_options_name_the_value(kw: dict, word: str) -> None:
    with pytest.raises(PrunebenchError, match=word):
        figure_options(**kw)


def test_bad_limit_refused_before_reading(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["compare", str(tmp_path / "missing-run"), "--xlim", "3", "--out",
                 str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and "--xlim '3'" in err and "missing-run" not in err
