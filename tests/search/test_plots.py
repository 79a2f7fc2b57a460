"""Smoke tests: each plot writes valid, non-empty PNG, SVG and PDF files (the look is checked by
eye, see the report of issue #8)."""

from __future__ import annotations

from pathlib import Path

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
                        x_upper_column="latency_p90_ms" if x_name.startswith("latency") else None)
    paths = plots.draw_tradeoff(panel, tmp_path / "plots" / f"acc_{x_name}", width=width,
                                title="resnet20 / cifar10", caption="resnet20 on cifar10; "
                                "profile cpu-2t; machine test")
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
