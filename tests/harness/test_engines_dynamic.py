"""Dynamic networks in the deployment runtimes: ``antidote_fast`` exported with its per-input
width choice as ``If`` branches runs in ONNX Runtime and OpenVINO with eager's widths; what they
cannot run is refused with one line."""

from __future__ import annotations

from dataclasses import replace

import onnx
import pytest
import torch

from prunebench.harness.engines import check_dynamic_support, get_engine, lower, record_of
from prunebench.harness.engines.onnxruntime import export_onnx
from prunebench.harness.errors import PrunebenchError
from prunebench.harness.evaluate import Workload, evaluate, prepare
from prunebench.harness.measure.flops import effective_macs
from prunebench.harness.models import create_model
from prunebench.harness.profiles import TimingSettings, load_profile
from prunebench.harness.pruning import PruneContext, PruningConfig, get_method
from prunebench.harness.pruning.dynamic.export import exportable, fixed_widths
from prunebench.harness.pruning.dynamic.fast_blocks import FastStage

FAST = TimingSettings(warmup_iters=1, min_samples=5, min_time_s=0.0, max_time_s=0.1,
                      target_rel_ci=0.5)
RUNTIMES = ("onnxruntime", "openvino")


def _profile(engine: str, batch: int = 1):
    p = load_profile("cpu-1t")
    return replace(p, name=f"test-{engine}", engine=engine, timing=FAST, batch_sizes=(batch,),
                   energy=replace(p.energy, meter="modelled"))


@pytest.fixture(scope="module")
def images(digits) -> torch.Tensor:
    return torch.stack([digits.test[i][0] for i in range(24)])


@pytest.fixture(scope="module", params=["block", "stage"])
def fast_net(request, digits, images) -> torch.nn.Module:
    """antidote_fast on resnet20, calibrated on digits train images (inputs choose widths)."""
    torch.manual_seed(0)
    base = create_model("resnet20", digits.num_classes, digits.input_size[0]).eval()
    cfg = PruningConfig("antidote_fast", global_keep=0.5, exec_mode="fast",
                        options={"decide": request.param, "round_to": 2})
    return get_method("antidote_fast").apply(
        base, cfg, PruneContext(images[:1], splits=digits, progress=False)).eval()


def _per_input_macs(net: torch.nn.Module, images: torch.Tensor) -> list[float]:
    return [float(effective_macs(net, [x[None]]).mean) for x in images]


def _ifs(graph) -> int:
    n = 0
    for node in graph.node:
        n += node.op_type == "If"
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                n += _ifs(attr.g)
    return n


def test_the_inputs_really_choose_different_widths(fast_net, images) -> None:
    # otherwise the agreement below would not test the control flow
    assert len(set(_per_input_macs(fast_net, images))) >= 2


@pytest.mark.parametrize("engine", RUNTIMES)
def test_runtimes_run_the_dynamic_network_with_eager_widths(fast_net, images, engine) -> None:
    lowered = lower(fast_net, images[:1], _profile(engine))
    assert record_of(lowered).name == engine and record_of(lowered).max_abs_diff < 1e-4
    with torch.inference_mode():
        for x in images:  # every input, one by one: a different width would differ by far more
            torch.testing.assert_close(lowered(x[None]), fast_net(x[None]), atol=1e-4,
                                       rtol=1e-4)


def test_the_scripted_form_equals_eager_input_by_input(fast_net, images) -> None:
    form = exportable(fast_net, images[:1])
    with torch.inference_mode():
        for x in images:
            torch.testing.assert_close(form(x[None]), fast_net(x[None]), atol=1e-5, rtol=1e-5)


def test_one_branch_tree_per_decision_and_weights_live_in_their_branches(fast_net,
                                                                         images) -> None:
    proto = onnx.load_from_string(export_onnx(fast_net, images[:1]))
    net = fast_net.model
    if fast_net.prunebench_dynamic["decide"] == "stage":
        parts = [m for m in net.modules() if isinstance(m, FastStage)]
        distinct = [len({tuple(b.widths[lv] for b in s) for lv in range(s.levels)})
                    for s in parts]
        assert len(parts) == 3
        for stage in parts:  # one level sets every block; widths never shrink as it rises
            assert {len(b.widths) for b in stage} == {stage.levels}
            assert all(b.widths == sorted(b.widths) for b in stage)
    else:
        distinct = [len(w) for w in fast_net.prunebench_dynamic["widths"].values()]
    assert _ifs(proto.graph) == sum(d - 1 for d in distinct) > 0
    # no weight that only a branch reads is left in the outer graph (ONNX Runtime would re-pack
    # it every call)
    direct = {i for node in proto.graph.node for i in node.input}
    assert all(init.name in direct for init in proto.graph.initializer)
    # nor read through an exporter alias (Identity of a weight), a computed value to ONNX Runtime
    inits = {i.name for i in proto.graph.initializer}
    assert not [n for n in proto.graph.node if n.op_type == "Identity" and n.input[0] in inits]


