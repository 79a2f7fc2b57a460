"""Activation attention of filters, and the thresholds and ratios that cut by it.

Shared by AAP (:mod:`harness.pruning.static.aap` and its adaptive policy
:mod:`harness.pruning.static.aap_policy`) and PAAM's ratio mode
(:mod:`harness.pruning.static.paam`). *Importance*: :func:`filter_attention` (the
example-averaged ``|A|`` of what a group's consumer layers read, raised to ``p``, averaged over
positions). *Amount*:
:func:`group_shares` (each coupled group's share of the weights or MACs, which scales its
threshold), :func:`median_score` (the unit of AAP's global threshold ``T``),
:func:`select_below_threshold` (AAP's rule) and :func:`ratio_prune_idxs` (explicit ratios).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.utils.data import Dataset

from prunebench.harness.datasets import make_loader
from prunebench.harness.errors import PrunebenchError
from prunebench.harness.measure.flops import module_macs
from prunebench.harness.pruning.static.cut import Group, coupled_groups, keep_count, resolve_ratios

SHARES = ("params", "macs")


def group_shares(model: nn.Module, groups: Sequence[Group], example_input: torch.Tensor,
                 by: str = "params") -> dict[str, float]:
    """Each group's share (summing to 1) of its members' weights, or of their MACs.

    MACs are the members' own, per input (:func:`harness.measure.flops.module_macs`).
    """
    if by not in SHARES:
        raise PrunebenchError(f"option share={by!r} must be one of {', '.join(SHARES)}")
    cost: dict[str, float] = {}
    if by == "params":
        mods = dict(model.named_modules())
        for g in groups:
            cost[g.name] = float(sum(mods[m].weight.numel() for m in g.members))
    else:
        macs = module_macs(model, example_input[:1])
        for g in groups:
            cost[g.name] = float(sum(macs.get(m, 0) for m in g.members))
    total = sum(cost.values()) or 1.0
    return {k: v / total for k, v in cost.items()}


def filter_attention(model: nn.Module, groups: Sequence[Group], data: Dataset, p: float = 1.0,
                     batch_size: int = 128) -> dict[str, torch.Tensor]:
    """Per group, each filter's attention over ``data`` (eval mode, no grad), in AAP's order.

    ``A`` is what the group's consumer layers read. As the paper (and its authors' code), the
    activation is first averaged over the examples, then raised to the power: a filter's score
    is ``mean over positions of (mean over examples of |A|) ** p`` (for ``p = 1`` this equals
    ``mean |A|``). A consumer that reads a pooled vector has one position. Scores of several
    consumers are averaged.
    """
    mods = dict(model.named_modules())
    sums: dict[str, torch.Tensor] = {}  # per consumer: sum over examples of |A|, (C, *spatial)
    counts: dict[str, int] = {}  # per consumer: examples seen

    def hook(name: str):
        def fn(mod: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            a = args[0].detach().abs().double()
            sums[name] = sums.get(name, 0) + a.sum(dim=0)
            counts[name] = counts.get(name, 0) + a.shape[0]
        return fn

    consumers = {c for g in groups for c in g.consumers}
    handles = [mods[c].register_forward_pre_hook(hook(c)) for c in consumers]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for x, _ in make_loader(data, batch_size=batch_size):
                model(x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    out: dict[str, torch.Tensor] = {}
    for g in groups:
        if not g.consumers:
            raise PrunebenchError(f"layer group {g.name!r} has no consumer layer to read its "
                                  "activations from; AAP cannot score it")
        # a consumer reading more channels (a concatenation) cannot be attributed; skip it
        per = [(sums[c] / counts[c]).pow(p).reshape(g.channels, -1).mean(dim=1).float()
               for c in g.consumers if c in sums and len(sums[c]) == g.channels]
        if not per:
            raise PrunebenchError(f"no consumer of layer group {g.name!r} reads exactly its "
                                  f"{g.channels} channels; AAP cannot score this architecture")
        out[g.name] = torch.stack(per).mean(dim=0)
    return out


def select_below_threshold(scores: Mapping[str, torch.Tensor], shares: Mapping[str, float],
                           t: float, ref: float) -> tuple[dict[str, list[int]], list[str]]:
    """Filters below ``t * ref * share * n_groups`` per group; a group keeps >= 1 filter.

    Returns the indices to prune per group and the groups where the keep-one bound applied.
    """
    n = len(scores)
    prune: dict[str, list[int]] = {}
    kept_one: list[str] = []
    for name, s in scores.items():
        thr = t * ref * shares[name] * n
        below = (s < thr).nonzero().flatten().tolist()
        if len(below) >= len(s):
            keep = int(torch.argmax(s))
            below = [i for i in below if i != keep]
            kept_one.append(name)
        if below:
            prune[name] = below
    return prune, kept_one


def ratio_prune_idxs(model: nn.Module, example_input: torch.Tensor,
                     scores: Mapping[str, torch.Tensor], ratios: Mapping[str, float],
                     global_ratio: float | None, round_to: int = 1) -> dict[str, list[int]]:
    """Per-group lowest-scored filters for explicit ratios (the search's amount, no policy).

    Ties keep the lower channel index, so equal scores give a deterministic cut.
    """
    groups = coupled_groups(model, example_input)
    per_group = resolve_ratios(groups, ratios, global_ratio)
    out: dict[str, list[int]] = {}
    for g in groups:
        if g.name not in per_group:
            continue
        keep = keep_count(g.channels, per_group[g.name], round_to, layer=g.name)
        order = torch.argsort(scores[g.name], descending=True, stable=True)
        if keep < g.channels:
            out[g.name] = sorted(order[keep:].tolist())
    return out


def median_score(scores: Mapping[str, torch.Tensor]) -> float:
    """The median filter score over all groups (the unit of ``T``)."""
    return statistics.median(torch.cat(list(scores.values())).tolist())
