"""The library behind the commands: ``run_search`` and ``compare`` write what the CLI writes."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pandas as pd
import pytest

from prunebench.harness.errors import PrunebenchError
from prunebench.search.cli import main
from prunebench.search.runs import SearchResult, compare, report, run_search
from prunebench.search.runs.search_run import method_setting
from prunebench.search.runs.search_settings import SEARCH_DEFAULTS, build_spec

RUN_FILES = {"config.json", "dense.json", "study.journal", "trials.csv", "remeasured.csv",
             "front.csv", "summary.json"}
SETTINGS = dict(trials=2, sampler="random", seed=1, warm_start=0, remeasure_max=1)


@pytest.fixture(scope="module")
def runs(assets: dict[str, str]) -> tuple[SearchResult, Path]:
    """One search through the library and the same one through ``prunebench search``."""
    root = Path(assets["dir"])
    result = run_search(model="test_convnet", dataset="digits", checkpoint=assets["checkpoint"],
                        profile=assets["profile"], budget_ms=1000.0, out=root / "lib",
                        progress=False, **SETTINGS)
    cli = root / "cli"
    with contextlib.redirect_stdout(io.StringIO()):
        rc = main(["search", "--model", "test_convnet", "--dataset", "digits", "--checkpoint",
                   assets["checkpoint"], "--profile", assets["profile"],
                   "--latency-budget-ms", "1000", "--trials", "2", "--sampler", "random",
                   "--seed", "1", "--warm-start", "0", "--remeasure-max", "1", "--out", str(cli),
                   "--quiet", "--json"])
    assert rc == 0
    return result, cli


@pytest.mark.slow
def test_run_search_writes_the_folder_prunebench_search_writes(
        runs: tuple[SearchResult, Path]) -> None:
    result, cli = runs
    assert isinstance(result, SearchResult) and result.run_dir.name == "lib"
    files = {p.name for p in result.run_dir.iterdir() if not p.name.startswith(".")}
    assert files == RUN_FILES == {p.name for p in cli.iterdir() if not p.name.startswith(".")}
    lib_config = json.loads((result.run_dir / "config.json").read_text())
    cli_config = json.loads((cli / "config.json").read_text())
    assert set(lib_config) == set(cli_config) and set(lib_config["args"]) == set(cli_config["args"])
    assert lib_config["spec"] == cli_config["spec"]  # the same search, so the same study
    assert lib_config["args"]["quiet"] and not lib_config["args"]["json"]
    assert set(json.loads((result.run_dir / "summary.json").read_text())) == set(
        json.loads((cli / "summary.json").read_text()))
    assert list(pd.read_csv(cli / "trials.csv")["params_conv1"]) == list(
        result.trials["params_conv1"])  # same seed, same sampler: the same trials


@pytest.mark.slow
def test_search_result_reads_the_run_back(runs: tuple[SearchResult, Path]) -> None:
    result, _ = runs
    trials = pd.read_csv(result.run_dir / "trials.csv")
    assert list(result.trials["trial_number"]) == list(trials["trial_number"]) == [0, 1]
    assert result.summary == json.loads((result.run_dir / "summary.json").read_text())
    assert result.best is not None and result.best["feasible"]
    assert result.best["trial_number"] in (0, 1) and result.best["latency_p50_ms"] > 0
    assert result.hit_rate == result.summary["budget_hit_rate"]
    assert result.error is None and not result.interrupted
    assert len(result.front) == len(pd.read_csv(result.run_dir / "front.csv"))


@pytest.mark.slow
def test_an_unmet_budget_returns_with_its_message(assets: dict[str, str], tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="no configuration met the budget in 1 trials"):
        result = run_search(model="test_convnet", dataset="digits",
                            checkpoint=assets["checkpoint"], profile=assets["profile"],
                            budget_ms=1e-4, out=tmp_path / "unmet", progress=False,
                            **{**SETTINGS, "trials": 1})
    assert result.best is None and "lowest seen was" in result.error
    assert (tmp_path / "unmet" / "trials.csv").is_file() and result.front.empty


@pytest.mark.slow
def test_compare_and_report_return_the_report_folder(runs: tuple[SearchResult, Path],
                                                     tmp_path: Path) -> None:
    result, cli = runs
    out = compare([result.run_dir, cli], out=tmp_path / "cmp", budget_ms=1000.0, formats="png")
    assert out == tmp_path / "cmp"
    for name in ("report.html", "report.md", "summary.json", "fronts.csv", "fronts.tex"):
        assert (out / name).is_file(), name
    assert json.loads((out / "summary.json").read_text())["runs"] == ["lib", "cli"]
    one = report(result.run_dir, formats=("png",))
    assert one == result.run_dir / "report" and (one / "report.html").is_file()


def test_bad_settings_are_named(assets: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(PrunebenchError, match="run_search needs a dataset"):
        run_search(model="test_convnet")
    with pytest.raises(TypeError, match="unknown search setting 'max_ratios'"):
        run_search(model="test_convnet", dataset="digits", max_ratios=0.5)
    with pytest.raises(TypeError, match="'latency_budget_ms' as a named argument"):
        run_search(model="test_convnet", dataset="digits", latency_budget_ms=2.0)
    with pytest.raises(PrunebenchError, match="unknown sampler 'cmaes'"):
        run_search(model="test_convnet", dataset="digits", sampler="cmaes",
                   out=tmp_path / "x")
    with pytest.raises(PrunebenchError, match="--formats 'svg': use png"):
        compare([tmp_path], formats="svg")
    assert not (tmp_path / "x").exists()  # nothing written before the settings are checked


def test_methods_and_defaults_resolve_as_the_command_does() -> None:
    assert method_setting("static", "l1", None) == "l1"
    assert method_setting("dynamic", "l1", None) is None  # no static part: antidote by default
    assert method_setting("dynamic", "l1", "antidote_fast") == "antidote_fast"
    assert method_setting("hybrid", ["l1", "fpgm"], "antidote") == "l1,fpgm,antidote"
    spec = build_spec({"model": "m", "dataset": "d", "space": "hybrid"})
    assert spec.space.static_methods == ("l1",) and spec.space.dynamic_method == "antidote"
    assert spec.latency_margin == SEARCH_DEFAULTS["latency_margin"] == 0.1
    assert spec.objectives == ("accuracy", "latency_p50") and spec.latency_frame == "anchored"
    with pytest.raises(PrunebenchError, match="method 'antidote' is dynamic"):
        build_spec({"model": "m", "dataset": "d", "method": "antidote"})
