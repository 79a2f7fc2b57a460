"""The CUDA paths on a real GPU. Skipped where torch sees none: CI machines have no GPU, so these
run on a GPU machine (`python -m pytest tests/harness/test_cuda.py`)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from prunebench.harness.evaluate import Workload, evaluate, prepare
from prunebench.harness.measure.flops import effective_macs
from prunebench.harness.models import create_model
from prunebench.harness.profiles import TimingSettings, load_profile
from prunebench.harness.pruning import DENSE, PruneContext, PruningConfig, get_method
from prunebench.search.cli import main

pytestmark = [pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
              pytest.mark.filterwarnings("ignore:no data set given")]

SHORT = TimingSettings(warmup_iters=10, min_samples=20, min_time_s=0.0, max_time_s=0.5,
                       target_rel_ci=0.5)


def _profile(name: str) -> object:
    return replace(load_profile(name), timing=SHORT)


def _workload(model: str = "test_resnet", shape: tuple[int, int, int] = (3, 32, 32)) -> object:
    return prepare(Workload(model, input_size=shape, num_classes=10))


@pytest.mark.parametrize("name", ["cuda-b1", "cuda-b32", "cuda-b1-fp16"])
def test_every_cuda_profile_measures_on_the_gpu(name: str) -> None:
    profile = _profile(name)
    m = evaluate(_workload(), DENSE, profile)
    env = m.environment
    assert m.device == "cuda:0" and m.dtype == profile.dtype
    assert m.batch_size == profile.batch_sizes[0]
    assert m.latency_p50_ms > 0 and m.latency_n >= 20
    assert m.peak_memory_method == "measured" and m.peak_memory_bytes > 0
    assert m.energy_method == "nvml" and env["energy_gross_j"] > 0 and m.idle_power_w > 0
    assert env["gpu_name"] and env["cuda_available"]


def test_nvml_reports_net_energy_for_a_gpu_bound_load() -> None:
    """ResNet-18 at 224x224, batch 32: the board draws well above idle, so a figure exists."""
    m = evaluate(_workload("tv_resnet18", (3, 224, 224)), DENSE, _profile("cuda-b32"))
    assert m.energy_method == "nvml"
    assert m.energy_mj_per_inference is not None and m.energy_mj_per_inference > 0
    watts = m.environment["energy_gross_j"] / m.environment["energy_window_s"]
    assert watts > m.idle_power_w


def test_fp16_profile_agrees_with_float32() -> None:
    prepared = _workload()
    x = prepared.example_input.cuda()
    model = prepared.base_model.cuda().eval()
    with torch.no_grad():
        ref = model(x)
        half = model.half().to(memory_format=torch.channels_last)(
            x.half().to(memory_format=torch.channels_last))
    torch.testing.assert_close(half.float(), ref, atol=2e-2, rtol=2e-2)


def _gated(method: str, keep: float, mode: str, options: dict | None = None) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model("test_resnet").eval()
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.running_mean.uniform_(-0.3, 0.3)
        bn.running_var.uniform_(0.5, 2.0)
    cfg = PruningConfig(method, global_keep=keep, exec_mode=mode, options=options or {})
    return get_method(method).apply(model, cfg, PruneContext(torch.randn(1, 3, 32, 32)))


X = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize(("method", "options", "modes"), [
    ("antidote", {}, ("masked", "gathered")),
    ("antidote", {"columns": 0.5}, ("masked", "gathered")),
    ("antidote", {"inputs": 1}, ("masked", "gathered")),
    ("antidote_fast", {}, ("masked", "gathered", "fast")),
    ("instance_sparsity", {"select": "all"}, ("masked", "gathered")),
    ("instance_sparsity", {"select": "all", "rule": "prefix", "round_to": 1},
     ("masked", "gathered", "fast")),
])
def test_dynamic_modes_on_cuda_match_cpu(method: str, options: dict, modes: tuple) -> None:
    """Same outputs and the same per-input effective MACs on the GPU as on the CPU."""
    for mode in modes:
        net = _gated(method, 0.5, mode, options)
        with torch.no_grad():
            cpu_out = net(X)
        cpu_macs = effective_macs(net, [X]).per_input
        net = net.cuda()
        with torch.no_grad():
            gpu_out = net(X.cuda()).cpu()
        torch.testing.assert_close(gpu_out, cpu_out, atol=1e-3, rtol=1e-3)
        assert effective_macs(net, [X.cuda()]).per_input == pytest.approx(cpu_macs)


def test_static_and_dynamic_speedups_are_measured_on_cuda() -> None:
    prepared = _workload("resnet20")
    profile = _profile("cuda-b1")
    dense = evaluate(prepared, DENSE, profile)
    for cfg in (PruningConfig("l1", global_ratio=0.5),
                PruningConfig("antidote_fast", global_keep=0.5, exec_mode="fast")):
        m = evaluate(prepared, cfg, profile, speedup_vs_dense=True)
        assert m.device == "cuda:0" and m.speedup_vs_dense is not None
        assert m.speedup_vs_dense > 0 and m.macs < dense.macs


def test_cli_measures_and_checks_a_cuda_profile(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profiles", "check", "cuda-b1"]) == 0
    capsys.readouterr()
    assert main(["measure", "--model", "test_convnet", "--profile", "cuda-b1", "--json",
                 "--quiet"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["device"] == "cuda:0" and out["profile"] == "cuda-b1"
    assert out["energy_method"] == "nvml" and out["latency_p50_ms"] > 0
