"""Where training runs: --train-device, AMP, channels_last, workers, determinism; recorded."""

from __future__ import annotations

import pytest
import torch

from prunebench.harness import devices
from prunebench.harness.datasets import DatasetSplits
from prunebench.harness.devices import TrainRuntime, parse_device, resolve_runtime
from prunebench.harness.errors import PrunebenchError
from prunebench.harness.models import create_model
from prunebench.harness.train import DEFAULT_RECIPE, get_base_model, load_checkpoint, train_model
from prunebench.search.cli import main

TINY = DEFAULT_RECIPE.with_(epochs=1)


@pytest.fixture()
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CPU-only machine, also where the tests run on one with a GPU."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture(scope="module")
def small(digits: DatasetSplits) -> DatasetSplits:
    from dataclasses import replace

    return replace(digits, train=digits.train.subset(range(256)),
                   val=digits.val.subset(range(64)))


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("test_convnet", 10, 1)


def test_device_names_resolve(no_cuda: None) -> None:
    assert parse_device("auto") == "cpu" and parse_device("cpu") == "cpu"
    assert parse_device(" CPU ") == "cpu"
    for bad in ("gpu", "cpu:0", "cuda:x", ""):
        with pytest.raises(PrunebenchError, match="is not a device; use auto, cpu, cuda"):
            parse_device(bad)


def test_cuda_on_a_cpu_only_machine_is_refused(no_cuda: None) -> None:
    for text in ("cuda", "cuda:0", "cuda:1"):
        with pytest.raises(PrunebenchError, match=f"--train-device {text}: this machine has no "
                           "CUDA device"):
            parse_device(text)


def test_auto_picks_cuda_and_a_missing_index_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert parse_device("auto") == "cuda:0" and parse_device("cuda") == "cuda:0"
    with pytest.raises(PrunebenchError, match="has 1 CUDA device.*use --train-device cuda:0"):
        parse_device("cuda:3")
    rt = resolve_runtime("cuda", amp="fp16")
    assert rt.is_cuda and rt.pin_memory and rt.amp == "fp16"  # pinned memory on CUDA


def test_runtime_values_are_checked(no_cuda: None) -> None:
    with pytest.raises(PrunebenchError, match="--amp fp16 needs a CUDA training device"):
        resolve_runtime("auto", amp="fp16")
    with pytest.raises(PrunebenchError, match="--amp 'fp8' is not a precision"):
        resolve_runtime("cpu", amp="fp8")
    with pytest.raises(PrunebenchError, match="--workers -1 must be a whole number >= 0"):
        resolve_runtime("cpu", workers=-1)
    rt = resolve_runtime("auto", amp="bf16", channels_last=True, workers=2, deterministic=True)
    assert rt == TrainRuntime(device="cpu", requested="auto", amp="bf16", channels_last=True,
                              workers=2, pin_memory=False, deterministic=True)
    assert rt.to_dict()["device_name"] == "cpu" and rt.to_dict()["requested"] == "auto"


def test_training_runs_where_the_runtime_says(small: DatasetSplits) -> None:
    """The loss hook sees the inputs and outputs the model trains on: on the runtime's device,
    in channels_last, under bf16 autocast; the model comes back on the CPU, contiguous."""
    rt = resolve_runtime("cpu", amp="bf16", channels_last=True, workers=1)
    seen: list[tuple[torch.device, bool, torch.dtype]] = []

    def hook(model, x, out, y):
        seen.append((x.device, x.is_contiguous(memory_format=torch.channels_last), out.dtype))
        return None

    model = train_model(_net(), small, TINY.with_(runtime=rt), loss_hook=hook, progress=False)
    assert seen and all(s == (torch.device("cpu"), True, torch.bfloat16) for s in seen)
    assert all(p.is_contiguous() and p.device.type == "cpu" for p in model.parameters())
    assert all(torch.isfinite(p).all() for p in model.parameters())
    fp32: list[torch.dtype] = []
    train_model(_net(), small, TINY, progress=False,
                loss_hook=lambda m, x, out, y: fp32.append(out.dtype))
    assert set(fp32) == {torch.float32}


def test_workers_and_determinism_give_the_same_network(small: DatasetSplits) -> None:
    plain = train_model(_net(), small, TINY, progress=False)
    rt = resolve_runtime("cpu", workers=1, deterministic=True)
    before = torch.are_deterministic_algorithms_enabled()
    other = train_model(_net(), small, TINY.with_(runtime=rt), progress=False)
    assert torch.are_deterministic_algorithms_enabled() == before  # restored after training
    for a, b in zip(plain.state_dict().values(), other.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_the_runtime_is_recorded_but_not_in_the_cache_key(small: DatasetSplits) -> None:
    rt = resolve_runtime("cpu", channels_last=True)
    _, path = get_base_model("test_convnet", "digits", small, TINY, progress=False)
    _, again = get_base_model("test_convnet", "digits", small, TINY.with_(runtime=rt),
                              progress=False)
    assert again == path  # the same recipe trained elsewhere is the same checkpoint
    assert TINY.with_(runtime=rt).key == TINY.key and "runtime" not in TINY.to_dict()
    _, meta = load_checkpoint(path)
    assert meta["train_runtime"]["device"] == "cpu" and meta["input_size"] == [1, 32, 32]


def test_determinism_context_restores_settings() -> None:
    with devices.determinism(TrainRuntime(deterministic=True)):
        assert torch.are_deterministic_algorithms_enabled()
    assert not torch.are_deterministic_algorithms_enabled()


@pytest.mark.parametrize(("argv", "message"), [
    (["--train-device", "cuda"], "--train-device cuda: this machine has no CUDA device"),
    (["--train-device", "tpu"], "--train-device 'tpu' is not a device"),
    (["--amp", "fp16"], "--amp fp16 needs a CUDA training device"),
])
@pytest.mark.parametrize("command", ["train", "finetune", "baseline", "search"])
def test_cuda_requests_exit_2_before_any_work(command: str, argv: list[str], message: str,
                                              no_cuda: None, capsys: pytest.CaptureFixture[str],
                                              tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from prunebench.harness import datasets

    def no_data(*args, **kwargs):
        raise AssertionError("data was loaded before the device was checked")

    monkeypatch.setattr(datasets, "load_dataset", no_data)
    base = {"train": ["--model", "test_convnet"],
            "finetune": ["--model", "test_convnet", "--dataset", "digits", "--method",
                         "antidote", "--targeted-dropout", "gamma=0.5,alpha=0.5"],
            "baseline": ["--model", "test_convnet", "--dataset", "digits", "--ratios", "0.5",
                         "--out", str(tmp_path / "b")],
            "search": ["--model", "test_convnet", "--dataset", "digits", "--trials", "1",
                       "--out", str(tmp_path / "s")]}[command]
    assert main([command, *base, "--quiet", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("prunebench: error: ") and message in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists() and not (tmp_path / "s").exists()


def test_worker_takes_the_runtime_options(no_cuda: None, capsys: pytest.CaptureFixture[str]
                                          ) -> None:
    assert main(["worker", "--storage", "sqlite:///nowhere.db", "--study", "s",
                 "--train-device", "cuda"]) == 2
    assert "--train-device cuda: this machine has no CUDA device" in capsys.readouterr().err
