"""Training on a real GPU (``--train-device cuda``). Skipped where torch sees no CUDA device:
the CI machines have none, so these run on a GPU machine
(`python -m pytest tests/harness/test_train_cuda.py`)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from prunebench.harness.datasets import DatasetSplits
from prunebench.harness.devices import resolve_runtime
from prunebench.harness.models import create_model
from prunebench.harness.train import DEFAULT_RECIPE, train_model
from prunebench.search.cli import main

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def small(digits: DatasetSplits) -> DatasetSplits:
    return replace(digits, train=digits.train.subset(range(256)),
                   val=digits.val.subset(range(64)))


@pytest.mark.parametrize("amp", [None, "bf16", "fp16"])
def test_training_runs_on_the_gpu_and_returns_to_the_cpu(small: DatasetSplits,
                                                         amp: str | None) -> None:
    rt = resolve_runtime("cuda", amp=amp, channels_last=True, workers=2)
    seen: list[tuple[str, torch.dtype]] = []
    callback_devices: list[str] = []
    model = train_model(
        create_model("test_resnet", 10, 1), small,
        DEFAULT_RECIPE.with_(epochs=2, crop_padding=4, hflip=True, runtime=rt), progress=False,
        loss_hook=lambda m, x, out, y: seen.append((x.device.type, out.dtype)),
        epoch_callback=lambda e, m: callback_devices.append(next(m.parameters()).device.type))
    want = {None: torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    assert seen and set(seen) == {("cuda", want)} and callback_devices == ["cuda", "cuda"]
    assert all(p.device.type == "cpu" and p.is_contiguous() for p in model.parameters())
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_cli_records_the_gpu(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--model", "test_convnet", "--epochs", "1", "--train-device", "cuda",
                 "--json", "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["train_runtime"]["device"] == "cuda:0" and result["train_runtime"]["pin_memory"]
    meta = torch.load(result["checkpoint"], weights_only=True)["meta"]
    assert meta["train_runtime"]["device_name"] == torch.cuda.get_device_name(0)
