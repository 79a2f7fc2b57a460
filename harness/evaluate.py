"""``evaluate(prepared, config, profile) -> Measurement``: the one entry the search calls.

A :class:`Workload` names a model and (optionally) a data set; :func:`prepare` loads the splits
and the dense base model once, and :func:`evaluate` prunes (or takes an already pruned network),
then measures accuracy, compute, memory, latency, energy and provenance under a hardware profile.
Without a data set only cost is measured (accuracy is ``None``) on seeded random inputs of
``input_size``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunebench.harness.datasets import DEFAULT_IMAGE_SIZE
from prunebench.harness.engines import check_dynamic_support
from prunebench.harness.engines import record_of as engine_record
from prunebench.harness.errors import PrunebenchError
from prunebench.harness.fingerprint import machine_fingerprint
from prunebench.harness.measure.energy import measure_energy, open_meter
from prunebench.harness.measure.environment import collect_environment
from prunebench.harness.measure.flops import count_macs, effective_macs
from prunebench.harness.measure.latency import (
    Settle,
    in_reference_frame,
    measure_latency,
    measure_speedup,
    place_input,
    place_model,
    ratio_settle,
    rebatch,
    timed_form,
)
from prunebench.harness.measure.memory import measure_memory
from prunebench.harness.measurement import Measurement
from prunebench.harness.models import MODELS, create_model, nominal_input_size
from prunebench.harness.profiles import HardwareProfile, check_usable, load_profile
from prunebench.harness.pruning import pipeline
from prunebench.harness.pruning.base import PruneContext
from prunebench.harness.pruning.config import PruningConfig
from prunebench.harness.train import DEFAULT_RECIPE, Recipe

MAX_TIMING_EXAMPLES = 256  # real examples cycled through by latency/energy/effective MACs
# effective MACs are counted on the timing examples in batches of this size: every gate decides
# per input, so an input's count does not depend on its batch (the conformance suite's
# test_effective_macs_are_reported_per_input), and 256 batch-1 forwards of a gated network took
# 3.11 s against 0.46 s at 64 (medians, benchmarks/bench_eval_cost.py)
COUNT_BATCH = 64


@dataclass(frozen=True)
class Workload:
    """What to evaluate: a registered model, optionally a data set and a dense checkpoint.

    Without ``dataset`` only cost is measured; ``input_size`` ``(C, H, W)`` defaults to the
    model's nominal size and ``num_classes`` to 1000 for ImageNet models, else 10.
    ``image_size`` (pixels) is the side an ``imagefolder`` data set is loaded at; ``None``: the
    size the ``checkpoint`` records, else 32. The checkpoint's recorded geometry must match
    the data's (:func:`prepare` refuses it otherwise).
    """

    model: str
    dataset: str | None = None
    data_dir: str | Path | None = None
    checkpoint: str | Path | None = None
    input_size: tuple[int, int, int] | None = None
    num_classes: int | None = None
    seed: int = 0
    recipe: Recipe = DEFAULT_RECIPE
    image_size: int | None = None


def workload_image_size(workload: Workload) -> int:
    """The side (pixels) ``workload``'s data is loaded at: its ``image_size``, else the one its
    checkpoint was made for, else the data sets' default of 32."""
    if workload.image_size is not None:
        return workload.image_size
    if workload.checkpoint is not None:
        from prunebench.harness.train import checkpoint_meta

        size = (checkpoint_meta(workload.checkpoint) or {}).get("input_size")
        if size is not None:
            return int(size[-1])
    return DEFAULT_IMAGE_SIZE


