"""Sensitivity-shaped proposals: per-layer allocations that prune where accuracy is cheap.

Random or TPE draws of a per-layer allocation prune sensitive layers as readily as robust ones,
and at aggressive budgets they lose to the uniform line at the same latency (``bench_search``
run 14 at 0.5x, docs/benchmarks.md). Li et al. (2017, the L1 paper's sensitivity analysis)
and NetAdapt / HALP instead give each layer its own amount from what pruning it costs in
accuracy and saves in latency. This module does that once per study:

1. :func:`layer_sensitivity`: for each per-layer dimension of the space (a group's ratio, a
   gate's keep) the validation top-1 lost when that dimension *alone* is pruned as far as the
   space allows (static cuts re-estimate BatchNorm on 16 train batches first, "adaptive BN";
   no fine-tuning; searched method options at the method's default), on at most
   :data:`MAX_IMAGES` validation images;
2. :func:`sensitivity_shape`: each dimension's *efficiency* ``e = saving / max(drop, floor)``
   (``saving``: the predicted cost that pruning it alone removes, summed over the budgets as
   fractions of dense, from the study's cost models; ``floor``: one validation image), and its
   pruned amount ``most x (e / max e) ** gamma``: the most efficient dimension is pruned
   furthest, ``gamma`` sets how sharply (0 is the uniform shape);
3. :class:`SensitivityStart` enqueues :data:`SCHEDULE`'s ``(gamma, level)`` proposals after
   the warm start, as trials whose *draw* (user attr :data:`PROPOSAL_ATTR`) the
   :class:`~prunebench.search.latency_model.ProjectingSampler` projects onto the budget like any
   other draw, with the cost models fitted on the warm-start trials.

The sampler then explores around them. The drops are stored in the study (:data:`DROPS_ATTR`)
and in ``sensitivity.json`` of the run folder; each proposal trial carries
:data:`SHAPE_ATTR` (its gamma). Only with a budget the projection lands in (the same condition
as the projection itself).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial

from prunebench.search.latency_model import (
    LEVEL,
    LEVEL_MIN,
    PROPOSAL_ATTR,
    BudgetProjection,
    CostModel,
)
from prunebench.search.space import SearchSpace, option_defaults, uniform_params

SHAPE_ATTR = "prunebench_sensitivity_gamma"  # trial user attr: the proposal's gamma
DROPS_ATTR = "prunebench_sensitivity"  # study user attr: dimension -> val top-1 lost
MAX_IMAGES = 1024  # validation images the drops are measured on (the first ones)
BN_BATCHES = 16  # train batches of the adaptive-BN re-estimation after a static cut
# (gamma, level) of the proposals, in the order they are enqueued: at the budget's edge with
# a mild and a sharp shape, then the same shapes lower in the in-budget range
SCHEDULE: tuple[tuple[float, float], ...] = ((1.0, 1.0), (2.0, 1.0), (1.0, LEVEL_MIN),
                                             (2.0, 0.65), (0.5, 1.0), (0.5, 0.65))


def _ratios(space: SearchSpace) -> set[str]:
    return {space.ratio_param(g) for g in space.groups}


def _unpruned(space: SearchSpace) -> dict[str, Any]:
    """The dense configuration's parameters, the searched options at their defaults
    (:func:`~prunebench.search.space.option_defaults`)."""
    return uniform_params(space, 0.0, 1.0, option_defaults(space).items())


def _alone(space: SearchSpace, name: str) -> dict[str, Any]:
    """The unpruned configuration with dimension ``name`` alone pruned as far as it goes: a
    ratio at its high end, a keep at its low end."""
    dist = space.distributions()[name]
    return {**_unpruned(space), name: dist.high if name in _ratios(space) else dist.low}


def layer_sensitivity(objective: Any, *, max_images: int = MAX_IMAGES,
                      bn_batches: int = BN_BATCHES) -> dict[str, float]:
    """Validation top-1 lost (>= 0) per dimension of ``objective.space`` pruned alone as far as
    the space allows, without fine-tuning (``objective``: a
    :class:`~prunebench.search.objective.SearchObjective`)."""
    from prunebench.harness.evaluate import build_pruned
    from prunebench.harness.measure.accuracy import accuracy
    from prunebench.harness.train import recalibrate_batchnorm

    prepared, space = objective.prepared, objective.space
    val = prepared.splits.val
    if len(val) > max_images:
        val = torch.utils.data.Subset(val, range(max_images))
    dense = accuracy(prepared.base_model, val).top1
    out = {}
    for name in space.param_names():
        record = dataclasses.replace(space.config(_alone(space, name)).record, finetune_epochs=0)
        net = build_pruned(prepared, record, profile=objective.profile, progress=False)
        if name in _ratios(space):
            recalibrate_batchnorm(net, prepared.splits, bn_batches, seed=objective.spec.seed)
        out[name] = max(0.0, dense - accuracy(net, val).top1)
    return out


def savings(projection: BudgetProjection, models: Mapping[str, CostModel]) -> dict[str, float]:
    """Per dimension, the predicted cost pruning it alone removes: the sum over the budgets of
    ``(cost(dense) - cost(alone)) / cost(dense)``."""
    space, table = projection.space, projection.table
    usable = {k: m for k, m in models.items() if k in projection.targets}
    dense_cfg = space.config(_unpruned(space)).record
    dense = {k: m.predict(table, dense_cfg) for k, m in usable.items()}
    out = {}
    for name in space.param_names():
        cfg = space.config(_alone(space, name)).record
        out[name] = sum((dense[k] - m.predict(table, cfg)) / dense[k]
                        for k, m in usable.items() if dense[k] > 0)
    return out


def sensitivity_shape(drops: Mapping[str, float], saved: Mapping[str, float],
                      most: Mapping[str, float], gamma: float, floor: float
                      ) -> dict[str, float]:
    """Each dimension's pruned amount ``most x (e / max e) ** gamma`` with
    ``e = max(saved, 0) / max(drop, floor)``; all ``most`` when nothing saves anything."""
    eff = {n: max(saved[n], 0.0) / max(drops[n], floor) for n in drops}
    top = max(eff.values(), default=0.0)
    if top <= 0:
        return dict(most)
    return {n: most[n] * (e / top) ** gamma for n, e in eff.items()}


def proposal(space: SearchSpace, amounts: Mapping[str, float], level: float) -> dict[str, Any]:
    """The draw of a proposal: each dimension's value from its pruned amount (a ratio is the
    amount, a keep ``1 - amount``), the searched options where the drops were measured (their
    defaults: a threshold keep is not the ratio keep the probes shaped), and the level."""
    ratios = _ratios(space)
    out: dict[str, Any] = {n: (a if n in ratios else 1.0 - a) for n, a in amounts.items()}
    out.update(option_defaults(space))
    out[LEVEL] = level
    return out


class SensitivityStart:
    """Enqueues the sensitivity-shaped proposals once the warm start is done, one at a time.

    ``after``: the warm start (its ``done``), or None to start at :meth:`start`. ``n``: how
    many of :data:`SCHEDULE` (0: none; at most its length). Pass :meth:`callback` after the
    warm start's. As the warm start, each proposal is enqueued after the trial before it, so a
    run that ends (its trials spent, its time out, a stop) leaves none of them queued.
    """

    def __init__(self, objective: Any, n: int, after: Any = None,
                 sink: Any = None) -> None:
        self.objective, self.n, self.after = objective, max(0, int(n)), after
        self.sink = sink  # callable(drops) -> None: where the run folder keeps them
        self.done = self.n == 0 or objective.projection is None
        self.queue: list[tuple[dict[str, Any], float]] | None = None  # (draw, gamma) to go

    def start(self, study: optuna.Study) -> None:
        """Enqueue the first proposal now when there is no warm start to wait for."""
        if not self.done and self.after is None:
            self._next(study)

    def callback(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """After each trial: once the warm start has ended, enqueue the next proposal."""
        if not self.done and (self.after is None or self.after.done):
            self._next(study)

    def _next(self, study: optuna.Study) -> None:
        if self.queue is None:
            self.queue = self._proposals(study)
        if not self.queue:
            self.done = True
            return
        draw, gamma = self.queue.pop(0)
        study.enqueue_trial({}, user_attrs={PROPOSAL_ATTR: draw, SHAPE_ATTR: gamma})
        self.done = not self.queue

    def _proposals(self, study: optuna.Study) -> list[tuple[dict[str, Any], float]]:
        """Measure the drops (once) and shape every proposal of the schedule."""
        obj = self.objective
        if not obj.budget_binds():
            return []  # nothing to land in: the projection is not used either
        drops = layer_sensitivity(obj)
        study.set_user_attr(DROPS_ATTR, drops)
        if self.sink is not None:
            self.sink(drops)
        space = obj.space
        most = {n: obj.projection.most(n) for n in space.param_names()}
        saved = savings(obj.projection, obj.models(study))
        floor = 1.0 / max(1, min(len(obj.prepared.splits.val), MAX_IMAGES))
        return [(proposal(space, sensitivity_shape(drops, saved, most, gamma, floor), level),
                 gamma) for gamma, level in SCHEDULE[:self.n]]
