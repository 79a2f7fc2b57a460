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
