"""Realized speed of dynamic pruning on ResNet-56 (32x32), profile cpu-1t, batch 1 and 32.

For effective-MAC reductions of about 25/50/75%, each point compares (interleaved, same process,
``harness.measure.latency.measure_speedup``) a dynamic network with its dense reference and
reports next to it the ideal speedup (dense MACs / effective MACs) and the speedup of a static
network with the same MACs (an l1-norm cut of each block's internal channels with
``prunebench.harness.pruning.static.cut.cut_filters``).

Fairness: every network is timed through the profile's engine (``harness.engines``; on
``cpu-1t`` the eager engine, which folds every adjacent conv/BN pair of dense, static and dynamic
networks alike), so no side is credited with folding the other lacks; AntiDote's exact modes
wrap their consumer convs, whose BN then stays unfolded. The fast engine's blocks also call
``F.conv2d`` directly (no per-module Python calls), which alone makes the full-width network
faster than the module-based dense one; so ``fast`` points also report
``realized_speedup_same_engine`` and ``static_speedup_same_macs_same_engine``: the same
comparisons with the dense and the static network executed by the fast blocks (``antidote_fast``
at keep 1.0 of each), which isolate what the dynamic widths themselves save.
``distinct_widths_mean`` is the mean number of widths per gated block that the calibration chose
(1 means that block runs one fixed width). ``realized_speedup_same_engine_decisions_replayed``
(batch 1, a diagnostic, not a method) runs every input at the widths it chose without deciding
them again; its gap to ``realized_speedup_same_engine`` is the cost of the per-block decisions.
``engines`` (on ``cpu-1t``; ``--engines-only`` runs just this table): per CPU engine, all timed
in that engine, the dense p50 and, where the engine runs ``antidote_fast`` (eager, and ONNX
Runtime / OpenVINO through its exported ``If`` form), for each decision granularity
(``decide`` block / stage) the ~50% network's ``dynamic_fast_speedup_50`` over dense,
``dynamic_over_static_same_macs`` (against the static cut with the same effective MACs, both
channel-aligned to the engine's preference), ``control_flow_ms`` (exported engines: the network
against itself with each input's branch fixed: what deciding and branching cost), the engine
profiler's ``op_profile`` and the test top-1 without fine-tuning; the row's headline keys are
those of the faster granularity (``decide``).
Engines that cannot run it record the reason as ``not_run``.
``masked`` computes everything (it is the correctness reference) and is reported as such.
Column pruning (``antidote`` with ``columns``) is reported where it stands, even when it does
not pay; ``antidote_fast+rows`` (batch 1) is its structured variant: one contiguous band of
output rows per block and input (option ``rows``), executed as slices, at keep 1.0 / rows 0.5
and keep 0.7 / rows 0.7. ``instance_sparsity`` (batch 1, rule ``prefix``, ``select=all``: its
default selection gates half of the blocks, which caps the reduction near 25%) is timed in
``fast`` and in its ``masked`` reference at the keep closest to 25% effective-MAC reduction, as
``antidote``'s exact
rule: its conv1 features set each input's conv2 width, so only conv2 can be saved.

Network and inputs: ResNet-56 trained on digits at 1x32x32 (the ``DEFAULT_RECIPE`` base model
from the checkpoint cache; trained once, about 3 minutes on one thread). The gates are
calibrated on its train images and the networks are timed on its test images, so each input
chooses its own widths as it would in use (an untrained network on random images calibrates
most blocks to one fixed width, which hides the cost of the decisions). No fine-tuning for the
gates is done here: this benchmark is about speed; ``accuracy_dynamic.py`` measures accuracy.

Batch 1 uses the profile's timing (5 interleaved rounds); batch 32 uses 3 rounds of at most
4 s per network and reports ``fast`` at every point, ``gathered``/``masked`` at 50% only.
Usage: ``python benchmarks/bench_dynamic.py [--profile P] [--engines-only | --rows-only |
--instance-only]`` (a few minutes; the ``-only`` flags run just that table or those points).

``--model NAME --input-shape CxHxW`` (e.g. ``--model tv_resnet18 --input-shape 3x224x224``) is
a cost-only run on another network: random weights (its factory's initialisation), gates
calibrated on ``--calibration-samples`` seeded random-normal images, timed at batch 1 on
``--inputs`` such images, ``--rounds`` interleaved rounds. At the keep whose effective-MAC
reduction is closest to 50% it reports ``antidote_fast``'s ``fast`` speedup over the dense
network (BN folded), over the static cut with the same MACs (l1 cut of the same sites,
``_static``), and both again within the fast engine (``_engine``). Random weights and inputs
are not a trained network on its data: the widths inputs choose (``distinct_widths_mean``), and
so the decisions' cost, may differ from real use; accuracy is not measured.
Last line: one JSON object. ``--profile`` (default ``cpu-1t``) times on another profile, e.g.
``cuda-b1`` on a GPU machine: its device, dtype and timing settings apply, batch 32 included;
the replayed-decisions diagnostic reads inputs through NumPy and is left out on a GPU.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import warnings

import torch

from prunebench.harness.datasets import load_dataset
from prunebench.harness.errors import PrunebenchError
from prunebench.harness.measure.flops import count_macs, effective_macs
from prunebench.harness.measure.latency import long_rounds, measure_speedup
from prunebench.harness.models import create_model, nominal_input_size
from prunebench.harness.profiles import check_usable, load_profile
from prunebench.harness.pruning import PruneContext, PruningConfig, get_method
from prunebench.harness.pruning.dynamic.build import gated_layers
from prunebench.harness.pruning.dynamic.fast_blocks import FastBasicBlock
from prunebench.harness.pruning.dynamic.folding import fold_batchnorm
from prunebench.harness.pruning.static.cut import cut_filters
from prunebench.harness.train import DEFAULT_RECIPE, get_base_model

TARGETS = (0.25, 0.50, 0.75)
KEEP_GRID = [round(0.05 * i, 2) for i in range(1, 21)]


_BUILT: dict = {}
_CONTEXT: dict = {}  # the data set the gates are calibrated on


def _dynamic(model: torch.nn.Module, method: str, keep: float, mode: str, x: torch.Tensor,
             **options: object) -> torch.nn.Module:
    """The dynamic network (built once per method/keep/mode/options and reused)."""
    key = (method, keep, mode, tuple(sorted(options.items())))
    if key not in _BUILT:
        cfg = PruningConfig(method, global_keep=keep, exec_mode=mode, options=dict(options))
        _BUILT[key] = get_method(method).apply(model, cfg, PruneContext(
            x[:1], splits=_CONTEXT.get("splits"), progress=False))
    return _BUILT[key]


def _static(model: torch.nn.Module, keep: float, x: torch.Tensor,
            align: int = 1) -> torch.nn.Module:
    """l1-norm cut of each basic block's internal (conv1 output) channels to ``keep``, each
    kept width a multiple of ``align``."""
    idxs = {}
    for name in gated_layers(model):
        w = model.get_submodule(name).weight.detach()
        c = w.shape[0]
        k = min(c, max(align, round(keep * c / align) * align))
        idxs[name] = w.abs().sum((1, 2, 3)).argsort()[: c - k].tolist()
    return cut_filters(model, x[:1], idxs).eval()


def _engine(net: torch.nn.Module, x: torch.Tensor) -> torch.nn.Module:
    """``net`` executed by the fast engine at full width (BN folded, no decisions)."""
    cfg = PruningConfig("antidote_fast", global_keep=1.0, exec_mode="fast")
    return get_method("antidote_fast").apply(net, cfg, PruneContext(x[:1]))


class _Replay(torch.nn.Module):
    """Diagnostic: the fast network with each input's widths replayed, not decided.

    The widths every input chose in the real network are recorded once; each forward looks its
    input up (by a few pixels, a NumPy view) and runs every block at the recorded width with no
    decision. The gap to the real network is what the per-block decisions cost.
    """

    def __init__(self, fast: torch.nn.Module, inputs: list[torch.Tensor]) -> None:
        super().__init__()
        self.net = fast
        self.blocks = [m for m in fast.modules() if isinstance(m, FastBasicBlock)]
        self.table: dict[bytes, list[int]] = {}
        with torch.inference_mode():
            for x in inputs:
                self.table[self._key(x)] = [b.width_index(xb) for b, xb in zip(
                    self.blocks, _block_inputs(fast, x), strict=True)]
        self.current: list[int] = []
        for i, b in enumerate(self.blocks):
            b.forward = lambda x, b=b, i=i: b._run_width(x, self.current[i])

    @staticmethod
    def _key(x: torch.Tensor) -> bytes:
        return x.numpy()[0, 0, 12:20, 12:20].tobytes()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.current = self.table[self._key(x)]
        return self.net(x)


def _block_inputs(net: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    hooks = [m.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
             for m in net.modules() if isinstance(m, FastBasicBlock)]
    try:
        net(x)
    finally:
        for h in hooks:
            h.remove()
    return seen


def _reduction(net: torch.nn.Module, dense_macs: float, inputs: list[torch.Tensor]) -> float:
    return 1.0 - effective_macs(net, inputs).mean / dense_macs


def _closest(fn, target: float, grid: list[float]) -> tuple[float, float]:
    """The keep in ``grid`` whose reduction ``fn(keep)`` is closest to ``target``."""
    best = min((abs(fn(k) - target), k) for k in grid)
    return best[1], fn(best[1])


def _near(keep: float) -> list[float]:
    return [k for k in (round(keep + d, 3) for d in (-0.15, -0.1, -0.05, 0.0, 0.05, 0.1, 0.15))
            if 0 < k <= 1]


def _speed(net: torch.nn.Module, ref: torch.nn.Module, setting: tuple) -> float:
    """Interleaved speedup of ``net`` over ``ref``: p50(ref) / p50(net)."""
    inputs, profile, rounds, batch = setting
    # long rounds, as the README's figures were measured (the harness's default estimator uses
    # short blocks: benchmarks/bench_speedup.py)
    return measure_speedup(ref, net, inputs, profile, **long_rounds(profile.timing, rounds),
                           batch_size=batch).ratio_median


def main() -> None:
    """Run every point and print the table (stderr) and the JSON (stdout, last line)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu-1t", help="hardware profile (default cpu-1t)")
    parser.add_argument("--engines-only", action="store_true",
                        help="only the per-engine table at the ~50%% point (cpu-1t)")
    parser.add_argument("--rows-only", action="store_true",
                        help="only the row-band points (antidote_fast option rows, batch 1)")
    parser.add_argument("--instance-only", action="store_true",
                        help="only the instance_sparsity points (fast and masked, batch 1)")
    parser.add_argument("--model", default=None,
                        help="cost-only run on this model (random weights), e.g. tv_resnet18")
    parser.add_argument("--input-shape", default=None,
                        help="CxHxW of --model's inputs (default: its nominal size)")
    parser.add_argument("--rounds", type=int, default=5, help="--model: interleaved rounds")
    parser.add_argument("--inputs", type=int, default=8, help="--model: timed inputs")
    parser.add_argument("--calibration-samples", type=int, default=64,
                        help="--model: random images the gates are calibrated on")
    cli = parser.parse_args()
    profile_name = cli.profile
    try:
        base = load_profile(profile_name)
        check_usable(base)
    except PrunebenchError as exc:
        print(f"bench_dynamic: error: {exc}", file=sys.stderr)
        sys.exit(2)
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    if cli.model is not None:
        try:
            shape = _shape(cli.model, cli.input_shape)
            model = create_model(cli.model).eval()
        except PrunebenchError as exc:
            print(f"bench_dynamic: error: {exc}", file=sys.stderr)
            sys.exit(2)
        print(json.dumps(_cost_only(model, cli, shape, base)))
        return
    splits = load_dataset("digits")
    model, _ = get_base_model("resnet56", "digits", splits, DEFAULT_RECIPE)
    test = splits.split("test")
    images = torch.stack([test[i][0] for i in range(64)]).float()
    _CONTEXT["splits"] = splits
    dense_macs = float(count_macs(model, images[:1]).macs)
    calib_inputs = [images[:32]]
    dense_folded = fold_batchnorm(model)
    dense_engine = _engine(model, images)
    points = []
    cache: dict = {}
    if cli.engines_only:
        print(json.dumps({"engines": _engines(model, images, dense_macs, 5),
                          "inputs": "digits test images 1x32x32 (first 64)",
                          "model": "resnet56 trained on digits (DEFAULT_RECIPE)",
                          "calibration": "digits train images", "torch": torch.__version__}))
        return

    def fast_red(k: float) -> float:
        key = ("fast", k)
        if key not in cache:
            cache[key] = _reduction(_dynamic(model, "antidote_fast", k, "fast", images,
                                             calibration_samples=256),
                                    dense_macs, calib_inputs)
        return cache[key]

    def static_red(k: float) -> float:
        key = ("static", k)
        if key not in cache:
            cache[key] = 1.0 - count_macs(_static(model, k, images), images[:1]).macs / dense_macs
        return cache[key]

    if cli.rows_only or cli.instance_only:
        one = dataclasses.replace(base, batch_sizes=(1,))
        setting = ([images[i:i + 1] for i in range(8)], one, 5, 1)
        points = (_row_points(model, images, dense_macs, calib_inputs, setting, static_red,
                              dense_folded) if cli.rows_only else
                  _instance_points(model, images, dense_macs, calib_inputs, cache, setting,
                                   static_red, dense_folded))
        print(json.dumps({"points": points, "profile": base.name, "torch": torch.__version__}))
        return
    for batch in (1, 32):
        timing = base.timing if batch == 1 else dataclasses.replace(
            base.timing, warmup_iters=2, min_samples=3, min_time_s=0.0, max_time_s=4.0)
        profile = dataclasses.replace(base, timing=timing, batch_sizes=(batch,))
        inputs = [images[i:i + batch] for i in range(0, 64 if batch > 1 else 8, batch)]
        setting = (inputs, profile, 5 if batch == 1 else 3, batch)

        for target in TARGETS:
            keep, red = _closest(fast_red, target, _near(1.0 - target))
            s_keep, _ = _closest(static_red, red, _near(1.0 - red))
            static_cut = _static(model, s_keep, images)
            static_speed = _speed(fold_batchnorm(static_cut), dense_folded, setting)
            modes = ("fast", "gathered", "masked") if batch == 1 or target == 0.5 else ("fast",)
            for mode in modes:
                net = _dynamic(model, "antidote_fast", keep, mode, images,
                               calibration_samples=256)
                realized = _speed(net, dense_folded, setting)
                extra: dict = {}
                if mode == "fast":
                    widths = net.prunebench_dynamic["widths"].values()
                    extra = {
                        "realized_speedup_same_engine": round(
                            _speed(net, dense_engine, setting), 3),
                        "static_speedup_same_macs_same_engine": round(
                            _speed(_engine(static_cut, images), dense_engine, setting), 3),
                        **({"realized_speedup_same_engine_decisions_replayed": round(_speed(
                            _Replay(copy.deepcopy(net), inputs), dense_engine, setting), 3)}
                           if batch == 1 and not base.is_cuda else {}),
                        "distinct_widths_mean": round(
                            sum(len(w) for w in widths) / len(widths), 2)}
                points.append(_report(_point("antidote_fast", mode, batch, red, realized,
                                             static_speed, keep=keep,
                                             reference=REFERENCE,
                                             **extra)))
        exact = [({}, 0.25)] + ([({"columns": 0.5}, 0.375)] if batch == 1 else [])
        for options, target in exact:
            keep, red = _closest(lambda k, o=options: _exact_red(
                model, k, o, images, dense_macs, calib_inputs, cache), target, KEEP_GRID)
            s_keep, _ = _closest(static_red, red, _near(1.0 - red))
            static_speed = _speed(_static(model, s_keep, images), model, setting)
            for mode in ("gathered", "masked"):
                net = _dynamic(model, "antidote", keep, mode, images, **options)
                points.append(_report(_point("antidote" + ("+columns" if options else ""), mode,
                                             batch, red, _speed(net, model, setting),
                                             static_speed, keep=keep,
                                             reference=REFERENCE)))
        if batch == 1:
            points += _instance_points(model, images, dense_macs, calib_inputs, cache, setting,
                                       static_red, dense_folded)
        if batch == 1:
            points += _row_points(model, images, dense_macs, calib_inputs, setting, static_red,
                                  dense_folded)
    engines = _engines(model, images, dense_macs, 5) if profile_name == "cpu-1t" else None
    print(json.dumps({"points": points, "engines": engines,
                      "inputs": "digits test images 1x32x32 (first 64)",
                      "model": "resnet56 trained on digits (DEFAULT_RECIPE)",
                      "calibration": "digits train images", "profile": base.name,
                      # the profile's threads, as every point was timed with (measure_speedup
                      # applies them); torch's own count outside the profile is the machine's
                      "threads": base.resolved_threads()}))


