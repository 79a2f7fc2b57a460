"""benchmarks/reproduce_cifar.py end to end on generated files in the real CIFAR-10 format."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "reproduce_cifar.py"


def _cifar10(root: Path, per_batch: int, test: int) -> Path:
    """``root/cifar-10-batches-py/``: five train batches and a test batch, as torchvision's
    python pickles (``b"data"`` rows of 3072 bytes, ``b"labels"``), with a class signal."""
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in [*((f"data_batch_{i}", per_batch) for i in range(1, 6)), ("test_batch", test)]:
        labels = [int(v) for v in rng.integers(0, 10, n)]
        data = rng.integers(0, 128, (n, 3, 32, 32), dtype=np.uint8)
        for row, label in zip(data, labels, strict=True):  # class c brightens channel c % 3
            row[label % 3, label:label + 8] += 100
        entry = {b"batch_label": name.encode(), b"labels": labels,
                 b"data": data.reshape(n, 3072), b"filenames": [b"x.png"] * n}
        with open(base / name, "wb") as f:
            pickle.dump(entry, f, protocol=2)
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [b"c%d" % i for i in range(10)]}, f, protocol=2)
    return root


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=600, check=False)


@pytest.mark.slow
def test_reproduce_cifar_on_generated_files(tmp_path: Path) -> None:
    data = _cifar10(tmp_path / "data", per_batch=40, test=50)
    args = ["--data-dir", str(data), "--epochs", "1", "--finetune-epochs", "1",
            "--train-device", "cpu", "--quiet"]
    done = _run(*args)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    text = "\n".join(lines[:-1])
    for published in ("93.04", "93.06", "-27.6%", "93.59", "93.49", "-52.6%",
                      "Li et al. 2017", "He et al. 2019"):
        assert published in text
    assert "time: estimated " in text and ", actual " in text
    assert result["model"] == "resnet56" and result["train_device"] == "cpu"
    assert result["train_images"] == 180 and result["test_images"] == 50
    assert result["dense_recipe"]["name"] == "cifar-resnet" and result["dense_recipe"][
        "epochs"] == 1 and result["finetune_recipe"]["name"] == "cifar-finetune"
    assert not result["dense_cached"] and result["estimated_s"] > 0
    assert result["actual_s"] >= result["dense_s"] > 0 and result["probe_images_per_s"] > 0
    assert [r["method"] for r in result["rows"]] == ["l1", "fpgm"]
    for row in result["rows"]:
        assert row["published"]["base_top1"] in (93.04, 93.59)
        assert 0 <= row["pruned_top1"] <= 100 and row["base_top1"] == result["dense_top1"]
        assert abs(row["flops_reduction"] - 0.5) < 0.05 and row["finetune_epochs"] == 1
        assert f"-{100 * row['flops_reduction']:.1f}%" in text
    again = _run(*args, "--json", "--finetune-epochs", "0", "--target", "0.3")
    assert again.returncode == 0, again.stderr
    second = json.loads(again.stdout)  # --json: one line only
    assert second["dense_cached"] and second["dense_checkpoint"] == result["dense_checkpoint"]
    assert all(abs(r["flops_reduction"] - 0.3) < 0.05 for r in second["rows"])
    assert all(r["pruned_top1"] == r["pruned_top1_no_finetune"] for r in second["rows"])


def test_reproduce_cifar_bad_input_is_one_line(tmp_path: Path) -> None:
    done = _run("--data-dir", str(tmp_path), "--train-device", "cpu", "--quiet")
    assert done.returncode == 2
    assert done.stderr.startswith("reproduce_cifar: error: no cifar-10-batches-py/ in ")
    assert len(done.stderr.strip().splitlines()) == 1
    done = _run("--data-dir", str(tmp_path), "--target", "1.5")
    assert done.returncode == 2 and "--target" in done.stderr
