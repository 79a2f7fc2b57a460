"""``prunebench baseline`` end to end on test_convnet/digits, resume, and bad input (exit 2)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from prunebench.search.cli import main

CPU_1T = Path(__file__).parents[2] / "hw_profiles" / "cpu-1t.toml"


@pytest.fixture()
def fast_profile(tmp_path: Path) -> Path:
    """cpu-1t with tiny timing budgets (tests check plumbing, never timings)."""
    text = CPU_1T.read_text()
    for old, new in (('name = "cpu-1t"', 'name = "fast"'),
                     ("warmup_iters = 20", "warmup_iters = 1"),
                     ("min_samples = 30", "min_samples = 3"),
                     ("min_time_s = 0.3", "min_time_s = 0.01"),
                     ("max_time_s = 3.0", "max_time_s = 0.05")):
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / "fast.toml"
    path.write_text(text)
    return path


def _args(out: Path, profile: Path, ratios: str) -> list[str]:
    return ["baseline", "--model", "test_convnet", "--dataset", "digits", "--epochs", "1",
            "--ratios", ratios, "--profile", str(profile), "--out", str(out), "--quiet"]


def _rows(out: Path) -> list[dict[str, str]]:
    with (out / "points.csv").open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_baseline_writes_a_complete_run_folder_and_resumes(tmp_path: Path, fast_profile: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    assert main([*_args(out, fast_profile, "0.5"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["run_dir"] == str(out)
    config = json.loads((out / "config.json").read_text())
    assert config["command"] == "baseline" and config["accuracy_split"] == "test"
    assert config["profile"]["name"] == "fast" and config["environment"]
    assert json.loads((out / "dense.json").read_text())["method"] == "dense"
    rows = _rows(out)
    assert [(r["run_kind"], r["label"]) for r in rows] == [("dense", "dense"),
                                                           ("baseline", "l1 r=0.5")]
    dense, pruned = rows
    assert int(pruned["macs"]) < int(dense["macs"]) and int(pruned["params"]) < int(
        dense["params"])
    assert pruned["accuracy_split"] == "test" and float(pruned["speedup_vs_dense"]) > 0
    # in the run's dense frame: the dense point's p50 over the interleaved speedup
    assert float(pruned["latency_p50_ms"]) == pytest.approx(
        float(dense["latency_p50_ms"]) / float(pruned["speedup_vs_dense"]), rel=1e-6)
    dense_json = (out / "dense.json").read_text()

    assert main(_args(out, fast_profile, "0.5,0.25")) == 0  # resume: only 0.25 is new
    rows = _rows(out)
    assert [r["label"] for r in rows] == ["dense", "l1 r=0.5", "l1 r=0.25"]
    assert rows[1] == pruned
    assert (out / "dense.json").read_text() == dense_json
    assert json.loads((out / "config.json").read_text())["args"]["ratios"] == "0.5,0.25"


@pytest.mark.parametrize("extra,match", [
    (["--ratios", "0.5,1.2"], "outside"),
    (["--ratios", "half"], "not a comma-separated"),
    (["--ratios", "0.5", "--method", "l7"], "unknown pruning method 'l7'"),
    (["--ratios", "0.5", "--target", "accuracy-loss=1"],
     "--target accuracy-loss=1: unknown option 'target' for method 'l1'; its options: "),
    (["--method", "aap", "--target", "accuracy-loss=1", "--kd"],
     "--kd: unknown option 'kd' for method 'aap'"),
    (["--ratios", "0.5", "--method", "paam", "--target", "accuracy-loss=1"],
     "unknown option 'target' for method 'paam'"),
    (["--ratios", "0.5", "--round-to", "0"],
     "--round-to 0: option round_to=0 of method 'l1' must be an int >= 1"),
    (["--ratios", "0.5", "--finetune-lr", "0"],
     "--finetune-lr 0.0: option finetune_lr=0.0 of method 'l1' must be a float > 0"),
    (["--ratios", "0.5", "--bn-recalibrate", "-1"],
     "--bn-recalibrate -1: option bn_recalibrate=-1 of method 'l1' must be an int >= 0"),
    (["--ratios", "0.5", "--finetune-epochs", "-1"],
     "--finetune-epochs -1: option finetune_epochs=-1 of method 'l1' must be an int >= 0"),
    ([], "give --ratios"),
    (["--ratios", "0.5", "--model", "resnet7"], "unknown model 'resnet7'"),
    (["--ratios", "0.5", "--profile", "no-such-profile"], "no-such-profile"),
])
def test_bad_input_exits_2(extra: list[str], match: str, tmp_path: Path,
                           capsys: pytest.CaptureFixture) -> None:
    base = ["baseline", "--model", "test_convnet", "--dataset", "digits", "--quiet",
            "--out", str(tmp_path / "run")]
    assert main(base + extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("prunebench: error:") and match in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_resume_with_other_arguments_is_refused(tmp_path: Path, fast_profile: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"args": {"model": "resnet20"}}))
    assert main(_args(out, fast_profile, "0.5")) == 2
    assert "different arguments" in capsys.readouterr().err