def _row_points(model: torch.nn.Module, images: torch.Tensor, dense_macs: float,
                calib_inputs: list, setting: tuple, static_red, dense_folded) -> list[dict]:
    """Structured spatial pruning (``antidote_fast`` option ``rows``: one band of output rows
    per block and input, executed as slices) at batch 1, against dense and the static cut with
    the same MACs."""
    points = []
    for keep, rows in ((1.0, 0.5), (0.7, 0.7)):
        net = _dynamic(model, "antidote_fast", keep, "fast", images, calibration_samples=256,
                       rows=rows)
        red = _reduction(net, dense_macs, calib_inputs)
        s_keep, _ = _closest(static_red, red, _near(1.0 - red))
        static_speed = _speed(fold_batchnorm(_static(model, s_keep, images)), dense_folded,
                              setting)
        points.append(_report(_point("antidote_fast+rows", "fast", 1, red,
                                     _speed(net, dense_folded, setting), static_speed,
                                     keep=keep, rows=rows, reference=REFERENCE)))
    return points


def _exact_red(model: torch.nn.Module, keep: float, options: dict, images: torch.Tensor,
               dense_macs: float, calib_inputs: list, cache: dict) -> float:
    key = ("exact", keep, tuple(sorted(options.items())))
    if key not in cache:
        cache[key] = _reduction(_dynamic(model, "antidote", keep, "masked", images, **options),
                                dense_macs, calib_inputs)
    return cache[key]


