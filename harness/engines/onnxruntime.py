"""``onnxruntime``: export with ``torch.onnx`` and run an ``InferenceSession`` with the profile's
threads and every graph optimisation (its optimiser folds BN and fuses activations); the CPU
execution provider, and the CUDA one on a GPU when this onnxruntime build has it."""

from __future__ import annotations

import contextlib
import io
import json
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from prunebench.harness.engines.base import Engine, OpProfile, is_dynamic
from prunebench.harness.errors import PrunebenchError
from prunebench.harness.profiles import HardwareProfile


def export_onnx(model: nn.Module, example: torch.Tensor) -> bytes:
    """The ONNX model of ``model`` for inputs shaped like ``example`` (static shapes).

    Uses torch.onnx's TorchScript-based exporter, because a search exports every trial: in one
    check on ResNet-20 (``torch.onnx.export(model, (x,), dynamo=True)`` against ``dynamo=False``,
    timed once each on this 2-core VM while other jobs ran) it took 1.2 s where the dynamo
    exporter took 9.2 s. Every lowering is checked against eager (`Engine.lower`).

    A dynamic network is exported in its control-flow form
    (:func:`prunebench.harness.pruning.dynamic.export.exportable`: its decisions become ``If``
    nodes), traced around its scripted parts; then every weight used only inside branches is
    moved into the branches that use it (:func:`sink_initializers`).
    """
    import onnx

    dynamic = is_dynamic(model) is not None
    if dynamic:
        from prunebench.harness.pruning.dynamic.export import exportable

    buffer = io.BytesIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation notice
        net = model.eval()
        if dynamic:
            net = torch.jit.trace(exportable(model, example), example)
        torch.onnx.export(net, (example,), buffer, dynamo=False, opset_version=17,
                          do_constant_folding=True)
    if not dynamic:
        return buffer.getvalue()
    proto = onnx.load_from_string(buffer.getvalue())
    inline_identity_initializers(proto.graph)
    sink_initializers(proto.graph)
    return proto.SerializeToString()


def inline_identity_initializers(graph: object) -> int:
    """Replace each ``y = Identity(w)`` of an initializer ``w`` by an initializer ``y`` (a copy
    of ``w``); returns how many. The exporter writes such aliases where two branches hold equal
    weights (a block with the same width at two levels); a branch reading an alias reads a
    computed outer value, which ONNX Runtime cannot pre-pack (and :func:`sink_initializers`
    cannot move)."""
    inits = {i.name: i for i in graph.initializer}  # type: ignore[attr-defined]
    kept, done = [], 0
    for node in graph.node:  # type: ignore[attr-defined]
        if node.op_type == "Identity" and node.input[0] in inits:
            copy = graph.initializer.add()  # type: ignore[attr-defined]
            copy.CopyFrom(inits[node.input[0]])
            copy.name = node.output[0]
            done += 1
        else:
            kept.append(node)
    del graph.node[:]  # type: ignore[attr-defined]
    graph.node.extend(kept)  # type: ignore[attr-defined]
    return done


def _names_used(graph: object, into: set[str]) -> set[str]:
    """Every value name read by ``graph``'s nodes, their subgraphs' included."""
    for node in graph.node:  # type: ignore[attr-defined]
        into.update(node.input)
        for sub in _subgraphs(node):
            _names_used(sub, into)
    return into


def _subgraphs(node: object) -> list:
    import onnx

    out = []
    for attr in node.attribute:  # type: ignore[attr-defined]
        if attr.type == onnx.AttributeProto.GRAPH:
            out.append(attr.g)
        out.extend(attr.graphs)
    return out


def sink_initializers(graph: object) -> int:
    """Move each initializer that ``graph``'s own nodes do not read into the subgraphs (``If``
    branches) that read it, recursively; returns how many copies were placed.

    ONNX Runtime pre-packs a convolution's weights only when they are constants of the graph
    that runs the convolution; read from an outer scope they were re-packed on every call
    (``benchmarks/bench_dynamic.py --engines-only``, ResNet-56, stage decisions: 0.96 ms of
    control flow and 1.04x dense before, 0.11 ms and 1.45x after; docs/benchmarks.md)."""
    direct = {name for node in graph.node for name in node.input}  # type: ignore[attr-defined]
    subs = [sub for node in graph.node for sub in _subgraphs(node)]  # type: ignore[attr-defined]
    if not subs:
        return 0
    uses = [_names_used(sub, set()) for sub in subs]
    kept, placed = [], 0
    for init in graph.initializer:  # type: ignore[attr-defined]
        users = [sub for sub, used in zip(subs, uses, strict=True) if init.name in used]
        if init.name in direct or not users or any(
                o.name == init.name for o in graph.output):  # type: ignore[attr-defined]
            kept.append(init)
            continue
        for sub in users:
            sub.initializer.append(init)
            placed += 1
    del graph.initializer[:]  # type: ignore[attr-defined]
    graph.initializer.extend(kept)  # type: ignore[attr-defined]
    return placed + sum(sink_initializers(sub) for sub in subs)


