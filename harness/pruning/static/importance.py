"""The *importance* of filters (how channels are scored) and the allocation of removals.

Kept apart from the cut (:mod:`harness.pruning.static.cut`): a criterion maps one coupled
:class:`~harness.pruning.static.cut.Group` to one score per channel (higher = more important),
summed over the group's coupled members so a residual group is ranked as a whole. An allocation
turns scores and ratios into the channel indices to remove:

- ``local``: each group loses its own ratio of channels (uniform pruning when one ratio is given);
- ``global``: one network-wide ranking of scores normalised per group (divided by the group's
  mean), as in network slimming's global threshold; the ratio is of all prunable channels.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from prunebench.harness.errors import PrunebenchError
from prunebench.harness.pruning.static.cut import Group, keep_count
from prunebench.harness.registry import Registry

Criterion = Callable[[nn.Module, Group, int], torch.Tensor]
CRITERIA: Registry[Criterion] = Registry("importance criterion")
ALLOCATIONS = ("local", "global")


def _weights(model: nn.Module, group: Group) -> list[torch.Tensor]:
    """Each member's weight as (channels, -1), detached."""
    out = []
    for name in group.members:
        w = model.get_submodule(name).weight.detach()
        out.append(w.reshape(w.shape[0], -1).float())
    return out


@CRITERIA.register("l1", citation="Li et al. 2017, Pruning Filters for Efficient ConvNets")
def l1_norm(model: nn.Module, group: Group, seed: int = 0) -> torch.Tensor:
    """Sum of absolute filter weights, summed over coupled members."""
    return sum(w.abs().sum(dim=1) for w in _weights(model, group))  # type: ignore[return-value]


@CRITERIA.register("bn_scale", citation="Liu et al. 2017, Learning Efficient Convolutional "
                   "Networks through Network Slimming")
def bn_scale(model: nn.Module, group: Group, seed: int = 0) -> torch.Tensor:
    """|gamma| of the BatchNorm layers after the group's filters, summed over coupled norms."""
    gammas = [model.get_submodule(n).weight for n in group.norms
              if getattr(model.get_submodule(n), "weight", None) is not None]
    if not gammas:
        raise PrunebenchError(f"criterion bn_scale needs a BatchNorm with affine scale after "
                              f"layer {group.name!r}; use l1 or fpgm for this model")
    return sum(g.detach().abs().float() for g in gammas)  # type: ignore[return-value]


@CRITERIA.register("fpgm", citation="He et al. 2019, Filter Pruning via Geometric Median")
def fpgm(model: nn.Module, group: Group, seed: int = 0) -> torch.Tensor:
    """Sum of Euclidean distances to the layer's other filters (near the median = redundant)."""
    return sum(torch.cdist(w[None], w[None])[0].sum(dim=1)  # type: ignore[return-value]
               for w in _weights(model, group))


@CRITERIA.register("random", citation="seeded uniform random ranking (sanity baseline)")
def random_scores(model: nn.Module, group: Group, seed: int = 0) -> torch.Tensor:
    """Uniform random scores from a generator seeded by ``seed`` and the group name."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(group.name.encode()))
    return torch.rand(group.channels, generator=gen)


def score_groups(model: nn.Module, groups: Sequence[Group], criterion: str,
                 seed: int = 0) -> dict[str, torch.Tensor]:
    """One score vector (length ``group.channels``) per group name."""
    fn = CRITERIA.get(criterion)
    out = {}
    for g in groups:
        scores = fn(model, g, seed)
        if scores.shape != (g.channels,):
            raise PrunebenchError(f"layers coupled in group {g.name!r} have unequal channel "
                                  "counts; prunebench cannot score this group")
        out[g.name] = scores
    return out


def select_prune_idxs(groups: Sequence[Group], scores: Mapping[str, torch.Tensor],
                      ratios: Mapping[str, float], *, allocation: str = "local",
                      global_ratio: float | None = None, round_to: int = 1
                      ) -> dict[str, list[int]]:
    """Channel indices to remove per group (lowest scores first).

    ``ratios`` holds groups with their own ratio (local); under ``global`` allocation the groups
    without one share ``global_ratio`` through one ranking of normalised scores.
    """
    if allocation not in ALLOCATIONS:
        raise PrunebenchError(f"allocation {allocation!r} is not one of {list(ALLOCATIONS)}")
    counts = {g.name: g.channels - keep_count(g.channels, ratios[g.name], round_to, layer=g.name)
              for g in groups if g.name in ratios}
    if allocation == "global" and global_ratio:
        rest = [g for g in groups if g.name not in ratios]
        counts.update(_global_counts(rest, scores, global_ratio, round_to))
    return {name: _lowest(scores[name], n) for name, n in counts.items() if n > 0}


def _lowest(scores: torch.Tensor, n: int) -> list[int]:
    # stable sort: ties are broken by channel index, so results are deterministic
    return sorted(torch.argsort(scores, stable=True)[:n].tolist())


def _global_counts(groups: Sequence[Group], scores: Mapping[str, torch.Tensor],
                   ratio: float, round_to: int) -> dict[str, int]:
    """Per-group removal counts from one ranking of mean-normalised scores."""
    if not groups:
        return {}
    norm = [scores[g.name] / scores[g.name].mean().clamp_min(1e-12) for g in groups]
    owner = torch.cat([torch.full((len(s),), i) for i, s in enumerate(norm)])
    flat = torch.cat(norm)
    # ties (e.g. untrained BN scales, all 1) are broken by the channel's rank within its group,
    # so equal scores are removed evenly across groups instead of group by group
    rank = torch.cat([torch.argsort(torch.argsort(s, stable=True)).float() / len(s)
                      for s in norm])
    order = torch.argsort(rank, stable=True)
    order = order[torch.argsort(flat[order], stable=True)]
    total = round(ratio * flat.numel())
    chosen = owner[order[:total]]
    counts = torch.bincount(chosen, minlength=len(groups)).tolist()
    out = {}
    for g, n in zip(groups, counts, strict=True):
        if n >= g.channels:
            raise PrunebenchError(f"global ratio {ratio} ranks every channel of {g.name!r} below "
                                  "the cut; use a smaller ratio or allocation local")
        # re-expressed as a ratio so round_to applies exactly as for local allocation
        out[g.name] = g.channels - keep_count(g.channels, n / g.channels, round_to, layer=g.name)
    return out


def slimming_loss_hook(lam: float) -> Callable[..., torch.Tensor | None]:
    """Network slimming's sparsity penalty ``lam * sum |gamma|`` over all BatchNorm scales.

    Pass as ``loss_hook`` to :func:`harness.train.train_model` (Liu et al. 2017 use 1e-4 to 1e-5).
    """
    if lam < 0:
        raise PrunebenchError(f"slimming lambda {lam!r} must be >= 0 (e.g. 1e-4)")

    def hook(model: nn.Module, inputs: torch.Tensor, outputs: torch.Tensor,
             targets: torch.Tensor) -> torch.Tensor | None:
        gammas = [m.weight for m in model.modules()
                  if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None]
        if not gammas or lam == 0:
            return None
        return lam * sum(g.abs().sum() for g in gammas)

    return hook