def _instance_points(model: torch.nn.Module, images: torch.Tensor, dense_macs: float,
                     calib_inputs: list, cache: dict, setting: tuple, static_red,
                     dense_folded: torch.nn.Module) -> list[dict]:
    """``instance_sparsity`` (rule prefix) in ``fast`` and ``masked`` near 25% reduction."""
    def red_of(k: float) -> float:
        key = ("instance", k)
        if key not in cache:
            cache[key] = _reduction(_dynamic(model, "instance_sparsity", k, "fast", images,
                                             rule="prefix", select="all"),
                                    dense_macs, calib_inputs)
        return cache[key]

    keep, red = _closest(red_of, 0.25, KEEP_GRID)
    s_keep, _ = _closest(static_red, red, _near(1.0 - red))
    static_speed = _speed(fold_batchnorm(_static(model, s_keep, images)), dense_folded, setting)
    out = []
    for mode in ("fast", "masked"):
        net = _dynamic(model, "instance_sparsity", keep, mode, images, rule="prefix",
                       select="all")
        out.append(_report(_point("instance_sparsity", mode, 1, red,
                                  _speed(net, dense_folded, setting), static_speed, keep=keep,
                                  reference=REFERENCE)))
    return out


REFERENCE = "dense, profile engine (BN folded)"
ENGINE_PROFILES = {"eager": "cpu-1t", "torchscript": "cpu-1t-frozen",
                   "compile": "cpu-1t-compile", "onnxruntime": "cpu-1t-ort",
                   "openvino": "cpu-1t-openvino"}