@dataclass
class PreparedWorkload:
    """The loaded splits (``None`` cost-only) and dense base model (eval mode, CPU), reused."""

    workload: Workload
    splits: Any  # prunebench.harness.datasets.DatasetSplits | None
    base_model: nn.Module
    example_input: torch.Tensor  # (1, C, H, W), a real example when there is data
    input_size: tuple[int, int, int]
    num_classes: int
    _inputs: dict[tuple[int, str], list[torch.Tensor]] = field(default_factory=dict, repr=False)
    _dense_macs: int | None = field(default=None, repr=False)

    @property
    def dense_macs(self) -> int:
        """MACs of the dense base network per input (counted once: every trial compares)."""
        if self._dense_macs is None:
            self._dense_macs = count_macs(self.base_model, self.example_input).macs
        return self._dense_macs

    def eval_inputs(self, batch_size: int, *, split: str = "val") -> list[torch.Tensor]:
        """Batches of real examples from ``split`` (seeded random inputs when cost-only)."""
        key = (batch_size, split)
        if key not in self._inputs:
            self._inputs[key] = rebatch(self._examples(split), batch_size,
                                        max_batches=max(1, MAX_TIMING_EXAMPLES // batch_size))
        return self._inputs[key]

    def _examples(self, split: str) -> list[torch.Tensor]:
        if self.splits is None:
            gen = torch.Generator().manual_seed(self.workload.seed)
            return [torch.randn(MAX_TIMING_EXAMPLES, *self.input_size, generator=gen)]
        from prunebench.harness.datasets import make_loader

        out, n = [], 0
        for x, _ in make_loader(self.splits.split(split), batch_size=64, shuffle=False):
            out.append(x)
            n += int(x.shape[0])
            if n >= MAX_TIMING_EXAMPLES:
                break
        if not out:
            raise PrunebenchError(f"split {split!r} of {self.splits.name!r} is empty; use "
                                  "another split")
        return out


def _default_classes(model: str) -> int:
    return 1000 if MODELS.metadata(model).get("family") == "imagenet" else 10


def prepare(workload: Workload, *, progress: bool = True) -> PreparedWorkload:
    """Load the data set's splits and the dense base model (trained or cached) once."""
    MODELS.get(workload.model)  # unknown names list the known ones
    splits = None
    if workload.dataset is not None:
        from prunebench.harness.datasets import load_dataset

        splits = load_dataset(workload.dataset, workload.data_dir, seed=workload.seed,
                              image_size=workload_image_size(workload))
        input_size, num_classes = tuple(splits.input_size), splits.num_classes
        if workload.num_classes not in (None, num_classes):
            raise PrunebenchError(f"num_classes {workload.num_classes} does not match data set "
                                  f"{workload.dataset!r} ({num_classes} classes); drop it")
    else:
        input_size = tuple(workload.input_size or nominal_input_size(workload.model))
        num_classes = workload.num_classes or _default_classes(workload.model)
    if workload.checkpoint is not None:
        from prunebench.harness.train import load_checkpoint

        # the checkpoint must hold this model, made for this data (cost-only: the sizes given)
        given = splits is not None
        expect = {"model": workload.model,
                  "num_classes": num_classes if given or workload.num_classes else None,
                  "in_channels": input_size[0] if given or workload.input_size else None,
                  "input_size": list(input_size) if given or workload.input_size else None}
        base, _ = load_checkpoint(workload.checkpoint,
                                  create_model(workload.model, num_classes, input_size[0]),
                                  expect=expect)
    elif splits is not None:
        from prunebench.harness.train import get_base_model

        base, _ = get_base_model(workload.model, workload.dataset, splits, workload.recipe,
                                 data_dir=workload.data_dir, progress=progress)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(workload.seed)
            base = create_model(workload.model, num_classes, input_size[0])
    if splits is not None:
        example = splits.split("val")[0][0].unsqueeze(0)
    else:
        gen = torch.Generator().manual_seed(workload.seed)
        example = torch.randn(1, *input_size, generator=gen)
    return PreparedWorkload(workload, splits, base.eval(), example, input_size,  # type: ignore
                            num_classes)


def prune_context(prepared: PreparedWorkload, *, profile: HardwareProfile | None = None,
                  run_dir: Path | None = None, progress: bool = True) -> PruneContext:
    """What a method may use besides the model: the workload's data, recipe, seed, profile."""
    return PruneContext(example_input=prepared.example_input, splits=prepared.splits,
                        recipe=prepared.workload.recipe, profile=profile, run_dir=run_dir,
                        seed=prepared.workload.seed, progress=progress)


def build_pruned(prepared: PreparedWorkload, config: PruningConfig, *,
                 profile: HardwareProfile | None = None, run_dir: Path | None = None,
                 progress: bool = True,
                 epoch_callback: pipeline.EpochCallback | None = None) -> nn.Module:
    """The network ``config`` describes, built from the base model through
    :func:`harness.pruning.pipeline.build` (cut -> recovery -> gating), in eval mode."""
    ctx = prune_context(prepared, profile=profile, run_dir=run_dir, progress=progress)
    return pipeline.build(prepared.base_model, config, ctx, epoch_callback=epoch_callback)


def counting_batches(inputs: Sequence[torch.Tensor],
                     size: int | None = None) -> list[torch.Tensor]:
    """The examples of ``inputs`` (every one, once, in order) regrouped into batches of
    ``size`` (default :data:`COUNT_BATCH`; the last may be smaller) for counting effective MACs."""
    return list(torch.cat(list(inputs)).split(size or COUNT_BATCH))


class _InProfileDtype(nn.Module):
    """Feeds inputs in the profile's dtype/memory format and returns float32 logits."""

    def __init__(self, model: nn.Module, profile: HardwareProfile) -> None:
        super().__init__()
        self.model, self.profile = model, profile

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(place_input(x, self.profile)).float()


def _timing(placed: nn.Module, dense: nn.Module | None, inputs: Sequence[torch.Tensor],
            batches: Sequence[torch.Tensor], profile: HardwareProfile,
            settle: Settle | None = None, anchor_ms: float | None = None) -> dict[str, Any]:
    if dense is not None:
        ratio = ratio_settle(settle, anchor_ms) \
            if settle is not None and anchor_ms is not None else None
        sp = measure_speedup(dense, placed, inputs, profile, settle=ratio)
        lat, speedup, spread, ci = sp.latency_b, sp.ratio_median, sp.ratio_spread, sp.ratio_ci
    else:
        lat = measure_latency(placed, inputs, profile, settle=settle)
        speedup, spread, ci = None, None, None
    energy = measure_energy(placed, batches, profile, open_meter(profile))
    return {"lat": lat, "speedup": speedup, "spread": spread, "speedup_ci": ci, "energy": energy}


# A one-thread CPU timing whose process got less than this share of the core's time (CPU / wall
# seconds while sampling) was disturbed by other processes: it is timed again, then flagged.
DISTURBED_BELOW = 0.95


def disturbed(lat: Any, profile: HardwareProfile) -> bool:
    """Whether a latency of a one-thread CPU profile ran without the core to itself."""
    ratio = lat.cpu_wall_ratio
    return (not profile.is_cuda and profile.resolved_threads() == 1 and ratio is not None
            and ratio < DISTURBED_BELOW)


def evaluate(prepared: PreparedWorkload, config: PruningConfig,
             profile: HardwareProfile | str | Path, *, split: str = "val", force: bool = False,
             speedup_vs_dense: bool = False, pruned_model: nn.Module | None = None,
             timing_lock: contextlib.AbstractContextManager[Any] | None = None,
             progress: bool = True, latency_anchor_ms: float | None = None,
             settle: Settle | None = None) -> Measurement:
    """Measure one configuration under ``profile``; see :class:`Measurement` for the units.

    ``timing_lock`` is held around latency and energy timing only (multi-worker searches).
    ``speedup_vs_dense`` adds ``time(dense) / time(pruned)`` from interleaved rounds.
    ``latency_anchor_ms`` (the dense p50 measured once, e.g. when a study was created) reports
    latencies in that reference frame: p50 = anchor / speedup, the other statistics scaled alike
    and the p50's CI (``latency_ci_rel``) that of the speedup
    (:func:`harness.measure.latency.in_reference_frame`); implies ``speedup_vs_dense``. The
    direct p50 and the factor are kept in ``environment`` (``latency_raw_p50_ms``,
    ``latency_frame_factor``).
    ``settle`` (a p50 threshold in ms, in the reported frame) ends the timing once the p50's
    side of it is known (:class:`~prunebench.harness.measure.latency.Settle`; recorded as
    ``latency_settled`` in ``environment``); a direct-frame ``speedup_vs_dense`` measurement,
    whose p50 is not the ratio's, ignores it and times in full.
    """
    speedup_vs_dense = speedup_vs_dense or latency_anchor_ms is not None
    profile = load_profile(profile)
    forced = check_usable(profile, force)
    dynamic_stage = pipeline.stages(config).dynamic
    if dynamic_stage is not None:
        check_dynamic_support(profile, dynamic_stage.method)
    model = pruned_model if pruned_model is not None else build_pruned(
        prepared, config, profile=profile, progress=progress)
    model.eval()
    bs = profile.default_batch_size
    inputs = prepared.eval_inputs(bs, split=split if prepared.splits is not None else "val")
    compute = count_macs(model, prepared.example_input)
    eff = effective_macs(model, counting_batches(inputs))
    placed = place_model(model, profile)
    batches = [place_input(x, profile) for x in inputs]
    acc = None
    if prepared.splits is not None:
        from prunebench.harness.measure.accuracy import accuracy

        acc = accuracy(_InProfileDtype(placed, profile), prepared.splits.split(split),
                       device=profile.device)
    mem = measure_memory(placed, batches[0])
    dense = place_model(prepared.base_model, profile) if speedup_vs_dense else None
    timed = timed_form(placed, batches[0], profile)  # what the profile's engine runs
    run_by = engine_record(timed)
    with timing_lock if timing_lock is not None else contextlib.nullcontext():
        t = _timing(timed, dense, inputs, batches, profile, settle, latency_anchor_ms)
        retimed = disturbed(t["lat"], profile)
        if retimed:  # another process took the core: once more, then say so
            t = _timing(timed, dense, inputs, batches, profile, settle, latency_anchor_ms)
    lat, energy = t["lat"], t["energy"]
    is_disturbed = disturbed(lat, profile)
    above_ideal = None
    if t["speedup_ci"] is not None and compute.macs:
        ideal = prepared.dense_macs / (eff.mean if eff.dynamic else compute.macs)
        # faster than its MACs allow, beyond the speedup's own CI: the dense side was slowed
        above_ideal = bool(t["speedup_ci"][0] > ideal)
    frame: dict[str, Any] = {}
    if latency_anchor_ms is not None:
        raw = lat.p50_ms
        lat, factor = in_reference_frame(lat, latency_anchor_ms, t["speedup"], t["speedup_ci"])
        frame = {"latency_frame": "dense-anchored", "latency_anchor_ms": latency_anchor_ms,
                 "latency_raw_p50_ms": raw, "latency_frame_factor": factor}
    macs = round(eff.mean) if eff.dynamic else compute.macs
    env = collect_environment(profile, model, forced=forced)
    env.update(latency_converged=lat.converged, latency_settled=lat.settled,
               latency_ci_low_ms=lat.ci_low_ms,
               latency_ci_high_ms=lat.ci_high_ms, energy_notes=list(energy.notes),
               energy_window_s=energy.window_s, energy_inferences=energy.inferences,
               energy_gross_j=energy.joules_gross,
               dynamic=eff.dynamic, macs_static_count=compute.macs, **frame,
               timing_cpu_wall_ratio=lat.cpu_wall_ratio, timing_retimed=retimed,
               speedup_above_mac_ideal=above_ideal,
               **(run_by.to_dict() if run_by is not None else {}))
    if energy.method == "modelled":
        env["energy_model_source"] = profile.energy.source
    return Measurement(
        model=prepared.workload.model, dataset=prepared.workload.dataset, method=config.method,
        config=config.to_dict(), config_key=config.key, profile=profile.name,
        fingerprint=machine_fingerprint().short(), device=profile.device, dtype=profile.dtype,
        batch_size=bs, threads=profile.resolved_threads(), torch_version=torch.__version__,
        forced=forced, engine=profile.engine,
        timing_disturbed=is_disturbed or bool(above_ideal),
        timing_cpu_wall_ratio=lat.cpu_wall_ratio,
        engine_version=run_by.version if run_by is not None else None,
        accuracy_top1=acc.top1 if acc else None, accuracy_top5=acc.top5 if acc else None,
        accuracy_split=split if acc else None, accuracy_n=acc.n if acc else None,
        latency_p50_ms=lat.p50_ms, latency_p90_ms=lat.p90_ms, latency_p99_ms=lat.p99_ms,
        latency_mean_ms=lat.mean_ms, latency_n=lat.n, latency_ci_rel=lat.ci_rel,
        speedup_vs_dense=t["speedup"], speedup_spread=t["spread"],
        energy_mj_per_inference=energy.mj_per_inference, energy_method=energy.method,
        idle_power_w=energy.idle_power_w,
        macs=macs, flops=2 * macs if eff.dynamic else compute.flops,
        effective_macs_p50=eff.p50, effective_macs_p90=eff.p90,
        params=mem.params, model_size_bytes=mem.model_size_bytes,
        peak_memory_bytes=mem.peak_activation_bytes, peak_memory_method=mem.peak_method,
        environment=env, latency_samples_ms=lat.samples_ms)
