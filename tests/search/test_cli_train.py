"""End-to-end ``prunebench train`` through ``prunebench.search.cli.main``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prunebench.search.cli import main


def test_train_json_on_digits(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["train", "--model", "test_convnet", "--dataset", "digits", "--epochs", "1",
            "--json", "--quiet"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == "test_convnet" and result["dataset"] == "digits"
    assert 0.0 <= result["accuracy_top1"] <= result["accuracy_top5"] <= 1.0
    assert result["test_n"] == 359 and result["params"] > 1000
    assert Path(result["checkpoint"]).is_file() and result["seconds"] > 0
    assert result["recipe"]["epochs"] == 1
    assert main(args) == 0  # second run comes from the cache
    again = json.loads(capsys.readouterr().out)
    assert again["checkpoint"] == result["checkpoint"]
    assert again["accuracy_top1"] == result["accuracy_top1"]


def test_train_table_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--model", "test_convnet", "--epochs", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "test top-1" in out and "params" in out and "checkpoint" in out


@pytest.mark.parametrize(("argv", "message"), [
    (["--model", "resnet21"], "unknown model 'resnet21'; known models:"),
    (["--dataset", "imagenet"], "unknown dataset 'imagenet'; known datasets: cifar10"),
    (["--dataset", "mnist", "--data-dir", "/nonexistent/mnist"],
     "data directory /nonexistent/mnist does not exist; mnist expects"),
    (["--dataset", "mnist"], "data set 'mnist' needs a data directory (--data-dir DIR)"),
])
def test_user_errors_exit_2_with_one_line(argv: list[str], message: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--epochs", "1", "--quiet", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("prunebench: error: ") and message in err
    assert len(err.strip().splitlines()) == 1


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("prunebench ")
