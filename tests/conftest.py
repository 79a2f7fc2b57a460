"""Session-wide test setup: one torch thread, a private checkpoint cache, shared data paths."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)  # the CI machine has few cores and tests run beside other work

MNIST_DIR = (Path(__file__).parents[1] / "../shared/data/mnist").resolve()


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory,
                   monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point ``PRUNEBENCH_CACHE`` at a fresh folder so no test sees another's checkpoints."""
    cache = tmp_path_factory.mktemp("prunebench-cache")
    monkeypatch.setenv("PRUNEBENCH_CACHE", str(cache))
    return cache


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The MNIST test-set IDX files shipped beside the repository (must exist, even in CI)."""
    if not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.fail(f"MNIST files missing in {MNIST_DIR}; they are part of the shared data")
    return MNIST_DIR


@pytest.fixture(scope="session")
def digits():
    """The digits splits (seed 0), loaded once per session."""
    from prunebench.harness.datasets import load_dataset

    return load_dataset("digits")


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An untrained test_convnet checkpoint for digits and a profile with tiny timing (shared by
    the search and reliability tests)."""
    from prunebench.harness.models import create_model
    from prunebench.harness.train import save_checkpoint

    d = tmp_path_factory.mktemp("assets")
    ckpt = d / "convnet.pt"
    save_checkpoint(create_model("test_convnet", 10, 1), ckpt,
                    {"model": "test_convnet", "num_classes": 10, "in_channels": 1})
    root = Path(__file__).resolve().parents[1]
    text = (root / "hw_profiles" / "cpu-1t.toml").read_text()
    for key, value in (("name", '"tiny-1t"'), ("warmup_iters", "1"), ("min_samples", "3"),
                       ("min_time_s", "0.01"), ("max_time_s", "0.05"), ("target_rel_ci", "0.2")):
        text = "\n".join(f"{key} = {value}" if line.split("=")[0].strip() == key else line
                         for line in text.splitlines())
    (d / "tiny-1t.toml").write_text(text + "\n")
    return {"checkpoint": str(ckpt), "profile": str(d / "tiny-1t.toml"), "dir": str(d)}
