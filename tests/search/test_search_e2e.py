"""``prunebench search`` end to end on a tiny network (test_convnet on digits)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from prunebench.harness.measurement import Measurement
from prunebench.search.cli import main

ROOT = Path(__file__).resolve().parents[2]



def _args(assets: dict[str, str], out: str, *extra: str) -> list[str]:
    return ["search", "--model", "test_convnet", "--dataset", "digits", "--checkpoint",
            assets["checkpoint"], "--profile", assets["profile"], "--sampler", "random",
            "--seed", "0", "--warm-start", "0", "--out", out, "--quiet", "--json", *extra]


@pytest.fixture(scope="module")
def first_run(assets: dict[str, str]) -> tuple[Path, dict]:
    """3 random trials; with --round-to 8, a ratio of 0.55 removes all 8 channels of conv1: with
    seed 30, trial 2 draws it and fails."""
    import contextlib
    import io

    out = Path(assets["dir"]) / "run"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(_args(assets, str(out), "--trials", "3", "--latency-budget-ms", "1000",
                        "--round-to", "8", "--max-ratio", "0.55", "--remeasure-max", "2",
                        "--seed", "30"))
    assert rc == 0
    return out, json.loads(buf.getvalue())


@pytest.mark.slow
def test_run_folder_is_complete(first_run: tuple[Path, dict]) -> None:
    out, summary = first_run
    for name in ("config.json", "dense.json", "study.journal", "trials.csv", "front.csv",
                 "remeasured.csv", "summary.json"):
        assert (out / name).is_file(), name
    trials = pd.read_csv(out / "trials.csv")
    assert list(trials["trial_number"]) == [0, 1, 2]
    assert list(trials["label"]) == ["trial 0", "trial 1", "trial 2"]
    assert set(trials["run_kind"]) == {"search"}
    assert {"params_conv1", "params_conv2", "params_conv3", "latency_p50_ms", "accuracy_top1",
            "energy_mj_per_inference", "macs", "params", "constraint_latency_ms"} <= set(trials)
    ok = trials[trials["state"] == "COMPLETE"]
    assert len(ok) == 2 and (ok["accuracy_split"] == "val").all()
    front = pd.read_csv(out / "front.csv")
    assert len(front) >= 1 and (front["accuracy_split"] == "test").all()
    assert front["feasible"].all() and front["remeasured"].all()
    assert front["speedup_vs_dense"].notna().all()
    dense = Measurement.from_dict(json.loads((out / "dense.json").read_text()))
    assert dense.method == "dense" and dense.latency_p50_ms > 0
    config = json.loads((out / "config.json").read_text())
    assert config["latency_budget_ms"] == 1000.0 and config["profile"]["name"] == "tiny-1t"
    assert config["environment"] and config["space"]["groups"] == ["conv1", "conv2", "conv3"]
    assert summary["counts"]["complete"] == 2 and summary["budget_hit_rate"] == 1.0
    assert summary["trials_this_run"] == 3 and summary["trials_per_minute"] > 0
    # a latency budget with the default 10% margin: settled timing; the tiny profile's own CI
    # target (20%) is met before the settle's (10%), so its trials read "full"
    assert summary["trial_timing"] == "settled" and set(ok["trial_timing"]) == {"full"}


@pytest.mark.slow
def test_latencies_are_in_the_study_anchored_frame(first_run: tuple[Path, dict]) -> None:
    """Every latency of the run (trials, dense, re-measured) is anchor / interleaved speedup."""
    import optuna

    from prunebench.search.objective import ANCHOR_ATTR

    out, _ = first_run
    study = optuna.load_study(study_name="run", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(out / "study.journal"))))
    anchor = study.user_attrs[ANCHOR_ATTR]
    for t in study.trials:
        if t.state.name != "COMPLETE":
            continue
        env = json.loads(t.user_attrs["environment"])
        assert env["latency_frame"] == "dense-anchored" and env["latency_anchor_ms"] == anchor
        assert t.user_attrs["latency_p50_ms"] == pytest.approx(
            anchor / t.user_attrs["speedup_vs_dense"])
        assert t.user_attrs["latency_p50_ms_raw"] == env["latency_raw_p50_ms"] > 0
    front = pd.read_csv(out / "front.csv")
    assert front["latency_p50_ms"].to_numpy() == pytest.approx(
        anchor / front["speedup_vs_dense"].to_numpy())


@pytest.mark.slow
def test_failing_trial_is_recorded_with_its_reason(first_run: tuple[Path, dict]) -> None:
    out, summary = first_run
    trials = pd.read_csv(out / "trials.csv")
    failed = trials[trials["state"] == "FAIL"]
    assert list(failed["trial_number"]) == [2] and summary["counts"]["fail"] == 1
    assert "would remove all" in failed["fail_reason"].iloc[0]


@pytest.mark.slow
def test_resume_adds_trials_to_the_same_study(assets: dict[str, str],
                                              first_run: tuple[Path, dict],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = first_run
    rc = main(_args(assets, str(out), "--trials", "1", "--latency-budget-ms", "1000",
                    "--round-to", "8", "--max-ratio", "0.55", "--remeasure-max", "1",
                    "--seed", "30", "--resume"))
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["counts"]["total"] == 4 and summary["trials_this_run"] == 1
    # the resumed run times in the first run's frame: the dense anchor is not measured again
    trials = pd.read_csv(out / "trials.csv")
    anchors = {json.loads(e)["latency_anchor_ms"] for e in
               trials.loc[trials["state"] == "COMPLETE", "environment"]}
    assert len(anchors) == 1
    assert list(pd.read_csv(out / "trials.csv")["trial_number"]) == [0, 1, 2, 3]
    # a changed budget is another study: resuming it is refused, naming the difference
    rc = main(_args(assets, str(out), "--trials", "1", "--latency-budget-ms", "2",
                    "--round-to", "8", "--max-ratio", "0.55", "--seed", "30"))
    assert rc == 2 and "latency_ms" in capsys.readouterr().err


@pytest.mark.slow
def test_a_given_anchor_is_the_frame_and_a_resume_must_not_change_it(
        assets: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "given"
    rc = main(_args(assets, str(out), "--trials", "1", "--latency-anchor-ms", "7.5",
                    "--remeasure-max", "0"))
    assert rc == 0
    trial = pd.read_csv(out / "trials.csv").iloc[0]
    assert json.loads(trial["environment"])["latency_anchor_ms"] == 7.5
    assert trial["latency_p50_ms"] == pytest.approx(7.5 / trial["speedup_vs_dense"])
    capsys.readouterr()
    rc = main(_args(assets, str(out), "--trials", "1", "--latency-anchor-ms", "9", "--resume"))
    assert rc == 2 and "times in the frame of a 7.5 ms dense anchor" in capsys.readouterr().err


@pytest.mark.slow
def test_impossible_budget_names_the_fastest_latency(assets: dict[str, str], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(_args(assets, str(tmp_path / "run"), "--trials", "2", "--latency-budget-ms",
                    "0.0001"))
    assert rc == 2
    err = capsys.readouterr().err
    assert "no configuration met the budget in 2 trials" in err
    assert "latency budget 0.0001 ms but the lowest seen was" in err
    assert (tmp_path / "run" / "trials.csv").is_file()  # the run folder is still written
    assert pd.read_csv(tmp_path / "run" / "front.csv").empty


def test_resume_without_a_study_is_an_error(assets: dict[str, str], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(_args(assets, str(tmp_path / "none"), "--trials", "1", "--resume"))
    assert rc == 2 and "--resume: no study 'none'" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--sampler", "cmaes"], "unknown sampler 'cmaes'; choose one of tpe, nsga2, gp, random"),
    (["--space", "sparse"], "unknown search space 'sparse'; choose one of static, dynamic, "
                            "hybrid"),
    (["--method", "nope"], "unknown pruning method 'nope'; choose among"),
    (["--objectives", "accuracy,speed"], "unknown objective 'speed'; choose among accuracy"),
    (["--space", "static", "--method", "l1", "--trials", "-1"],
     "--trials -1 must be a whole number >= 0"),
    (["--latency-frame", "wall"], "unknown latency frame 'wall'; choose among anchored, direct"),
    (["--latency-anchor-ms", "-2"], "--latency-anchor-ms -2.0 needs a positive dense p50"),
    (["--latency-margin", "-0.1"], "--latency-margin -0.1 is outside [0, 1)"),
])
def test_unknown_names_exit_2_with_the_choices(assets: dict[str, str], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str],
                                               extra: list[str], message: str) -> None:
    rc = main(_args(assets, str(tmp_path / "x"), *extra))
    assert rc == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_ctrl_c_stops_after_the_trial_and_writes_the_folder(assets: dict[str, str],
                                                            tmp_path: Path) -> None:
    import os
    import signal

    from prunebench.search.objective import SearchObjective, SearchSpec
    from prunebench.search.runs.search_run import SearchRun
    from prunebench.search.space import SpaceSpec

    class Interrupting(SearchObjective):
        def __call__(self, trial):  # the user presses Ctrl-C during trial 0
            if trial.number == 0:
                os.kill(os.getpid(), signal.SIGINT)
            return super().__call__(trial)

    spec = SearchSpec(model="test_convnet", dataset="digits", space=SpaceSpec(),
                      profile=assets["profile"], checkpoint=assets["checkpoint"],
                      budgets={"latency_ms": 1000.0})
    run = SearchRun(spec, tmp_path / "run", args={}, sampler="random", progress=False,
                    objective=Interrupting(spec)).execute(n_trials=5, timeout=None)
    assert run.interrupted and run.summary["interrupted"]
    trials = pd.read_csv(tmp_path / "run" / "trials.csv")
    assert list(trials["state"]) == ["COMPLETE"]  # trial 0 finished; no trial 1 started
    front = pd.read_csv(tmp_path / "run" / "front.csv")
    assert len(front) == 1 and not front["remeasured"].any()


@pytest.mark.slow
def test_a_macs_budgeted_search_times_trials_light_and_its_front_in_full(
        assets: dict[str, str], tmp_path: Path, capsys) -> None:
    out = tmp_path / "macs"
    rc = main(_args(assets, str(out), "--trials", "2", "--objectives", "accuracy,macs",
                    "--macs-budget", "1e9", "--remeasure-max", "1"))
    summary = json.loads(capsys.readouterr().out)
    assert rc == 0 and summary["trial_timing"] == "light"
    trials = pd.read_csv(out / "trials.csv")
    assert set(trials["trial_timing"]) == {"light"} and (trials["latency_p50_ms"] > 0).all()
    remeasured = pd.read_csv(out / "remeasured.csv")  # the front: strict, as always
    assert len(remeasured) == 1 and remeasured["latency_n"].iloc[0] > 0


def test_a_bad_trial_timing_exits_2(tmp_path: Path, capsys) -> None:
    code = main(["search", "--model", "test_convnet", "--dataset", "digits", "--trials", "1",
                 "--trial-timing", "quick", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "unknown trial timing 'quick'; choose one of auto, full, light, settled" in err
    assert not (tmp_path / "run").exists()


def test_settled_trial_timing_without_a_latency_budget_exits_2(tmp_path: Path, capsys) -> None:
    code = main(["search", "--model", "test_convnet", "--dataset", "digits", "--trials", "1",
                 "--objectives", "accuracy,macs", "--macs-budget", "1e6",
                 "--trial-timing", "settled", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "trial timing 'settled' needs a latency budget (--latency-budget-ms)" in err
    assert not (tmp_path / "run").exists()
