"""Each plot writes valid PNG, SVG and PDF files, and the figure options change the rendered axes
(asserted on the saved figures' matplotlib objects; the look is checked by eye)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.text
import pandas as pd
import pytest

from prunebench.harness.measurement import Measurement
from prunebench.search import pareto, plots
from prunebench.search.pareto import ACCURACY, OBJECTIVES


def _points() -> pd.DataFrame:
    rows = []
    for series, method, pts in (
        ("dense", "dense", [(0.92, 6.8)]),
        ("l1 uniform", "l1", [(0.91, 5.8), (0.89, 3.9), (0.84, 2.5), (0.76, 1.4)]),
        ("attention search", "attention", [(0.90, 5.0), (0.88, 4.4), (0.87, 4.6), (0.86, 3.9)]),
    ):
        for acc, lat in pts:
            m = Measurement(model="resnet20", dataset="cifar10", method=method, config={},
                            config_key="k", profile="cpu-2t", fingerprint="f", device="cpu",
                            dtype="float32", batch_size=1, threads=2, torch_version="2.4.1",
                            accuracy_top1=acc, latency_p50_ms=lat, latency_p90_ms=lat * 1.1,
                            energy_mj_per_inference=lat * 5.8, energy_method="modelled",
                            macs=int(40e6 * lat / 6.8))
            rows.append({**m.to_row(), "series": series})
    return pd.DataFrame(rows)


MAGIC = {"png": b"\x89PNG\r\n\x1a\n", "pdf": b"%PDF-", "svg": b"<?xml"}


@pytest.mark.parametrize("x_name,budget,log_x,width", [
    ("latency_p50", 4.0, False, "full"), ("latency_p50", None, True, "column"),
    ("energy", None, False, "full"), ("macs", None, False, "column")])
def test_draw_tradeoff_writes_valid_files(tmp_path: Path, x_name: str, budget: float | None,
                                          log_x: bool, width: str) -> None:
    points = _points()
    x = OBJECTIVES[x_name]
    panel = plots.Panel(x, ACCURACY, points, pareto.fronts_by(points, [ACCURACY, x]),
                        budget=budget, log_x=log_x,
                        x_err_columns=(None, "latency_p90_ms") if x_name.startswith("latency")
                        else None)
    paths = plots.draw_tradeoff(panel, tmp_path / "plots" / f"acc_{x_name}", width=width,
                                title="resnet20 / cifar10", caption="resnet20 on cifar10; "
                                "profile cpu-2t; machine test", caption_in_figure=True)
    assert [p.suffix for p in paths] == [".png", ".svg", ".pdf"]
    for path in paths:
        data = path.read_bytes()
        assert len(data) > 1000 and data.startswith(MAGIC[path.suffix[1:]])
    svg = paths[1].read_text()
    assert "</svg>" in svg and "cpu-2t" in svg  # text kept as text (svg.fonttype none)


def test_series_styles_fixed_and_dense_star() -> None:
    styles = plots.series_styles(["l1 uniform", "dense", "attention search", "l1 uniform"])
    assert styles["dense"] == plots.Style("#000000", "*")
    assert styles["l1 uniform"].color == plots.OKABE_ITO[0]
    assert styles["attention search"].color == plots.OKABE_ITO[1]
    assert styles["l1 uniform"].marker != styles["attention search"].marker


@pytest.fixture()
def saved(monkeypatch: pytest.MonkeyPatch) -> list:
    """The figures ``draw_tradeoff`` saved, kept open for inspection (it closes each one)."""
    figs: list = []
    close = plots.plt.close

    def keep(fig=None) -> None:  # noqa: ANN001 - matplotlib's signature
        figs.append(fig)

    monkeypatch.setattr(plots.plt, "close", keep)
    yield figs
    for fig in figs:
        close(fig)


def _texts(fig) -> list[str]:  # noqa: ANN001
    return [t.get_text() for t in fig.findobj(matplotlib.text.Text) if t.get_text()]


def test_given_limits_style_and_caption_change_the_saved_axes(tmp_path: Path,
                                                              saved: list) -> None:
    points = _points()
    x = OBJECTIVES["latency_p50"]
    fronts = pareto.fronts_by(points, [ACCURACY, x])
    panel = plots.Panel(x, ACCURACY, points, fronts, xlim=(2.0, 6.0), ylim=(0.85, 0.93))
    plots.draw_tradeoff(panel, tmp_path / "a", title="T", caption="CAPTION TEXT",
                        formats=("png",), width="column")
    plots.draw_tradeoff(plots.Panel(x, ACCURACY, points, fronts), tmp_path / "b", title="T",
                        caption="CAPTION TEXT", formats=("png",), style="slides",
                        caption_in_figure=True)
    given, free = saved
    assert given.axes[0].get_xlim() == (2.0, 6.0) and given.axes[0].get_ylim() == (0.85, 0.93)
    assert free.axes[0].get_ylim()[0] < 0.76  # matplotlib's own: every point
    assert given.get_size_inches()[0] == plots.FIGURE_STYLES["paper"].widths_in["column"]
    assert free.get_size_inches()[0] == plots.FIGURE_STYLES["slides"].widths_in["full"]
    assert free.axes[0].xaxis.label.get_fontsize() == plots.FIGURE_STYLES["slides"].font_pt
    assert not any("CAPTION" in t for t in _texts(given))  # not baked in unless asked
    assert any("CAPTION" in t for t in _texts(free))


def test_whiskers_error_bars_and_background_are_drawn(tmp_path: Path, saved: list) -> None:
    points = _points().assign(accuracy_ci_low=lambda d: d["accuracy_top1"] - 0.01,
                              accuracy_ci_high=lambda d: d["accuracy_top1"] + 0.01)
    x = OBJECTIVES["latency_p50"]
    fronts = pareto.fronts_by(points, [ACCURACY, x])
    faint = points.assign(latency_p50_ms=points["latency_p50_ms"] * 1.3)
    for xerr, yerr, bg in ((None, None, None),
                           ((None, "latency_p90_ms"), ("accuracy_ci_low", "accuracy_ci_high"),
                            faint)):
        plots.draw_tradeoff(plots.Panel(x, ACCURACY, points, fronts, x_err_columns=xerr,
                                        y_err_columns=yerr, background=bg),
                            tmp_path / "p", title="T", caption="C", formats=("png",))
    bare, full = (f.axes[0] for f in saved)
    assert len(bare.collections) == 0  # no error bars at all
    segments = [seg for c in full.collections for seg in c.get_segments()]
    heights = sorted(abs(s[1][1] - s[0][1]) for s in segments if s[0][0] == s[1][0])
    assert heights and heights[-1] == pytest.approx(0.02)  # Wilson bars, +/- 0.01
    widths = [abs(s[1][0] - s[0][0]) for s in segments if s[0][1] == s[1][1]]
    assert max(widths) == pytest.approx(0.1 * 6.8)  # p50 to p90 of the dense point
    hollow = [ln for ln in full.lines if ln.get_markerfacecolor() == "none"]
    assert sum(len(ln.get_xdata()) for ln in hollow) == len(faint)


def test_draw_attainment_writes_one_axes_per_panel(tmp_path: Path, saved: list) -> None:
    def run(*pts: tuple[float, float]) -> pd.DataFrame:
        return pd.DataFrame({"latency_p50_ms": [p[0] for p in pts],
                             "accuracy_top1": [p[1] for p in pts]})

    arms = {"search": [run((1.0, 0.9), (2.0, 0.95)), run((1.5, 0.92))],
            "uniform": [run((1.8, 0.91)), run()]}
    panels = [plots.AttainmentPanel(f"budget {b} ms", OBJECTIVES["latency_p50"],
                                    OBJECTIVES["accuracy"], arms, budget=b) for b in (1.6, 2.2)]
    paths = plots.draw_attainment(panels, tmp_path / "attainment")
    for path in paths:
        assert path.read_bytes().startswith(MAGIC[path.suffix[1:]])
    fig = saved[-1]
    shown = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in shown] == ["budget 1.6 ms", "budget 2.2 ms"]
    # per arm one median line, plus the budget line; the legend names both arms
    assert all(len(ax.get_lines()) == 3 for ax in shown)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["search", "uniform"]


def test_attainment_percent_ticks_follow_the_drawn_span(tmp_path: Path, saved: list) -> None:
    # in budget the accuracies span 1.5 points; a point past the budget widens that to 11.5: y ticks
    # are labelled for the drawn 1.5 points, so no two show the same whole percent
    arms = {"search": [pd.DataFrame({"latency_p50_ms": [1.0, 1.2, 1.4, 3.0],
                                     "accuracy_top1": [0.950, 0.958, 0.965, 0.85]})]}
    panel = plots.AttainmentPanel("narrow", OBJECTIVES["latency_p50"], OBJECTIVES["accuracy"],
                                  arms, budget=1.5)
    plots.draw_attainment([panel], tmp_path / "attainment", formats=("png",))
    ax = [a for a in saved[-1].axes if a.get_visible()][0]
    low, high = ax.get_ylim()
    labels = [t.get_text() for t, v in zip(ax.get_yticklabels(), ax.get_yticks(), strict=True)
              if low <= v <= high]
    assert len(labels) >= 3
    assert len(set(labels)) == len(labels), labels