def export_reason(engine: Engine, model: nn.Module, profile: HardwareProfile) -> str | None:
    """Why an engine that runs :func:`export_onnx`'s graph cannot run ``model`` on ``profile``
    (a dynamic network it cannot express, a dtype other than float32), or ``None``."""
    method = is_dynamic(model)
    if method is not None:
        from prunebench.harness.pruning.dynamic.export import exportable_reason

        reason = (engine.dynamic_reason(method, profile.default_batch_size)
                  or exportable_reason(model))
        if reason is not None:
            return reason
    if profile.dtype != "float32":
        return f"this engine runs float32 only (profile dtype {profile.dtype})"
    return None


def check_dynamic_batch(model: nn.Module, example: torch.Tensor) -> None:
    """An exported dynamic network decides once per call: refuse a batch above 1."""
    if is_dynamic(model) is not None and example.shape[0] != 1:
        raise PrunebenchError(
            f"an exported dynamic network decides once per call, so it runs at batch 1 only "
            f"(batch {example.shape[0]} asked); time it at batch 1 or use engine \"eager\"")


class _Session(nn.Module):
    def __init__(self, session: object, device: torch.device) -> None:
        super().__init__()
        self.session, self.device = session, device
        self.input_name = session.get_inputs()[0].name  # type: ignore[attr-defined]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feed = {self.input_name: np.ascontiguousarray(x.detach().cpu().numpy())}
        out = self.session.run(None, feed)[0]  # type: ignore[attr-defined]
        return torch.from_numpy(out).to(self.device)


class OnnxRuntimeEngine(Engine):
    """ONNX Runtime, all graph optimisations."""

    name = "onnxruntime"
    folding = "conv+bn (onnxruntime optimiser)"
    # its blocked-layout conv kernels: a ~50% ResNet-56 cut aligned to 16 realized 0.83 of ideal,
    # aligned to 8 0.61 (bench_static --engines-only, 2026-12-01, an AVX-512 VM)
    preferred_alignment = 16

    def version(self) -> str:
        import onnxruntime

        return f"onnxruntime {onnxruntime.__version__} (torch.onnx TorchScript exporter)"

    def _provider(self, profile: HardwareProfile) -> str:
        return "CUDAExecutionProvider" if profile.is_cuda else "CPUExecutionProvider"

    dynamic_methods = ("antidote_fast",)
    dynamic_max_batch = 1

    def supports(self, model: nn.Module, profile: HardwareProfile) -> str | None:
        import onnxruntime

        reason = export_reason(self, model, profile)
        if reason is not None:
            return reason
        if self._provider(profile) not in onnxruntime.get_available_providers():
            return (f"this onnxruntime has no {self._provider(profile)} (install "
                    "onnxruntime-gpu for CUDA)")
        return None

    def _session(self, model: nn.Module, example: torch.Tensor, profile: HardwareProfile,
                 profile_dir: str | None = None) -> object:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = profile.resolved_threads()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        if profile_dir is not None:
            options.enable_profiling = True
            options.profile_file_prefix = str(Path(profile_dir) / "ort")
        check_dynamic_batch(model, example)
        return ort.InferenceSession(export_onnx(model, example), options,
                                    providers=[self._provider(profile)])

    def _lower(self, model: nn.Module, example: torch.Tensor,
               profile: HardwareProfile) -> nn.Module:
        return _Session(self._session(model, example, profile), example.device).eval()

    def op_profile(self, model: nn.Module, example: torch.Tensor, profile: HardwareProfile,
                   runs: int = 50) -> OpProfile:
        """ONNX Runtime's own profiler (``enable_profiling``): node durations by operator type
        (nodes inside ``If`` branches included), per run, after ``runs // 5`` warm-up runs."""
        with tempfile.TemporaryDirectory(prefix="prunebench-ort-") as tmp:
            session = self._session(model, example, profile, profile_dir=tmp)
            runner = _Session(session, example.device)
            warm = max(1, runs // 5)
            with torch.inference_mode():
                for _ in range(warm + runs):
                    runner(example)
            events = json.loads(Path(session.end_profiling()).read_text())  # type: ignore
        by_op: dict[str, float] = {}
        node_runs = [e for e in events if e.get("cat") == "Node"
                     and e.get("name", "").endswith("_kernel_time")]
        for e in node_runs:
            op = e.get("args", {}).get("op_name", "?")
            by_op[op] = by_op.get(op, 0.0) + e["dur"] / 1e3
        scale = 1.0 / (warm + runs)  # the profiler records every run, warm-up included
        inclusive = {k: by_op.pop(k) * scale for k in ("If", "Loop") if k in by_op}
        return OpProfile("onnxruntime profiler (enable_profiling)",
                         {k: v * scale for k, v in by_op.items()}, warm + runs, inclusive)
