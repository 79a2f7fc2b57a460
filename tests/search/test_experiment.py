"""Experiment files (``prunebench run``): validation before work, one shared anchor, resuming."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pandas as pd
import pytest

from prunebench.search.cli import main
from prunebench.search.experiment import Budget, ExperimentError, load_experiment, parse_budget
from prunebench.search.runs import experiment_run

ROOT = Path(__file__).resolve().parents[2]
GOOD = """
name = "tiny"
model = "test_convnet"
dataset = "digits"
profile = "{profile}"
budget = "{budget}"

[base]
checkpoint = "{checkpoint}"

[[arms]]
name = "l1-uniform"
kind = "sweep"
method = "l1"
ratios = [0.5]

[[arms]]
name = "search-static"
kind = "search"
space = "static"
method = "l1"
trials = 2
warm_start = 0
sampler = "random"
remeasure_max = 1

[report]
formats = "png"
widths = "column"
"""


def _write(tmp_path: Path, assets: dict[str, str], budget: str = "2x dense",
           extra: str = "") -> Path:
    path = tmp_path / "exp.toml"
    path.write_text(GOOD.format(profile=assets["profile"], checkpoint=assets["checkpoint"],
                                budget=budget) + extra)
    return path


def _error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


@pytest.mark.parametrize(("text", "want"), [
    ("1.8 ms", Budget(ms=1.8)), ("2ms", Budget(ms=2.0)), (1.5, Budget(ms=1.5)),
    ("0.8x dense", Budget(fraction=0.8)), (".5 X Dense", Budget(fraction=0.5)),
])
def test_budget_forms(text: object, want: Budget) -> None:
    assert parse_budget(text) == want
    assert Budget(fraction=0.8).resolve(2.5) == pytest.approx(2.0)
    assert Budget(ms=1.2).resolve(99.0) == 1.2


@pytest.mark.parametrize("bad", ["fast", "0 ms", "0.8 dense", "-1ms", True, "9x dense"])
def test_bad_budget_is_named(bad: object) -> None:
    with pytest.raises(ExperimentError, match="budget"):
        parse_budget(bad)


@pytest.mark.parametrize(("change", "named"), [
    (("budget = \"2x dense\"", "budget = \"quick\""), "'quick'"),
    (("name = \"tiny\"", "name = \"tiny\"\ncolour = \"red\""), "'colour'"),
    (("kind = \"sweep\"", "kind = \"grid\""), "'grid'"),
    (("ratios = [0.5]", "ratios = [0.5]\nwarp = 3"), "'warp'"),
    (("trials = 2", "trials = \"many\""), "many"),
    (("trials = 2", "trials = 2\nprofile = \"cpu-1t\""), "'profile' is set by the experiment"),
    (("sampler = \"random\"", "sampler = \"random\"\nquiet = 1"), "quiet"),
    (("formats = \"png\"", "formats = \"png\"\nstyle = \"poster\""), "poster"),
    (("model = \"test_convnet\"", "model = \"no_such_net\""), "no_such_net"),
])
def test_bad_files_exit_2_naming_the_key(tmp_path: Path, assets: dict[str, str],
                                         capsys: pytest.CaptureFixture[str],
                                         change: tuple[str, str], named: str) -> None:
    path = _write(tmp_path, assets)
    path.write_text(path.read_text().replace(*change, 1))
    err = _error(["run", str(path), "--out", str(tmp_path / "out")], capsys)
    assert named in err and str(path) in err
    assert not (tmp_path / "out").exists()  # validated before any work


def test_missing_file_and_check(tmp_path: Path, assets: dict[str, str],
                                capsys: pytest.CaptureFixture[str]) -> None:
    assert "does not exist" in _error(["run", str(tmp_path / "nope.toml")], capsys)
    path = _write(tmp_path, assets)
    assert main(["run", str(path), "--check"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [a["name"] for a in shown["arms"]] == ["l1-uniform", "search-static"]
    assert shown["budget"] == "2x dense"


def test_shipped_demo_validates() -> None:
    exp = load_experiment(ROOT / "experiments" / "demo.toml")
    assert exp.budget == Budget(fraction=0.8) and exp.model == "resnet20"
    assert {a.kind for a in exp.arms} == {"sweep", "search"}
    assert any(a.prepare for a in exp.arms)


def _run(path: Path, out: Path) -> dict:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["run", str(path), "--out", str(out), "--quiet", "--json"])
    assert code == 0
    return json.loads(buf.getvalue().strip().splitlines()[-1])


@pytest.mark.slow
def test_one_anchor_across_arms_and_resume(tmp_path: Path, assets: dict[str, str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, assets)
    out = tmp_path / "run"
    real_stage = experiment_run._stage

    def interrupted(stage: str, argv: list[str], *args: object, **kwargs: object) -> None:
        if stage.startswith("search-static"):
            raise KeyboardInterrupt  # Ctrl-C after the sweep finished
        real_stage(stage, argv, *args, **kwargs)

    monkeypatch.setattr(experiment_run, "_stage", interrupted)
    exp = load_experiment(path)
    with pytest.raises(KeyboardInterrupt):
        experiment_run.run_experiment(exp, out, progress=False, echo=lambda _: None)
    state = json.loads((out / "state.json").read_text())
    assert state["done"] == [f"{Path(assets['profile']).resolve()}/l1-uniform"] \
        or state["done"][0].endswith("/l1-uniform")
    sweep_rows = pd.read_csv(out / "l1-uniform" / "points.csv")
    monkeypatch.setattr(experiment_run, "_stage", real_stage)

    summary = _run(path, out)  # continues: the sweep is not measured again
    assert len(pd.read_csv(out / "l1-uniform" / "points.csv")) == len(sweep_rows)
    dense = json.loads((out / "dense.json").read_text())
    anchor = dense["latency_p50_ms"]
    (profile_summary,) = summary["profiles"].values()
    assert profile_summary == {"dense_p50_ms": anchor, "budget_ms": round(2 * anchor, 4)}
    # one frame: the sweep's dense point is the run's, the search timed against it
    assert json.loads((out / "l1-uniform" / "dense.json").read_text()) == dense
    config = json.loads((out / "search-static" / "config.json").read_text())
    assert json.dumps(config).count(repr(anchor)) >= 1
    resolved = json.loads((out / "experiment.resolved.json").read_text())
    (entry,) = resolved["profiles"].values()
    search_argv = entry["arms"]["search-static"]
    assert search_argv[search_argv.index("--latency-anchor-ms") + 1] == repr(anchor)
    assert (out / "experiment.toml").read_text() == path.read_text()
    report = out / "report"
    assert (report / "report.md").is_file() and list(report.glob("plots/*.png"))

    # a search interrupted after its trials: the re-run owes it no more trials
    state = json.loads((out / "state.json").read_text())
    state["done"] = [k for k in state["done"] if not k.endswith("/search-static")]
    (out / "state.json").write_text(json.dumps(state))
    _run(path, out)
    trials = pd.read_csv(out / "search-static" / "trials.csv")
    assert len(trials) == 2

    # another experiment in the same folder is refused, naming what differs
    path.write_text(path.read_text().replace("trials = 2", "trials = 3"))
    with pytest.raises(Exception, match="arms differs"):
        experiment_run.run_experiment(load_experiment(path), out, progress=False,
                                      echo=lambda _: None)