DECIDE = ("block", "stage")


def _engines(model: torch.nn.Module, images: torch.Tensor, dense_macs: float,
             rounds: int) -> dict:
    """Per CPU engine, everything timed in that engine (interleaved, batch 1, one thread):
    the dense p50; for each decision granularity (``decide``: block, stage) the ~50% fast
    network's speedup over dense and its ratio to the static cut with the same effective MACs
    (both with the engine's preferred channel alignment); the control flow's own cost (the
    dynamic network against the same network with each input's branch fixed, on that input);
    and where the time goes, from the engine's own profiler. Engines that cannot run the
    dynamic network record why (``not_run``)."""
    from prunebench.harness.engines import get_engine
    from prunebench.harness.measure.accuracy import accuracy
    from prunebench.harness.measure.latency import place_model
    from prunebench.harness.pruning.dynamic.export import fixed_widths

    inputs = [images[i:i + 1] for i in range(8)]
    calib = [images[:32]]
    test = _CONTEXT["splits"].split("test")
    dense_top1 = round(accuracy(model, test).top1, 4)
    out: dict = {}
    for engine, name in ENGINE_PROFILES.items():
        profile = load_profile(name)
        eng = get_engine(engine)
        # multiples of 8 at most: ResNet-56's 16-channel stage cannot be gated at multiples of
        # 16, which caps the cut near 35% (results/reference/bench_dynamic_engines_align16.json)
        align = min(8, max(4, eng.preferred_alignment))
        rows: dict = {}
        row: dict = {"profile": name, "version": eng.version(), "align": align,
                     "dense_test_top1": dense_top1}
        reason = eng.dynamic_reason("antidote_fast", 1)
        for decide in DECIDE if reason is None else ():
            opts = {"calibration_samples": 256, "decide": decide, "round_to": align}

            def red(k: float, opts: dict = opts) -> float:
                return _reduction(_dynamic(model, "antidote_fast", k, "fast", images, **opts),
                                  dense_macs, calib)

            keep, reduction = _closest(red, 0.5, _near(0.5))
            fast = _dynamic(model, "antidote_fast", keep, "fast", images, **opts)
            s_keep, _ = _closest(lambda k, a=align: 1.0 - count_macs(_static(
                model, k, images, a), images[:1]).macs / dense_macs, reduction, _near(0.5))
            static = _static(model, s_keep, images, align)
            settings = long_rounds(profile.timing, rounds)
            over_dense = measure_speedup(model, fast, inputs, profile, **settings)
            over_static = measure_speedup(static, fast, inputs, profile, **settings)
            # what deciding and branching cost, where the fixed form is the same graph (in
            # eager it runs other Python than the fast blocks, so it is not comparable)
            flow = [measure_speedup(fixed_widths(fast, x), fast, [x], profile, **settings)
                    for x in inputs[:2]] if engine != "eager" else []
            rows[decide] = {
                "keep": keep, "macs_reduction": round(reduction, 3),
                "test_top1_no_finetune": round(accuracy(fast, test).top1, 4),
                "ideal_speedup": round(1.0 / (1.0 - reduction), 3),
                "dynamic_fast_speedup_50": round(over_dense.ratio_median, 3),
                "dynamic_over_static_same_macs": round(over_static.ratio_median, 3),
                "static_speedup_same_macs": round(
                    over_dense.ratio_median / over_static.ratio_median, 3),
                "static_macs_reduction": round(1.0 - count_macs(static, images[:1]).macs
                                               / dense_macs, 3),
                "dynamic_p50_ms": round(over_dense.latency_b.p50_ms, 4),
                "control_flow_ms": round(sorted(
                    f.latency_b.p50_ms - f.latency_a.p50_ms for f in flow)[len(flow) // 2], 4)
                if flow else None,
                "speedup_spread": round(over_dense.ratio_spread, 3),
                "op_profile": eng.op_profile(place_model(fast, profile), inputs[0],
                                             profile).to_dict()}
            row["dense_p50_ms"] = round(over_dense.latency_a.p50_ms, 4)
            print(f"engine {engine} decide={decide}: "
                  + " ".join(f"{k}={v}" for k, v in rows[decide].items() if k != "op_profile"),
                  file=sys.stderr, flush=True)
        if reason is None:
            best = max(rows, key=lambda d: rows[d]["dynamic_fast_speedup_50"])
            row.update({k: rows[best][k] for k in (
                "dynamic_fast_speedup_50", "dynamic_over_static_same_macs", "macs_reduction",
                "control_flow_ms")}, decide=best, by_decide=rows)
        else:
            from prunebench.harness.measure.latency import measure_latency

            row.update(dense_p50_ms=round(measure_latency(model, inputs, profile).p50_ms, 4),
                       dynamic_fast_speedup_50=None, dynamic_over_static_same_macs=None,
                       not_run=reason)
        row["dense_op_profile"] = eng.op_profile(place_model(model, profile), inputs[0],
                                                 profile).to_dict()
        print(f"engine {engine}: dense p50 {row['dense_p50_ms']} ms, dynamic "
              f"{row['dynamic_fast_speedup_50']}", file=sys.stderr, flush=True)
        out[engine] = row
    return out


def _shape(name: str, text: str | None) -> tuple[int, int, int]:
    if text is None:
        return nominal_input_size(name)
    try:
        c, h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise PrunebenchError(f"--input-shape {text!r} is not CxHxW; e.g. 3x224x224") from None
    return c, h, w


def _cost_only(model: torch.nn.Module, cli: argparse.Namespace, shape: tuple[int, int, int],
               base: object) -> dict:
    """``--model``: antidote_fast at ~50% effective-MAC reduction against dense and the static
    cut with the same MACs, batch 1, random weights and inputs (see the module doc)."""
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(max(cli.inputs, 1), *shape, generator=gen)
    dense_macs = float(count_macs(model, images[:1]).macs)
    opts = {"calibration_samples": cli.calibration_samples}
    cache: dict = {}

    def fast_red(k: float) -> float:
        if k not in cache:
            cache[k] = _reduction(_dynamic(model, "antidote_fast", k, "fast", images, **opts),
                                  dense_macs, [images])
        return cache[k]

    def static_red(k: float) -> float:
        if ("s", k) not in cache:
            cache[("s", k)] = 1.0 - count_macs(_static(model, k, images),
                                               images[:1]).macs / dense_macs
        return cache[("s", k)]

    keep, red = _closest(fast_red, 0.5, _near(0.5))
    s_keep, s_red = _closest(static_red, red, _near(1.0 - red))
    fast = _dynamic(model, "antidote_fast", keep, "fast", images, **opts)
    static_cut = _static(model, s_keep, images)
    profile = dataclasses.replace(base, batch_sizes=(1,))
    setting = ([images[i:i + 1] for i in range(len(images))], profile, cli.rounds, 1)
    dense_folded, static_folded = fold_batchnorm(model), fold_batchnorm(static_cut)
    widths = fast.prunebench_dynamic["widths"].values()
    point = _report({
        "method": "antidote_fast", "exec": "fast", "batch": 1, "keep": keep,
        "macs_reduction": round(red, 3), "static_keep": s_keep,
        "static_macs_reduction": round(s_red, 3), "ideal_speedup": round(1.0 / (1.0 - red), 3),
        "realized_speedup": round(_speed(fast, dense_folded, setting), 3),
        "static_speedup_same_macs": round(_speed(static_folded, dense_folded, setting), 3),
        "dynamic_over_static_same_macs": round(_speed(fast, static_folded, setting), 3),
        "realized_speedup_same_engine": round(_speed(fast, _engine(model, images), setting), 3),
        "dynamic_over_static_same_macs_same_engine": round(
            _speed(fast, _engine(static_cut, images), setting), 3),
        "distinct_widths_mean": round(sum(len(w) if isinstance(w[0], int) else len(w[0])
                                          for w in widths) / len(widths), 2)})
    return {"points": [point], "model": cli.model, "input_shape": list(shape),
            "weights": "random (the factory's initialisation)",
            "inputs": f"{len(images)} seeded random-normal images",
            "calibration": f"{cli.calibration_samples} random-normal images",
            "rounds": cli.rounds, "profile": base.name, "threads": base.resolved_threads(),
            "torch": torch.__version__}


def _report(point: dict) -> dict:
    """Print a point as soon as it is measured (stderr), so a long run shows progress."""
    print(" ".join(f"{k}={v}" for k, v in point.items()), file=sys.stderr, flush=True)
    return point


def _point(method: str, mode: str, batch: int, red: float, realized: float, static: float,
           **extra: object) -> dict:
    return {"method": method, "exec": mode, "batch": batch, "macs_reduction": round(red, 3),
            "ideal_speedup": round(1.0 / (1.0 - red), 3), "realized_speedup": round(realized, 3),
            "static_speedup_same_macs": round(static, 3), **extra}


if __name__ == "__main__":
    main()
