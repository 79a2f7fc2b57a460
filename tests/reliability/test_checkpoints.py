"""A checkpoint of another network, other data or without metadata is refused with one line,
before anything is trained, measured or written."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from prunebench.search.cli import main


def _checkpoint(path: Path, meta: dict, model: str = "test_convnet", classes: int = 10) -> Path:
    from prunebench.harness.models import create_model
    from prunebench.harness.train import save_checkpoint

    save_checkpoint(create_model(model, classes, 1), path, meta)
    return path


def _finetune(ckpt: Path, out: Path, model: str = "test_resnet") -> list[str]:
    return ["finetune", "--model", model, "--dataset", "digits", "--checkpoint", str(ckpt),
            "--method", "antidote", "--targeted-dropout", "gamma=0.5,alpha=0.5", "--epochs",
            "1", "--out", str(out), "--quiet"]


def test_finetune_refuses_a_checkpoint_of_another_model(
        assets: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        only_line: Callable[[str], str]) -> None:
    ckpt = Path(assets["checkpoint"])
    before = ckpt.read_bytes()
    out = tmp_path / "ft.pt"
    assert main(_finetune(ckpt, out)) == 2
    assert only_line(capsys.readouterr().err) == (
        f"prunebench: error: checkpoint {ckpt} holds a test_convnet network, not test_resnet; "
        "pass --model test_convnet or a checkpoint of test_resnet")
    assert not out.exists() and ckpt.read_bytes() == before


def test_a_checkpoint_without_metadata_says_what_is_missing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        only_line: Callable[[str], str]) -> None:
    ckpt = _checkpoint(tmp_path / "bare.pt", {"note": "saved by hand"})
    out = tmp_path / "ft.pt"
    assert main(_finetune(ckpt, out, model="test_convnet")) == 2
    assert only_line(capsys.readouterr().err) == (
        f"prunebench: error: checkpoint {ckpt} has no model, num_classes, in_channels in its "
        "metadata (it has: note), so what it holds cannot be checked; save it with "
        "prunebench.harness.train.save_checkpoint(model, path, {'model': NAME, "
        "'num_classes': N, 'in_channels': C})")
    assert not out.exists()


def test_a_checkpoint_for_other_data_is_refused(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str],
                                                only_line: Callable[[str], str]) -> None:
    ckpt = _checkpoint(tmp_path / "c100.pt", {"model": "test_convnet", "num_classes": 100,
                                              "in_channels": 1}, classes=100)
    assert main(_finetune(ckpt, tmp_path / "ft.pt", model="test_convnet")) == 2
    assert only_line(capsys.readouterr().err) == (
        f"prunebench: error: checkpoint {ckpt} (test_convnet) was made for 100 classes, but "
        "this data set has 10; use a checkpoint trained on this data set (or pass the data "
        "set it was trained on)")


@pytest.mark.parametrize("command", ["measure", "baseline", "search"])
def test_every_command_checks_the_checkpoint_against_model(
        assets: dict[str, str], tmp_path: Path, command: str,
        capsys: pytest.CaptureFixture[str], only_line: Callable[[str], str]) -> None:
    ckpt = assets["checkpoint"]
    args = {"measure": ["--method", "dense"], "baseline": ["--ratios", "0.5"],
            "search": ["--trials", "1"]}[command]
    out = ["--out", str(tmp_path / "run")] if command != "measure" else []
    assert main([command, "--model", "test_resnet", "--dataset", "digits", "--checkpoint",
                 ckpt, "--profile", assets["profile"], "--quiet", *out, *args]) == 2
    assert only_line(capsys.readouterr().err) == (
        f"prunebench: error: checkpoint {ckpt} holds a test_convnet network, not test_resnet; "
        "pass --model test_convnet or a checkpoint of test_resnet")
    if command != "measure":  # nothing measured: no points.csv, trials or dense.json
        assert not any((tmp_path / "run").glob("*.csv"))
        assert not (tmp_path / "run" / "dense.json").exists()
