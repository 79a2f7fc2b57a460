"""A baseline sweep resumed after a crash: a row cut mid-way is measured again, an unreadable
config.json or dense.json is one line naming the file and the fix."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from prunebench.search.cli import main


def _args(assets: dict[str, str], out: Path) -> list[str]:
    return ["baseline", "--model", "test_convnet", "--dataset", "digits", "--checkpoint",
            assets["checkpoint"], "--ratios", "0.25,0.5", "--profile", assets["profile"],
            "--out", str(out), "--quiet", "--json"]


def _rows(run: Path) -> list[dict[str, str]]:
    with (run / "points.csv").open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def swept(assets: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished sweep: dense, l1 r=0.25, l1 r=0.5 (its folder is copied by each test)."""
    out = tmp_path_factory.mktemp("sweep") / "run"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(_args(assets, out)) == 0
    return out


def _copy(swept: Path, tmp_path: Path) -> Path:
    """A copy of the sweep, as if it had been made in its new place (``--out`` is recorded)."""
    run = tmp_path / "run"
    shutil.copytree(swept, run)
    config = json.loads((run / "config.json").read_text())
    config["args"]["out"] = str(run)
    (run / "config.json").write_text(json.dumps(config))
    return run


@pytest.mark.slow
def test_a_row_cut_mid_way_is_dropped_and_measured_again(
        swept: Path, tmp_path: Path, assets: dict[str, str],
        capsys: pytest.CaptureFixture[str], only_line: Callable[[str], str]) -> None:
    run = _copy(swept, tmp_path)
    points = run / "points.csv"
    before = _rows(run)
    assert [r["label"] for r in before] == ["dense", "l1 r=0.25", "l1 r=0.5"]
    text = points.read_bytes()
    start = text.rindex(b"\r\nbaseline,") + 2
    cut = text[: start + (len(text) - start) // 3]  # the last row stops a third of the way
    points.write_bytes(cut)

    assert main(_args(assets, run)) == 0
    out, err = capsys.readouterr()
    line = only_line(err)
    assert line.startswith(f"prunebench: warning: {points}: dropped 1 row(s) not written whole "
                           "(a crash mid-write?): row 4 ('l1 r=0.5': no line end); they are "
                           "measured again, and the original is kept as points.csv.bak-")
    assert [p.read_bytes() for p in run.glob("points.csv.bak-*")] == [cut]
    after = _rows(run)
    assert after[:2] == before[:2]  # what was whole is kept as it was, not re-measured
    assert [r["label"] for r in after] == ["dense", "l1 r=0.25", "l1 r=0.5"]
    remeasured = after[2]
    assert int(remeasured["macs"]) == int(before[2]["macs"]) and remeasured["latency_p50_ms"]
    assert json.loads(remeasured["environment"]) and json.loads(remeasured["config"])
    table = {p["label"]: p for p in json.loads(out)["points"]}
    assert table["l1 r=0.5"]["macs"] == int(before[2]["macs"])  # printed, not "-"


def test_a_row_with_a_field_missing_is_incomplete(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str],
                                                  only_line: Callable[[str], str]) -> None:
    from prunebench.search.runs.sweep import read_points, write_points

    path = tmp_path / "points.csv"
    whole = {"run_kind": "baseline", "label": "l1 r=0.5", "config": "{}", "macs": 10,
             "params": 3, "latency_p50_ms": 1.5, "environment": "{}"}
    write_points(path, [whole, {**whole, "label": "l1 r=0.75", "macs": None}])
    assert [r["label"] for r in read_points(path)] == ["l1 r=0.5"]
    assert "row 3 ('l1 r=0.75': no macs)" in only_line(capsys.readouterr().err)
    assert read_points(path) and capsys.readouterr().err == ""  # rewritten whole: warned once
    path.write_bytes(path.read_bytes().replace(b",{}\r\n", b",{\r\n", 1))  # JSON cut
    assert read_points(path) == []
    assert "row 2 ('l1 r=0.5': environment is cut)" in only_line(capsys.readouterr().err)


@pytest.mark.parametrize("name, fix", [
    ("config.json", "delete it to resume with the arguments given now (points.csv is kept), "
                    "or use another --out"),
    ("dense.json", "delete it to measure the dense reference again, or use another --out"),
])
@pytest.mark.slow
def test_an_unreadable_json_file_is_one_line_and_nothing_is_touched(
        swept: Path, tmp_path: Path, assets: dict[str, str], name: str, fix: str,
        capsys: pytest.CaptureFixture[str], only_line: Callable[[str], str]) -> None:
    run = _copy(swept, tmp_path)
    path = run / name
    path.write_text(path.read_text()[:40])  # cut short
    files = {p.name: p.read_bytes() for p in run.iterdir()}

    assert main(_args(assets, run)) == 2
    line = only_line(capsys.readouterr().err)
    assert line.startswith(f"prunebench: error: {path} is unreadable (")
    assert line.endswith(f": cut short by a crash, or edited); {fix}")
    assert {p.name: p.read_bytes() for p in run.iterdir()} == files
