"""Engines: each lowering agrees with eager; like runs with like; what an engine cannot run is
refused with one line before any work."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from prunebench.harness.engines import ENGINES, get_engine, lower, record_of, usable_engines
from prunebench.harness.errors import PrunebenchError
from prunebench.harness.evaluate import Workload, evaluate, prepare
from prunebench.harness.models import create_model
from prunebench.harness.profiles import TimingSettings, load_profile
from prunebench.harness.pruning import PruneContext, PruningConfig, get_method

X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
FAST = TimingSettings(warmup_iters=1, min_samples=5, min_time_s=0.0, max_time_s=0.1,
                      target_rel_ci=0.5)
CPU_ENGINES = ("eager", "torchscript", "onnxruntime", "openvino")  # compile: the slow test


def _profile(engine: str, batch: int = 1):
    p = load_profile("cpu-1t")
    return replace(p, name=f"test-{engine}", engine=engine, timing=FAST, batch_sizes=(batch,),
                   energy=replace(p.energy, meter="modelled"))


def _trained_bn(model: nn.Module) -> nn.Module:
    """Non-trivial BN statistics, so folding is really tested."""
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return model.eval()


def _static(name: str) -> nn.Module:
    base = _trained_bn(create_model(name, 10, 3))
    return get_method("l1").apply(base, PruningConfig(method="l1", global_ratio=0.4),
                                  PruneContext(example_input=X[:1], progress=False)).eval()


@pytest.mark.parametrize("engine", CPU_ENGINES)
@pytest.mark.parametrize("model", ["test_resnet", "test_convnet", "mobilenetv2", "dense"])
def test_every_engine_agrees_with_eager(engine: str, model: str) -> None:
    """Residual (test_resnet), plain VGG-style chain (test_convnet), depthwise (mobilenetv2)
    after a static cut, and a dense network: outputs within the engine's recorded tolerance."""
    net = _trained_bn(create_model("test_resnet", 10, 3)) if model == "dense" else _static(model)
    lowered = lower(net, X[:1], _profile(engine))
    record = record_of(lowered)
    assert record.name == engine and record.version and record.max_abs_diff < 1e-4
    with torch.inference_mode():
        torch.testing.assert_close(lowered(X[1:]), net(X[1:]), atol=1e-4, rtol=1e-4)


def test_dynamic_networks_run_in_eager_and_are_refused_by_the_tracing_engines() -> None:
    base = _trained_bn(create_model("test_resnet", 10, 3))
    fast = get_method("antidote_fast").apply(
        base, PruningConfig(method="antidote_fast", global_keep=0.5, exec_mode="fast"),
        PruneContext(example_input=X[:1], progress=False))
    eager = lower(fast, X[:1], _profile("eager"))
    with torch.inference_mode():
        torch.testing.assert_close(eager(X[:1]), fast(X[:1]))
    for engine in ("torchscript", "compile"):  # onnxruntime/openvino: test_engines_dynamic
        with pytest.raises(PrunebenchError, match=f"engine '{engine}' cannot run this network"):
            lower(fast, X[:1], _profile(engine))


def test_a_dynamic_config_is_refused_before_anything_is_built() -> None:
    prepared = prepare(Workload("test_resnet", input_size=(3, 32, 32), num_classes=10))
    config = PruningConfig(method="antidote", global_keep=0.5, exec_mode="gathered")
    with pytest.raises(PrunebenchError, match="engine 'onnxruntime': of the input-dependent "
                                              "methods it runs only antidote_fast"):
        evaluate(prepared, config, _profile("onnxruntime"), progress=False)


def test_dense_and_pruned_of_one_measurement_run_in_one_engine() -> None:
    prepared = prepare(Workload("test_resnet", input_size=(3, 32, 32), num_classes=10))
    m = evaluate(prepared, PruningConfig(method="l1", global_ratio=0.5),
                 _profile("onnxruntime"), speedup_vs_dense=True, progress=False)
    assert m.engine == "onnxruntime" and m.engine_version.startswith("onnxruntime ")
    assert m.environment["engine"] == "onnxruntime" and m.speedup_vs_dense is not None
    assert m.environment["engine_max_abs_diff"] < 1e-4
    # the dense reference was lowered by the same engine (and only once: it is cached)
    dense = lower(prepared.base_model, prepared.example_input, _profile("onnxruntime"))
    assert record_of(dense).name == "onnxruntime"
    assert lower(prepared.base_model, prepared.example_input, _profile("onnxruntime")) is dense


def test_a_lowering_that_computes_something_else_is_an_error(monkeypatch) -> None:
    engine = get_engine("eager")
    wrong = nn.Sequential(nn.Conv2d(3, 2, 1))
    monkeypatch.setattr(type(engine), "_lower",
                        lambda self, model, example, profile: nn.Sequential(nn.Conv2d(3, 2, 1)))
    with pytest.raises(PrunebenchError, match="computes outputs .* away from eager"):
        engine.lower(wrong, X[:1], _profile("eager"))


def test_every_cpu_engine_is_usable_here() -> None:
    found = usable_engines(_profile("eager"))
    assert set(found) == set(ENGINES.list()) and all(v is None for v in found.values()), found


@pytest.mark.slow
def test_compile_agrees_with_eager() -> None:
    net = _static("test_convnet")
    lowered = lower(net, X[:1], _profile("compile"))
    assert record_of(lowered).name == "compile"
    with torch.inference_mode():
        torch.testing.assert_close(lowered(X[:1]), net(X[:1]), atol=1e-4, rtol=1e-4)
