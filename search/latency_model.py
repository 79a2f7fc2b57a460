"""The study's cost models, fitted from its own measurements, and the budget projection.

A budgeted search should spend its trials inside the budget. Here the sampler proposes the
*shape* of an allocation (how much each layer is pruned relative to the others) and
:class:`BudgetProjection` scales it by one common factor, found by bisection as the warm start
finds the budget's edge on the uniform line, until the predicted cost meets the budget with its
margin (NetAdapt/HALP: a per-layer cost table that steers the allocation; the real measurement
stays the judge).

- :class:`CostTable` gives every configuration of a space its per-layer *effective MACs*, as a
  fraction of the dense network's MACs: the static cut scales a layer by its kept output and
  input channels (``keep_count``, so ``round_to`` counts), the dynamic gates scale each gated
  consumer by its keep (and ``columns``). For the static space this is exact counting, and
  for the ratio rule's gates; AntiDote's threshold rule keeps what the data's attentions put
  near their largest, so that share is read from calibration inputs (exact for one gate, an
  estimate once gates upstream change what a gate sees).
- :class:`CostModel` predicts one budgeted quantity from those features. MACs and parameters are
  *counted* (no fit). Latency and energy are *fitted* from the study's measurements as they
  arrive: ``y = a + c * sum(m) + e * act + sum(d_l * m_l)``, where ``act`` is the fraction of
  the dense network's layer outputs (elements written) that the static cut keeps
  (:data:`ACTIVATIONS`: the memory-bound work of the norms, activations and residual adds,
  which MACs do not count), with ridge on the per-layer corrections ``d`` (chosen by
  leave-one-out). With fewer than :data:`MIN_PER_LAYER_POINTS` measurements it is the line
  ``a + c * MACs + e * act`` (non-negative least squares; ``e`` is dropped while fewer than
  three points or no change in ``act`` can tell it from the rest), and with the dense network
  alone ``y_dense * MACs / MACs_dense``. On a uniform line MACs fall about quadratically with
  the kept fraction and activations linearly, so the warm start's trials alone tell ``c``
  from ``e``; a shape that keeps the residual streams wide and cuts the block-internal convs
  (what the sensitivity proposals ask for) can write more per MAC than the uniform line,
  which a MAC line fitted on uniform points under-predicts (``benchmarks/cost_model_fit.py``
  replays both fits on a search's own measurements).
- The models live in the study's user attrs (:data:`MODELS_ATTR`), so every worker of a
  distributed study projects with the same ones; each trial records what the model predicted
  (``predicted_<column>``) and its relative error against the measurement
  (``model_error_<column>``).
- :class:`ProjectingSampler` wraps the study's sampler: it draws the whole space in
  ``sample_relative`` (the base sampler's relative draws, the rest from its independent draws)
  and returns the projected per-layer values as the trial's parameters, so a trial's stored
  parameters are the configuration it evaluated.
- **Where in the budget** a proposal lands (its :data:`LEVEL`) is aimed, not drawn, once the
  study has measured feasible points: :func:`front_gaps` reads the in-budget front of
  (measured cost, validation top-1) and the projection aims at a random point of the middle
  half of the gap with the largest area (cost span x accuracy rise; the last gap runs from the
  most accurate feasible point to the budget, up to the most accurate point measured), the
  rectangle a new point there could fill most of. A search's trials so go where its front is
  thinnest, as hypervolume-improvement samplers aim theirs, instead of clustering at the
  budget's edge (``bench_search`` run 18 at 0.7x: no sampler trial of the ratio rule below
  15.2M MACs, the uniform line's knee lying at 10.6-14.9M). The sampler still proposes every
  shape. A gap that earlier aims went into and left as it was (no new front point inside it:
  same two ends) counts its area times :data:`GAP_RETRY_DISCOUNT` per such aim, so a gap its
  bounding points make hard to fill is not aimed at again and again while others wait
  (``bench_search`` run 23, static 0.7x seed 1: the last six trials all went into one gap,
  between two warm-start points, and none entered the front).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
import torch
from optuna.distributions import BaseDistribution, FloatDistribution
from optuna.trial import FrozenTrial, TrialState
from torch import nn

from prunebench.harness.errors import PrunebenchError
from prunebench.harness.pruning import PruningConfig, pipeline
from prunebench.search.space import SearchSpace

MODELS_ATTR = "prunebench_cost_models"  # study user attr: budget key -> CostModel.to_dict()
LEVEL = "budget_level"  # where between its cheapest point and the budget a proposal is
# projected (0: its cheapest point, 1: the budget less its margin): aimed into the in-budget
# front's largest gap once the study has one, drawn by the sampler before that
LEVEL_STEP = 0.01
LEVEL_DISTRIBUTION = FloatDistribution(0.0, 1.0, step=LEVEL_STEP)
LEVEL_MIN = 0.3  # the lowest level the sensitivity proposals are scheduled at
GAP_INSET = 0.25  # a gap aim lies in the middle half of its gap's cost span
# a gap's area is counted times this for every earlier aim into it that left it as it was
GAP_RETRY_DISCOUNT = 0.5
ACCURACY = "accuracy_top1"  # the measured column the front's gaps are read on
# trial user attr: a draw made for the trial elsewhere (search.sensitivity's proposals), which
# the ProjectingSampler projects instead of its base sampler's
PROPOSAL_ATTR = "prunebench_proposal"
# trial user attr: the front gap its level was aimed into ({key, low, high, cost})
GAP_AIM_ATTR = "prunebench_gap_aim"
MIN_PER_LAYER_POINTS = 8  # measurements before per-layer corrections are fitted
# feature key: the fraction of the dense network's layer outputs the static cut keeps (no layer
# or gate name starts with "/")
ACTIVATIONS = "/activations"
RIDGE_CHOICES = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
# Budgets: CLI key -> (row column, unit shown in messages); search.objective re-exports it
BUDGETS: dict[str, tuple[str, str]] = {
    "latency_ms": ("latency_p50_ms", "ms"),
    "energy_mj": ("energy_mj_per_inference", "mJ"),
    "macs": ("macs", "MACs"),
    "params": ("params", "parameters"),
}
COUNTED = ("macs", "params")  # budgets CostTable counts; the rest are fitted from measurements
# budget key -> (Measurement column, how it is predicted)
COSTS: dict[str, tuple[str, str]] = {
    key: (column, "counted" if key in COUNTED else "fitted")
    for key, (column, _) in BUDGETS.items()}


# --------------------------------------------------------------------------- the cost table
@dataclass(frozen=True)
class _Layer:
    name: str
    macs: float  # dense MACs per input
    params: float  # dense weight parameters of the layer
    bias: float  # dense bias parameters (scaled by the kept output channels only)
    out_group: str | None = None
    in_group: str | None = None
    depthwise: bool = False
    gate: str | None = None  # the gated site whose keep scales this layer's input
    columns: bool = False  # an internal site's consumer: AntiDote's columns scale it too
    in_channels: int = 0  # dense input channels (a gated consumer's)
    in_map: int = 0  # dense input positions H x W (a gated consumer's: its gate reads them)
    out_map: int = 0  # output positions H x W (columns are a fraction of them)
    follow: bool = False  # a depthwise conv between a gate and its consumer (kept channels)
    outputs: float = 0.0  # dense output elements per input (C x H x W)


class CostTable:
    """Per-layer effective MACs and parameters of the configurations of one space.

    Built once per process from the dense network (``module_macs`` of one input, the coupled
    groups of the static cut, the gated sites with ``inputs``); :meth:`features` is a little
    arithmetic per layer, cheap enough for a bisection per trial. A gate's attention (one MAC
    per feature-map element read, per attention kind, as the gates record it) is its own
    feature ``<site>/attention``.
    """

    def __init__(self, space: SearchSpace, model: nn.Module, example_input: torch.Tensor,
                 calibration: torch.Tensor | None = None) -> None:
        from prunebench.harness.measure.flops import module_macs

        x = example_input[:1]
        macs = module_macs(model, x)
        groups = pipeline.layer_groups(model, x) if space.groups else []
        self.channels = {g.name: g.channels for g in groups}
        out_group = {m: g.name for g in groups for m in g.members}
        in_group = {c: g.name for g in groups for c in g.consumers}
        norm_group = {n: g.name for g in groups for n in g.norms}
        found = [s for s in (pipeline.gate_sites(model, inputs=True) if space.gated else [])
                 if s.name in space.gated]
        sites = {s.consumer: s for s in found}
        follow = {f: s for s in found for f in getattr(s, "follow", ())}
        shapes = _layer_shapes(model, x)
        layers = []
        norm_params: dict[str, float] = {}
        for name, m in model.named_modules():
            own = float(sum(p.numel() for p in m.parameters(recurse=False)))
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and name in norm_group:
                g = norm_group[name]
                norm_params[g] = norm_params.get(g, 0.0) + own
            if not isinstance(m, nn.Conv2d | nn.Linear):
                continue
            dw = isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels
            bias = float(m.bias.numel()) if m.bias is not None else 0.0
            site = sites.get(name) or follow.get(name)
            c_in, in_map, out_map, outputs = shapes.get(name, (0, 0, 0, 0))
            if name in follow:  # its gate's channels, read by the consumer after it
                c_in, in_map = follow[name].channels, 0
            layers.append(_Layer(name, float(macs.get(name, 0)), own - bias, bias,
                                 out_group.get(name), in_group.get(name), dw,
                                 site.name if site else None,
                                 bool(site and not site.is_input and name in sites), c_in,
                                 in_map, out_map, name in follow, float(outputs)))
        self.layers = tuple(layers)
        self.names = tuple(layer.name for layer in layers) + tuple(
            f"{layer.gate}/attention" for layer in layers if layer.gate and not layer.follow)
        self.dense_macs = float(sum(macs.values()))
        self.dense_outputs = float(sum(layer.outputs for layer in layers)) or 1.0
        self.dense_params = float(sum(p.numel() for p in model.parameters()))
        self.norm_params = norm_params
        # AntiDote's threshold rule keeps the channels the input's attention puts near its
        # largest: how many is the data's, read from ``calibration`` inputs when given
        self._relative = _RelativeAttention(model, found, calibration) \
            if calibration is not None and threshold_possible(space) else None
        self._table_macs = sum(layer.macs for layer in layers)
        self._table_params = sum(layer.params + layer.bias for layer in layers) + sum(
            norm_params.values())

    def _kept(self, config: PruningConfig) -> dict[str, float]:
        """Each group's kept fraction of channels under the config's static stage."""
        plan = pipeline.stages(config)
        if plan.static is None or plan.static.method == "dense":
            return {}
        round_to = int(plan.static.options.get("round_to", 1))
        out = {}
        for g, c in self.channels.items():
            ratio = float(plan.static.ratios.get(g, plan.static.global_ratio or 0.0))
            try:
                out[g] = pipeline.kept_channels(c, ratio, round_to, layer=g) / c
            except PrunebenchError:  # a cut that removes the whole group: the trial will fail
                out[g] = min(round_to, c) / c
        return out

    def features(self, config: PruningConfig) -> dict[str, float]:
        """Per-layer effective MACs of ``config`` as a fraction of the dense network's MACs
        (and each gate's attention MACs under ``<site>/attention``), and under
        :data:`ACTIVATIONS` the fraction of the layers' dense output elements that the static
        cut keeps (gates compute fewer MACs but write whole outputs). A threshold keep counts
        the calibration inputs' mean kept share where the table has them, else ``keep``."""
        kept = self._kept(config)
        dynamic = pipeline.stages(config).dynamic
        out = {}
        written = 0.0
        for layer in self.layers:
            frac = kept.get(layer.out_group, 1.0) if layer.out_group else 1.0
            written += layer.outputs * frac
            into = kept.get(layer.in_group, 1.0) if layer.in_group and not layer.depthwise \
                else 1.0
            if layer.gate is not None and dynamic is not None:
                gated, attention = _gated(layer, dynamic, frac if layer.follow else into,
                                          self._relative)
                if not layer.follow:
                    out[f"{layer.gate}/attention"] = attention / self.dense_macs
                    into = gated
                else:  # a depthwise conv: its MACs follow its (gated) channels alone
                    frac, into = gated, 1.0
            elif layer.gate is not None and not layer.follow:
                out[f"{layer.gate}/attention"] = 0.0
            out[layer.name] = layer.macs * frac * into / self.dense_macs
        out[ACTIVATIONS] = written / self.dense_outputs
        return out

    def macs(self, config: PruningConfig) -> float:
        """Counted (effective) MACs per input of ``config``."""
        return self.dense_macs - self._table_macs + self.dense_macs * mac_fraction(
            self.features(config))

    def params(self, config: PruningConfig) -> float:
        """Counted parameters of ``config`` (dynamic gates add none)."""
        kept = self._kept(config)
        total = self.dense_params - self._table_params
        for layer in self.layers:
            out = kept.get(layer.out_group, 1.0) if layer.out_group else 1.0
            into = kept.get(layer.in_group, 1.0) if layer.in_group and not layer.depthwise \
                else 1.0
            total += layer.params * out * into + layer.bias * out
        return total + sum(v * kept.get(g, 1.0) for g, v in self.norm_params.items())


def _gated(layer: _Layer, dynamic: PruningConfig, into: float,
           relative: _RelativeAttention | None = None) -> tuple[float, float]:
    """(the gated consumer's computed fraction of its dense input channels and output columns,
    its gate's attention MACs), as the gates count them: a ratio rule keeps
    ``ceil(keep x C)`` channels; a threshold rule the share of ``relative``'s calibration
    inputs (the count is the data's; without calibration ``keep x C``)."""
    keep = float(dynamic.keep.get(layer.gate, dynamic.global_keep or 1.0))
    options = dynamic.options
    columns = float(options.get("columns", 1.0)) if layer.columns else 1.0
    channels = max(1, round(layer.in_channels * into))
    if keep >= 1.0 and columns >= 1.0:
        return into, 0.0  # a pass-through gate: no attention, the consumer runs whole
    if options.get("rule", "ratio") == "ratio":
        k = min(channels, max(1, math.ceil(keep * channels - 1e-9)))
    else:
        share = keep if relative is None else relative.share(
            str(layer.gate), keep, float(options.get("p", 1.0)))
        k = share * channels
    cols = min(layer.out_map, max(1, math.ceil(columns * layer.out_map - 1e-9))) \
        if columns < 1.0 else layer.out_map
    attention = channels * layer.in_map * (2 if columns < 1.0 else 1)
    return k / layer.in_channels * cols / max(layer.out_map, 1), float(attention)


def threshold_possible(space: SearchSpace) -> bool:
    """Whether the space's AntiDote gates can decide by the threshold rule (fixed or searched):
    then a :class:`CostTable` needs calibration inputs to count them."""
    spec = space.spec
    if not space.gated or spec.dynamic_method != "antidote":
        return False
    rules = {spec.dynamic_options.get("rule", "ratio")}
    rules.update(spec.searched_options.get("rule", {}).get("choices", ()))
    return "threshold" in rules


class _RelativeAttention:
    """Per gate site, every calibration input's channel attentions divided by that input's
    largest, pooled and sorted, per attention power ``p`` (collected on first use, one forward
    pass of the dense network). AntiDote's threshold rule at keep ``k`` keeps the channels at or
    above ``1 - k``; the share of pooled values there is the mean kept fraction. Gates upstream
    of a site change its attentions in a pruned network, so for more than one gate this is an
    estimate (the trial's ``model_error_macs`` records how good)."""

    def __init__(self, model: nn.Module, sites: Sequence[Any], images: torch.Tensor) -> None:
        self.model, self.sites, self.images = model, list(sites), images
        self._sorted: dict[float, dict[str, np.ndarray]] = {}

    def share(self, site: str, keep: float, power: float) -> float:
        """The mean fraction of ``site``'s channels whose attention is at least ``1 - keep``
        times the input's largest."""
        if power not in self._sorted:
            self._sorted[power] = self._collect(power)
        r = self._sorted[power][site]
        return 1.0 - float(np.searchsorted(r, 1.0 - keep, side="left")) / r.size

    def _collect(self, power: float) -> dict[str, np.ndarray]:
        from prunebench.harness.pruning import site_attention

        out = {}
        for name, att in site_attention(self.model, self.sites, self.images,
                                        power).items():
            top = att.amax(1, keepdim=True)
            r = torch.where(top > 0, att / top.clamp_min(1e-30), torch.ones_like(att))
            out[name] = np.sort(r.flatten().float().numpy())
        return out


def mac_fraction(features: Mapping[str, float]) -> float:
    """The configuration's effective MACs (attention included) as a fraction of the dense
    network's, from :meth:`CostTable.features`."""
    return sum(v for k, v in features.items() if k != ACTIVATIONS)


def _layer_shapes(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[int, int, int, int]]:
    """(input channels, input H x W, output H x W, output elements) of every convolution and
    linear layer (a linear layer's maps are 1 x 1)."""
    out: dict[str, tuple[int, int, int, int]] = {}
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            def hook(mod: nn.Module, args: Any, y: torch.Tensor, name: str = name) -> None:
                z = args[0]
                maps = (int(z.shape[2] * z.shape[3]), int(y.shape[2] * y.shape[3])) \
                    if z.dim() == 4 else (1, 1)
                out[name] = (int(z.shape[1]), *maps, int(y[:1].numel()))
            hooks.append(m.register_forward_hook(hook))
    try:
        with torch.inference_mode():
            model.eval()(x)
    finally:
        for h in hooks:
            h.remove()
    return out


# --------------------------------------------------------------------------- the models
@dataclass(frozen=True)
class CostModel:
    """One budgeted quantity as a function of a configuration's per-layer features.

    ``kind`` is ``counted`` (MACs, params: :class:`CostTable` counts them) or ``fitted``
    (``intercept + scale * sum(m) + activations * act + sum(deltas[l] * m_l)``, in the
    quantity's own unit, ``act`` the :data:`ACTIVATIONS` feature); ``n_points`` is how many
    measurements the fit used and ``ridge`` its penalty (``None``: no per-layer corrections
    yet).
    """

    column: str
    kind: str
    intercept: float = 0.0
    scale: float = 0.0
    deltas: dict[str, float] = field(default_factory=dict)
    n_points: int = 0
    ridge: float | None = None
    activations: float = 0.0

    def predict(self, table: CostTable, config: PruningConfig) -> float:
        """The predicted value of ``column`` for ``config``."""
        if self.kind == "counted":
            return table.macs(config) if self.column == "macs" else table.params(config)
        f = table.features(config)
        return self.predict_features(f)

    def predict_features(self, f: Mapping[str, float]) -> float:
        """The fitted prediction from per-layer features (see :meth:`CostTable.features`)."""
        return self.intercept + self.scale * mac_fraction(f) + self.activations * f.get(
            ACTIVATIONS, 1.0) + sum(d * f.get(k, 0.0) for k, d in self.deltas.items())

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (stored in the study's user attrs)."""
        return {"column": self.column, "kind": self.kind, "intercept": self.intercept,
                "scale": self.scale, "activations": self.activations,
                "deltas": dict(self.deltas), "n_points": self.n_points, "ridge": self.ridge}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CostModel:
        """Inverse of :meth:`to_dict`."""
        return cls(**{**data, "deltas": dict(data.get("deltas") or {})})


def fit_cost_model(column: str, points: Sequence[tuple[Mapping[str, float], float]],
                   names: Sequence[str]) -> CostModel | None:
    """Fit ``column`` from ``(features, measured value)`` points (``None``: no points).

    One point: the MAC-proportional line through the origin. Fewer than
    :data:`MIN_PER_LAYER_POINTS`: non-negative least squares on ``a + c * MACs + e * act``
    (``e`` left out while fewer than three points, or no change in the activations, can tell
    it apart). More: ridge-penalised per-layer corrections on top, the penalty chosen among
    :data:`RIDGE_CHOICES` by leave-one-out error.
    """
    pts = [(f, float(y)) for f, y in points if math.isfinite(float(y))]
    if not pts:
        return None
    total = np.array([mac_fraction(f) for f, _ in pts])
    act = np.array([f.get(ACTIVATIONS, 1.0) for f, _ in pts])
    y = np.array([v for _, v in pts])
    if len(pts) == 1 or np.ptp(total) < 1e-9:
        scale = float(np.mean(y / np.maximum(total, 1e-12)))
        return CostModel(column, "fitted", 0.0, scale, {}, len(pts))
    base = np.column_stack([np.ones_like(total), total])
    with_act = np.column_stack([base, act])
    if np.ptp(act) > 1e-9 and np.linalg.matrix_rank(with_act) == 3:  # needs >= 3 points
        base = with_act
    lead = base.shape[1]
    deltas: dict[str, float] = {}
    ridge = None
    if len(pts) < MIN_PER_LAYER_POINTS:
        coef = _nonnegative(base, y) if lead == 3 else np.linalg.lstsq(base, y, rcond=None)[0]
    else:
        layers = np.array([[f.get(n, 0.0) for n in names] for f, _ in pts])
        x = np.column_stack([base, layers])
        yscale = float(np.mean(np.abs(y))) or 1.0
        ridge = min(RIDGE_CHOICES, key=lambda lam: _loo_error(x, y / yscale, lam, lead))
        coef = _ridge(x, y / yscale, ridge, lead) * yscale
        deltas = {n: float(d) for n, d in zip(names, coef[lead:], strict=True)}
    return CostModel(column, "fitted", float(coef[0]), float(coef[1]), deltas, len(pts), ridge,
                     float(coef[2]) if lead == 3 else 0.0)


def _nonnegative(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares with every coefficient >= 0 (a cost has no negative part), by trying each
    set of free columns (three columns: eight sets)."""
    best, best_err = np.zeros(x.shape[1]), float(np.sum(y ** 2))
    for mask in range(1, 2 ** x.shape[1]):
        cols = [j for j in range(x.shape[1]) if mask >> j & 1]
        sub = np.linalg.lstsq(x[:, cols], y, rcond=None)[0]
        if np.any(sub < 0):
            continue
        coef = np.zeros(x.shape[1])
        coef[cols] = sub
        err = float(np.sum((y - x @ coef) ** 2))
        if err < best_err - 1e-15:
            best, best_err = coef, err
    return best


def _penalty(n: int, lam: float, lead: int) -> np.ndarray:
    """``lam`` on every coefficient but the first ``lead`` (intercept, scale, activations)."""
    penalty = np.eye(n) * lam
    penalty[:lead, :lead] = 0.0
    return penalty


def _ridge(x: np.ndarray, y: np.ndarray, lam: float, lead: int) -> np.ndarray:
    """Least squares with ``lam`` on every coefficient but the first ``lead``."""
    penalty = _penalty(x.shape[1], lam, lead)
    return np.linalg.solve(x.T @ x + penalty + 1e-12 * np.eye(x.shape[1]), x.T @ y)


def _loo_error(x: np.ndarray, y: np.ndarray, lam: float, lead: int) -> float:
    """Mean squared leave-one-out error of the ridge fit, in closed form (residual over
    ``1 - leverage``)."""
    penalty = _penalty(x.shape[1], lam, lead)
    inv = np.linalg.pinv(x.T @ x + penalty + 1e-12 * np.eye(x.shape[1]))
    leverage = np.einsum("ij,jk,ik->i", x, inv, x)
    residual = y - x @ (inv @ x.T @ y)
    return float(np.mean((residual / np.maximum(1.0 - leverage, 1e-9)) ** 2))


def stored_models(study: optuna.Study) -> dict[str, CostModel]:
    """The cost models stored in ``study`` (budget key -> model)."""
    data = study.user_attrs.get(MODELS_ATTR) or {}
    return {k: CostModel.from_dict(v) for k, v in data.items()}


def refit_models(study: optuna.Study, table: CostTable, budgets: Mapping[str, float],
                 extra: Sequence[tuple[PruningConfig, Mapping[str, Any]]] = ()
                 ) -> dict[str, CostModel]:
    """Fit every fitted budget's model on the study's complete trials (their ``config`` and
    measured column) plus ``extra`` ``(config, row)`` pairs (the dense network, the trial being
    finished), store them in the study and return them (counted budgets included)."""
    points: list[tuple[PruningConfig, Mapping[str, Any]]] = list(extra)
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if "config" in t.user_attrs:
            points.append((PruningConfig.from_json(t.user_attrs["config"]), t.user_attrs))
    feats = [(table.features(c), row) for c, row in points]
    models: dict[str, CostModel] = {}
    for key in budgets:
        column, kind = COSTS[key]
        if kind == "counted":
            models[key] = CostModel(column, "counted")
            continue
        fitted = fit_cost_model(column, [(f, row[column]) for f, row in feats
                                         if row.get(column) is not None], table.names)
        if fitted is not None:
            models[key] = fitted
    study.set_user_attr(MODELS_ATTR, {k: m.to_dict() for k, m in models.items()})
    return models


def error_summary(trials: Sequence[FrozenTrial]) -> dict[str, float | None]:
    """Median absolute relative error of each recorded prediction (``model_error_<column>``)
    over complete trials, by column; ``None`` where no trial recorded one."""
    out: dict[str, float | None] = {}
    columns = {k.removeprefix("model_error_") for t in trials for k in t.user_attrs
               if k.startswith("model_error_")}
    for col in sorted(columns):
        errs = [abs(float(t.user_attrs[f"model_error_{col}"])) for t in trials
                if t.state == TrialState.COMPLETE and f"model_error_{col}" in t.user_attrs]
        out[col] = float(np.median(errs)) if errs else None
    return out


# --------------------------------------------------------------------------- the front's gaps
@dataclass(frozen=True)
class FrontGap:
    """A stretch of the in-budget front between two of its points (or its last point and the
    budget): costs ``low`` to ``high``, ``area`` its cost span times the accuracy rise;
    ``start`` is the cost of the front point it begins at (``low`` unless cut at a floor):
    with ``high`` it names the gap (:meth:`same`)."""
    low: float
    high: float
    area: float
    start: float

    def same(self, start: float, high: float) -> bool:
        """Whether this gap has the ends ``start`` and ``high`` (as a trial recorded them)."""
        return math.isclose(self.start, start, rel_tol=1e-9, abs_tol=1e-12) and \
            math.isclose(self.high, high, rel_tol=1e-9, abs_tol=1e-12)


@dataclass(frozen=True)
class GapAim:
    """Where :meth:`BudgetProjection.gap_aim` aimed a proposal: the budget ``key``, the
    ``gap``, the aimed ``cost`` in it and the ``level`` that cost is at."""
    key: str
    gap: FrontGap
    cost: float
    level: float


@dataclass(frozen=True)
class MeasuredFront:
    """A study's measurements the gaps are read from: ``points``, each feasible complete
    trial's measured cost per budget key and validation top-1, ``ceiling``, the best
    top-1 of any complete trial (feasible or not), and ``aims``, the gap each complete
    aimed trial went into, as ``(key, start, high)`` (:data:`GAP_AIM_ATTR`)."""
    points: tuple[tuple[Mapping[str, float], float], ...]
    ceiling: float
    aims: tuple[tuple[str, float, float], ...] = ()

    def tries(self, key: str, gap: FrontGap) -> int:
        """How many earlier aims on ``key`` went into ``gap`` and left it as it is."""
        return sum(k == key and gap.same(start, high) for k, start, high in self.aims)


def front_gaps(points: Sequence[tuple[float, float]], target: float, ceiling: float,
               floor: float = -math.inf) -> list[FrontGap]:
    """The gaps of the non-dominated front (least cost, most accuracy) of ``(cost, accuracy)``
    ``points`` at or under ``target``, cheapest first: one between each two neighbours, area
    ``(c1 - c0) x (a1 - a0)``, and one from the most accurate point to ``target`` whose
    height is what ``ceiling`` lies above that point (none when it does not). Only what lies
    above ``floor`` (the cheapest cost a proposal can reach) is kept: a gap is cut at it, its
    area in proportion, and one wholly below it dropped."""
    front: list[tuple[float, float]] = []
    for c, a in sorted(points, key=lambda p: (p[0], -p[1])):
        if c <= target and (not front or a > front[-1][1]):
            front.append((c, a))
    ends = [(c0, c1, a1 - a0) for (c0, a0), (c1, a1) in zip(front, front[1:], strict=False)]
    if front and ceiling > front[-1][1] and target > front[-1][0]:
        ends.append((front[-1][0], target, ceiling - front[-1][1]))
    return [FrontGap(max(low, floor), high, (high - max(low, floor)) * rise, start=low)
            for low, high, rise in ends if high > floor]


def is_feasible(trial: FrozenTrial) -> bool:
    """A complete trial whose every constraint value is <= 0 (``search.study`` re-exports it)."""
    return trial.state == TrialState.COMPLETE and all(
        v <= 0.0 for v in trial.constraints.values())


def measured_front(trials: Sequence[FrozenTrial], keys: Sequence[str]) -> MeasuredFront:
    """The :class:`MeasuredFront` of ``trials`` for the budget ``keys`` (their measured
    columns, :data:`COSTS`): feasible trials that measured :data:`ACCURACY` and every key's
    column."""
    points, ceiling, aims = [], -math.inf, []
    for t in trials:
        if t.state != TrialState.COMPLETE:
            continue
        aim = t.user_attrs.get(GAP_AIM_ATTR)
        if isinstance(aim, Mapping) and aim.get("high") is not None:
            # recorded before "start" was: the low end (the same unless cut at a floor)
            start = aim.get("start", aim.get("low"))
            if start is not None:
                aims.append((str(aim["key"]), float(start), float(aim["high"])))
        if t.user_attrs.get(ACCURACY) is None:
            continue
        acc = float(t.user_attrs[ACCURACY])
        ceiling = max(ceiling, acc)
        costs = {k: t.user_attrs.get(COSTS[k][0]) for k in keys}
        if is_feasible(t) and all(v is not None for v in costs.values()):
            points.append(({k: float(v) for k, v in costs.items()}, acc))
    return MeasuredFront(tuple(points), ceiling, tuple(aims))


# --------------------------------------------------------------------------- the projection
class BudgetProjection:
    """Scales a proposed allocation so its predicted costs meet every budget with the margin.

    The proposal's per-group ratios ``r`` and per-gate pruned fractions ``1 - keep`` form its
    shape; the projection evaluates ``s * shape`` (clipped to the space's bounds, on its step
    grids) and bisects the common factor ``s`` for the least pruned point whose predicted cost
    is at most its :meth:`aim` for every budget: ``level`` of the way from the shape's cheapest
    point to ``budget / (1 + margin)`` (margin: the spec's latency margin for latency, none for
    the rest). When the unpruned network is predicted to meet every budget, nothing binds and
    the proposal is returned as drawn; when even the shape's cheapest point misses a budget,
    that point is returned. A shape of all zeros is the uniform shape.
    """

    def __init__(self, space: SearchSpace, table: CostTable, budgets: Mapping[str, float],
                 latency_margin: float = 0.0) -> None:
        self.space, self.table = space, table
        self.targets = {k: float(v) / (1.0 + (latency_margin if k == "latency_ms" else 0.0))
                        for k, v in budgets.items()}
        self._dists = space.distributions()
        self._ratio_names = {space.ratio_param(g) for g in space.groups}

    def distributions(self) -> dict[str, BaseDistribution]:
        """The whole space's distributions plus the searched level."""
        return {LEVEL: LEVEL_DISTRIBUTION, **self._dists}

    def project(self, params: Mapping[str, Any], models: Mapping[str, CostModel]
                ) -> dict[str, Any]:
        """``params`` with the per-layer values scaled onto the budget (others unchanged)."""
        reach = self._reach(params, models)
        if reach is None:
            return dict(params)
        shape, top, cost, unpruned, floor = reach
        if all(unpruned[k] <= self.targets[k] for k in unpruned):
            return dict(params)  # no budget binds: the proposal is evaluated as drawn
        aim = self._aim(float(params.get(LEVEL, 1.0)), unpruned, floor)

        def fits(predicted: Mapping[str, float]) -> bool:
            return all(v <= aim[k] for k, v in predicted.items())

        if fits(unpruned):
            return self._scaled(params, shape, 0.0)
        if not fits(floor):
            return self._scaled(params, shape, top)  # nothing along this shape fits
        lo, hi = 0.0, top
        for _ in range(40):
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if fits(cost(mid)) else (mid, hi)
            if hi - lo < 1e-4:
                break
        return self._scaled(params, shape, hi)

    def gap_aim(self, params: Mapping[str, Any], models: Mapping[str, CostModel],
                front: MeasuredFront, rng: np.random.Generator | None = None
                ) -> GapAim | None:
        """The level that aims ``params``' shape into ``front``'s largest gap it can reach
        (above the shape's cheapest point), on the first budget that binds (its target between
        the shape's unpruned and cheapest points); a gap's area counts times
        :data:`GAP_RETRY_DISCOUNT` for each of ``front.aims`` that went into it and left it
        as it is. ``None`` when none binds or the front has no gap of positive area (fewer
        than two feasible points and nothing more accurate measured). ``rng`` draws the aimed
        cost uniformly in the gap's middle half (:data:`GAP_INSET`); without it, the middle."""
        reach = self._reach(params, models)
        if reach is None:
            return None
        *_, unpruned, floor = reach
        key = next((k for k in floor if unpruned[k] > self.targets[k] > floor[k]), None)
        if key is None:
            return None
        target = self.targets[key]
        points = [(c[key], acc) for c, acc in front.points if key in c]
        gaps = [g for g in front_gaps(points, target, front.ceiling, floor[key]) if g.area > 0]
        if not gaps:
            return None
        gap = max(gaps, key=lambda g: g.area * GAP_RETRY_DISCOUNT ** front.tries(key, g))
        u = float(rng.uniform(GAP_INSET, 1.0 - GAP_INSET)) if rng is not None else 0.5
        aimed = gap.low + u * (gap.high - gap.low)
        raw = (aimed - floor[key]) / (target - floor[key])
        level = round(min(max(round(raw / LEVEL_STEP) * LEVEL_STEP, 0.0), 1.0), 6)
        return GapAim(key, gap, aimed, level)

    def aim(self, params: Mapping[str, Any], models: Mapping[str, CostModel]
            ) -> dict[str, float]:
        """The predicted cost per budget that :meth:`project` aims ``params`` at: for a binding
        budget, ``floor + level x (target - floor)``, where ``floor`` is the proposal's shape
        pruned as far as the space allows (its cheapest point) and ``target`` the budget less
        its margin; a budget the unpruned network meets is aimed at its target."""
        reach = self._reach(params, models)
        if reach is None:
            return {}
        *_, unpruned, floor = reach
        return self._aim(float(params.get(LEVEL, 1.0)), unpruned, floor)

    def _aim(self, level: float, unpruned: Mapping[str, float], floor: Mapping[str, float]
             ) -> dict[str, float]:
        # the level spans what the shape can reach, so no level aims below its cheapest point
        # (every such proposal would be that one configuration)
        out = {}
        for k, target in ((k, self.targets[k]) for k in floor):
            binding = unpruned[k] > target and floor[k] < target
            out[k] = floor[k] + level * (target - floor[k]) if binding else target
        return out

    def _reach(self, params: Mapping[str, Any], models: Mapping[str, CostModel]
               ) -> tuple[dict[str, float], float, Any, dict[str, float], dict[str, float]] | None:
        """``params``' shape, the factor of its cheapest point, its cost function and its
        predicted unpruned and cheapest costs per budget that has a model; ``None`` when no
        budget has one."""
        usable = {k: m for k, m in models.items() if k in self.targets}
        if not usable:
            return None
        shape = self._shape(params)
        top = self._top(shape)
        cost = self._cost(params, shape, usable)
        return shape, top, cost, cost(0.0), cost(top)

    def _cost(self, params: Mapping[str, Any], shape: Mapping[str, float],
              models: Mapping[str, CostModel]) -> Any:
        def cost(s: float) -> dict[str, float]:
            cfg = self.space.config(self._scaled(params, shape, s)).record
            return {k: m.predict(self.table, cfg) for k, m in models.items()}
        return cost

    def _shape(self, params: Mapping[str, Any]) -> dict[str, float]:
        """Each per-layer parameter's pruned amount: a ratio, or 1 - a keep."""
        sp = self.space
        shape = {sp.ratio_param(g): float(params[sp.ratio_param(g)]) for g in sp.groups}
        shape.update({sp.keep_param(g): 1.0 - float(params[sp.keep_param(g)]) for g in sp.gated})
        if all(v <= 0 for v in shape.values()):
            shape = dict.fromkeys(shape, 1.0)
        return shape

    def _top(self, shape: Mapping[str, float]) -> float:
        """The factor at which every dimension of ``shape`` reaches its most pruned value."""
        return max(self.most(n) / v for n, v in shape.items() if v > 0)

    def most(self, name: str) -> float:
        """The most a per-layer parameter can be pruned: a ratio's high end, ``1 -`` a keep's
        low end."""
        dist = self._dists[name]
        return dist.high if name in self._ratio_names else 1.0 - dist.low

    def _scaled(self, params: Mapping[str, Any], shape: Mapping[str, float], s: float
                ) -> dict[str, Any]:
        """``params`` with each per-layer amount ``s x shape``, on its distribution's grid."""
        out = dict(params)
        for name, v in shape.items():
            dist = self._dists[name]
            amount = min(s * v, self.most(name))
            value = amount if name in self._ratio_names else 1.0 - amount
            k = round((value - dist.low) / dist.step)
            out[name] = round(min(max(dist.low + k * dist.step, dist.low), dist.high), 6)
        return out


class ProjectingSampler(optuna.samplers.BaseSampler):
    """``base`` with every proposal scaled onto the budget by ``projection``.

    Enqueued (fixed) parameters are left alone: Optuna takes them before relative ones. A trial
    whose user attr :data:`PROPOSAL_ATTR` holds a draw is projected from that draw (the rest of
    the space drawn as usual) at the draw's level; any other trial's level is aimed into the
    front's largest gap (:meth:`BudgetProjection.gap_aim`, seeded by the study's name and the
    trial's number; recorded in :attr:`aims`) once the study has one, else drawn. The models
    are read from the study at each proposal (a worker's latest fit included); without a model
    for any budget the base proposal is returned unscaled.
    """

    def __init__(self, base: optuna.samplers.BaseSampler, projection: BudgetProjection,
                 models: Any) -> None:
        self.base, self.projection = base, projection
        self._models = models  # callable(study) -> {budget key: CostModel}
        self.aims: dict[int, GapAim] = {}  # trial number -> the gap its level was aimed into

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial
                                    ) -> dict[str, BaseDistribution]:
        """The base sampler's relative space and the whole projected space."""
        return {**self.base.infer_relative_search_space(study, trial),
                **self.projection.distributions()}

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        """The base sampler's draws (relative where it models jointly), projected."""
        proposed = trial.user_attrs.get(PROPOSAL_ATTR)
        if proposed is not None:
            params = dict(proposed)
        else:
            own = self.base.infer_relative_search_space(study, trial)
            params = dict(self.base.sample_relative(study, trial, own)) if own else {}
        fixed = trial.system_attrs.get("fixed_params", {})
        for name, dist in search_space.items():
            if name not in params:
                params[name] = fixed[name] if name in fixed else \
                    self.base.sample_independent(study, trial, name, dist)
        if any(n in fixed for n in self.projection.space.param_names()):
            return params  # an enqueued configuration is evaluated as given
        models = self._models(study)
        if proposed is None and LEVEL not in fixed:
            front = measured_front(study.get_trials(deepcopy=False), list(self.projection.targets))
            seed = zlib.crc32(f"{study.study_name}/{trial.number}".encode())
            gap = self.projection.gap_aim(params, models, front, np.random.default_rng(seed))
            if gap is not None:
                params[LEVEL] = gap.level
                self.aims[trial.number] = gap
        return self.projection.project(params, models)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        """Delegated to the base sampler."""
        return self.base.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Delegated to the base sampler."""
        self.base.before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        """Delegated to the base sampler."""
        self.base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        """Delegated to the base sampler."""
        self.base.reseed_rng()