def test_a_measurement_in_onnxruntime_times_dynamic_and_dense_in_that_engine(digits) -> None:
    prepared = prepare(Workload("test_resnet", dataset="digits"), progress=False)
    config = PruningConfig(method="antidote_fast", global_keep=0.5, exec_mode="fast",
                           options={"decide": "stage"})
    m = evaluate(prepared, config, _profile("onnxruntime"), speedup_vs_dense=True,
                 progress=False)
    assert m.engine == "onnxruntime" and m.speedup_vs_dense is not None
    assert m.environment["engine_max_abs_diff"] < 1e-4
    assert m.effective_macs_p50 < prepared.dense_macs


def test_what_the_runtimes_cannot_run_is_refused_before_work() -> None:
    for engine in RUNTIMES:
        with pytest.raises(PrunebenchError, match="runs only antidote_fast"):
            check_dynamic_support(_profile(engine), "antidote")
        with pytest.raises(PrunebenchError, match="batch 1 only"):
            check_dynamic_support(_profile(engine, batch=8), "antidote_fast")
    for engine in ("torchscript", "compile"):
        with pytest.raises(PrunebenchError, match="cannot run input-dependent networks"):
            check_dynamic_support(_profile(engine), "antidote_fast")
    check_dynamic_support(_profile("eager", batch=8), "antidote")  # eager runs them all


def test_reference_modes_are_not_exported(digits, images) -> None:
    base = create_model("test_resnet", digits.num_classes, 1).eval()
    masked = get_method("antidote_fast").apply(
        base, PruningConfig("antidote_fast", global_keep=0.5, exec_mode="masked"),
        PruneContext(images[:1], splits=digits, progress=False))
    with pytest.raises(PrunebenchError, match="reference mode"):
        lower(masked, images[:1], _profile("onnxruntime"))
    fast = get_method("antidote_fast").apply(
        base, PruningConfig("antidote_fast", global_keep=0.5, exec_mode="fast"),
        PruneContext(images[:1], splits=digits, progress=False))
    with pytest.raises(PrunebenchError, match="batch 1 only"):
        get_engine("onnxruntime").lower(fast, images[:2], _profile("onnxruntime"))


def test_the_cli_refuses_a_dynamic_method_a_runtime_cannot_run(capsys) -> None:
    from prunebench.search.cli import main

    rc = main(["measure", "--model", "test_resnet", "--method", "antidote", "--keep", "0.5",
               "--profile", "cpu-1t-ort"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "antidote_fast" in err[0] and "cpu-1t" in err[0]


def test_fixed_widths_runs_what_the_input_chose_without_deciding(fast_net, images) -> None:
    for x in images[:6]:
        fixed = fixed_widths(fast_net, x[None])
        with torch.inference_mode():
            torch.testing.assert_close(fixed(x[None]), fast_net(x[None]), atol=1e-5, rtol=1e-5)
        assert not any(isinstance(m, torch.jit.ScriptModule) for m in fixed.modules())


@pytest.mark.parametrize("engine", ["eager", *RUNTIMES])
def test_each_engine_profiles_where_its_time_goes(fast_net, images, engine) -> None:
    record = get_engine(engine).op_profile(fast_net, images[:1], _profile(engine), runs=5)
    out = record.to_dict()
    assert record.runs >= 5 and out["total_ms"] > 0 and out["ms_per_run"]
    conv = {"eager": "aten::", "onnxruntime": "Conv", "openvino": "Convolution"}[engine]
    assert any(k.startswith(conv) for k in record.ms_per_run)
    if engine == "onnxruntime":  # its If nodes include their branches: apart, not summed
        assert "If" not in record.ms_per_run
