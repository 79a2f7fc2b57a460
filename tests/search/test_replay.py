"""Every point replays: `measure --from RUN_DIR --trial N / --point LABEL` rebuilds it from the
configuration it recorded and gets the same MACs and, with the same seed and threads, accuracy."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pandas as pd
import pytest

from prunebench.harness.pruning import PruningConfig
from prunebench.search.cli import main
from prunebench.search.replay import upgrade_config


def _cli(*argv: str) -> tuple[int, str]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(list(argv))
    return rc, buf.getvalue()


def _search(assets: dict[str, str], out: Path, *extra: str) -> Path:
    rc, _ = _cli("search", "--model", "test_resnet", "--dataset", "digits", "--checkpoint",
                 assets["resnet"], "--profile", assets["profile"], "--sampler", "random",
                 "--seed", "3", "--warm-start", "0", "--trials", "2", "--remeasure-max", "0",
                 "--latency-budget-ms", "1000", "--out", str(out), "--quiet", "--json", *extra)
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def resnet_assets(assets: dict[str, str]) -> dict[str, str]:
    from prunebench.harness.models import create_model
    from prunebench.harness.train import save_checkpoint

    ckpt = Path(assets["dir"]) / "resnet.pt"
    save_checkpoint(create_model("test_resnet", 10, 1), ckpt,
                    {"model": "test_resnet", "num_classes": 10, "in_channels": 1})
    return {**assets, "resnet": str(ckpt)}


def _replays_the_same(run: Path, trial: int) -> dict:
    rc, text = _cli("measure", "--from", str(run), "--trial", str(trial), "--quiet", "--json")
    assert rc == 0
    out = json.loads(text)
    columns = out["replay"]["columns"]
    assert columns["macs"]["same"] and columns["params"]["same"], columns
    assert columns["accuracy_top1"]["same"], columns
    recorded = pd.read_csv(run / "trials.csv").set_index("trial_number").loc[trial]
    assert json.loads(recorded["config"]) == out["config"]  # rebuilt from that very record
    return out


@pytest.mark.slow
@pytest.mark.parametrize("space", ["static", "dynamic", "hybrid"])
def test_fine_tuned_trials_replay(space: str, resnet_assets: dict[str, str],
                                  tmp_path: Path) -> None:
    method = {"static": "l1", "dynamic": "antidote", "hybrid": "l1,antidote"}[space]
    extra = ["--space", space, "--method", method, "--finetune-epochs", "1"]
    if space != "static":
        extra += ["--exec", "gathered"]
    run = _search(resnet_assets, tmp_path / space, *extra)
    out = _replays_the_same(run, 1)
    config = PruningConfig.from_dict(out["config"])
    assert config.finetune_epochs == 1
    if space == "hybrid":
        assert config.static_method == "l1" and config.ratios and config.keep
    if space == "dynamic":
        assert config.keep and not config.ratios and config.options == {}


@pytest.mark.slow
def test_sweep_points_replay(assets: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    rc, _ = _cli("baseline", "--model", "test_convnet", "--dataset", "digits", "--checkpoint",
                 assets["checkpoint"], "--profile", assets["profile"], "--method", "l1",
                 "--ratios", "0.5", "--finetune-epochs", "1", "--out", str(out), "--quiet")
    assert rc == 0
    rc, text = _cli("measure", "--from", str(out), "--point", "l1 r=0.5", "--quiet", "--json")
    assert rc == 0
    columns = json.loads(text)["replay"]["columns"]
    assert all(columns[k]["same"] for k in ("macs", "params", "accuracy_top1")), columns


@pytest.mark.parametrize(("argv", "message"), [
    (["--from", "nowhere", "--trial", "0"], "is not a folder"),
    (["--trial", "0"], "--trial/--point need --from"),
    ([], "measure needs --model"),
])
def test_bad_replay_arguments_exit_2(argv: list[str], message: str,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["measure", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_from_refuses_flags_it_would_ignore_and_missing_points(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"command": "baseline", "args": {
        "model": "test_convnet", "dataset": "digits"}}))
    (run / "points.csv").write_text("run_kind,label,config\ndense,dense,{}\n")
    assert main(["measure", "--from", str(run), "--point", "x", "--model", "test_convnet"]) == 2
    assert "drop --model" in capsys.readouterr().err
    assert main(["measure", "--from", str(run), "--point", "l1 r=0.9"]) == 2
    assert "its points: 'dense'" in capsys.readouterr().err
    assert main(["measure", "--from", str(run), "--trial", "1"]) == 2
    assert "is a baseline sweep; pick a point with --point" in capsys.readouterr().err


def test_records_from_before_the_pipeline_fields_upgrade() -> None:
    old_dynamic = {"method": "antidote_fast", "keep": {"a": 0.5}, "exec_mode": "fast",
                   "options": {"finetune_epochs": 2}}
    assert upgrade_config(old_dynamic) == PruningConfig(
        method="antidote_fast", keep={"a": 0.5}, exec_mode="fast", finetune_epochs=2)
    old_hybrid = {"method": "antidote", "keep": {"a": 0.5}, "ratios": {"b": 0.2},
                  "options": {"static_method": "l1", "round_to": 4, "finetune_epochs": 1}}
    assert upgrade_config(old_hybrid) == PruningConfig(
        method="antidote", keep={"a": 0.5}, ratios={"b": 0.2}, static_method="l1",
        static_options={"round_to": 4}, finetune_epochs=1)
    static = {"method": "l1", "global_ratio": 0.5, "options": {"finetune_epochs": 1}}
    assert upgrade_config(static) == PruningConfig.from_dict(static)  # the method's own recovery
