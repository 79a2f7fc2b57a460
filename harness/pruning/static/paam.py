"""PAAM: Pruning by Active Attention Manipulation (Babaiee, Liebenwein, Hasani, Rus, Grosu 2022).

*Importance*: every coupled group of filters (``harness.pruning.static.cut.coupled_groups``) gets a
small attention network that reads the group's filter weights (filter ``i``'s weights in every
member layer, concatenated and standardised per group; detached, so learning the filters is left
to the CNN's own loss) and outputs one analog score per filter through single-head self-attention
across the filters (the filters are not independent). The scores multiply the group's output
channels during training, right after the normalisation layer that follows each member (after
the member itself when no normalisation follows, where BatchNorm would otherwise undo it).

*Activation*: the paper's leaky exponential, which keeps scores in (0, 1], starts them at 1 and
never has a zero gradient. Our form: ``exp(x)`` for ``x <= 0`` and ``exp(-alpha * x)`` for
``x > 0`` (the "leak", ``alpha = 0.1`` by default); the output layer starts at zero, so every
score starts at exactly 1 with gradient 1.

*Loss*: cross-entropy plus ``lam * sum(scores)`` over all filters of all layers (one joint
training, no per-layer budget), through ``train_model``'s ``loss_hook``; one stage, from the given
pretrained network or, the paper's setting, from scratch: ``from_scratch=true`` re-initialises
every weight (seeded by ``ctx.seed``; convolutions He-normal, fan-out, as the zoo's networks,
every other layer by its own ``reset_parameters``), so the given network's weights are never
read, and the scores and weights are then trained together from that random start for the
recipe's epochs at its learning rate before the cut. The attention networks are created under
``ctx.seed`` too, so a run repeats.

*Amount and cut*: the global budget ``options["budget"]`` (``params=0.5`` or ``macs=0.5``: a
fraction of dense when at most 1, else a count) keeps filters in order of decreasing score until
one more would exceed the budget; every group first keeps its ``group_floor`` share of its
filters (its top-scored ones, at least one: ``ceil(group_floor x channels)``, default 0.2, the
search space's largest ratio 0.8), so a coupled residual stream cannot collapse to one channel
under a global budget (the paper has no such floor). The keep-count is found by bisection over
real cuts, so the budget is met exactly as counted. The scores are folded into
the following normalisation layer (or the member's weights), which is exact in eval mode, the
other filters are removed physically, and the attention networks and hooks are dropped: the
result is an ordinary smaller network.

Options: ``budget``; ``epochs`` (score training; default the recipe's epochs from scratch, a
third of them from a pretrained network), ``lr`` (default the recipe's lr from scratch, lr / 10
from pretrained), ``lam`` (regulariser weight per score, default 1e-3), ``from_scratch``,
``hidden`` (attention width, 16), ``alpha`` (leak, 0.1), ``group_floor`` (0.2, with a budget
only), ``finetune_epochs`` / ``finetune_lr`` (after the cut, default 0). With ``ratios`` /
``global_ratio`` instead of a budget, the learned scores choose the filters and the ratios the
amount (``round_to`` applies; ``group_floor`` does not), as for the other static methods.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from prunebench.harness.errors import PrunebenchError
from prunebench.harness.measure.flops import count_macs
from prunebench.harness.measure.memory import count_params
from prunebench.harness.pruning.base import MethodInfo, PruneContext, PruningMethod, register_method
from prunebench.harness.pruning.config import PruningConfig
from prunebench.harness.pruning.options import Option, OptionSchema
from prunebench.harness.pruning.static.attention_scores import ratio_prune_idxs
from prunebench.harness.pruning.static.cut import Group
from prunebench.harness.pruning.static.recovery import FINETUNE_EPOCHS, FINETUNE_LR, ROUND_TO
from prunebench.harness.pruning.static.targets import parse_spec, resource_limit, uses_ratios

BUDGETS = ("params", "macs")


def _cost(net: nn.Module, example_input: torch.Tensor, kind: str) -> int:
    """The network's parameter count, or its MACs per input (``kind``: a budget kind)."""
    return count_params(net) if kind == "params" else count_macs(net, example_input[:1]).macs


def leaky_exp(x: torch.Tensor, alpha: float = 0.1) -> torch.Tensor:
    """Scores in (0, 1]: ``exp(x)`` for ``x <= 0``, ``exp(-alpha x)`` above; never a zero slope."""
    # one exp of a piecewise-linear argument: no overflow, slope exactly 1 at the start (x = 0)
    return torch.exp(torch.where(x <= 0, x, -alpha * x))


class FilterAttention(nn.Module):
    """Single-head self-attention over a layer's filters -> one score per filter."""

    def __init__(self, in_dim: int, hidden: int = 16, alpha: float = 0.1) -> None:
        super().__init__()
        self.q = nn.Linear(in_dim, hidden, bias=False)
        self.k = nn.Linear(in_dim, hidden, bias=False)
        self.v = nn.Linear(in_dim, hidden, bias=False)
        self.out = nn.Linear(hidden, 1)
        nn.init.zeros_(self.out.weight)  # every score starts at leaky_exp(0) = 1
        nn.init.zeros_(self.out.bias)
        self.alpha = alpha

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        """``w``: ``(filters, in_dim)`` weights -> ``(filters,)`` scores in (0, 1]."""
        w = (w - w.mean()) / (w.std() + 1e-8)
        q, k, v = self.q(w), self.k(w), self.v(w)
        att = torch.softmax(q @ k.T / math.sqrt(q.shape[1]), dim=1)
        return leaky_exp(self.out(att @ v).squeeze(1), self.alpha)


def _key(name: str) -> str:
    return name.replace(".", "__") or "_root"


def scale_sites(model: nn.Module, groups: Sequence[Group], example_input: torch.Tensor
                ) -> dict[str, str]:
    """Module whose output carries each member's channels: the norm reading it, else itself."""
    mods = dict(model.named_modules())
    produced: dict[int, tuple[str, torch.Tensor]] = {}  # tensors kept alive: ids stay unique
    sites: dict[str, str] = {}
    member_group = {m: g.name for g in groups for m in g.members}
    norms = {n for g in groups for n in g.norms}

    def out_hook(name: str):
        def fn(mod: nn.Module, args: Any, out: torch.Tensor) -> None:
            produced[id(out)] = (name, out)
        return fn

    def norm_hook(name: str):
        def fn(mod: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            src = produced.get(id(args[0]))
            if src is not None:
                sites[name] = member_group[src[0]]
                sites.pop(src[0], None)
        return fn

    def member_site(name: str):
        def fn(mod: nn.Module, args: Any, out: torch.Tensor) -> None:
            sites.setdefault(name, member_group[name])
        return fn

    handles = [mods[m].register_forward_hook(out_hook(m)) for m in member_group]
    handles += [mods[m].register_forward_hook(member_site(m)) for m in member_group]
    handles += [mods[n].register_forward_pre_hook(norm_hook(n)) for n in norms]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(example_input[:1])
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return sites


class PaamNetwork(nn.Module):
    """The CNN with one attention network per group; scores multiply the group's channels."""

    def __init__(self, net: nn.Module, groups: Sequence[Group], sites: Mapping[str, str],
                 hidden: int = 16, alpha: float = 0.1) -> None:
        super().__init__()
        self.net = net
        self.groups = list(groups)
        mods = dict(net.named_modules())
        self.attn = nn.ModuleDict({
            _key(g.name): FilterAttention(sum(mods[m].weight[0].numel() for m in g.members),
                                          hidden, alpha) for g in groups})
        self.sites = dict(sites)
        self._scores: dict[str, torch.Tensor] = {}
        self._handles = [mods[s].register_forward_hook(self._scaler(g))
                         for s, g in self.sites.items()]

    def _scaler(self, group: str):
        def fn(mod: nn.Module, args: Any, out: torch.Tensor) -> torch.Tensor:
            s = self._scores[group]
            return out * s.view(1, -1, *([1] * (out.dim() - 2)))
        return fn

    def scores(self) -> dict[str, torch.Tensor]:
        """Current score of every filter, per group (depends on the current weights)."""
        mods = dict(self.net.named_modules())
        out = {}
        for g in self.groups:
            w = torch.cat([mods[m].weight.detach().flatten(1) for m in g.members], dim=1)
            out[g.name] = self.attn[_key(g.name)](w)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Recompute the scores from the weights, then run the scaled CNN."""
        self._scores = self.scores()
        return self.net(x)

    def regulariser(self) -> torch.Tensor:
        """Sum of the scores of the last forward pass (all groups jointly)."""
        return torch.cat(list(self._scores.values())).sum()

    def fold_and_detach(self) -> nn.Module:
        """Fold the final scores into the CNN (exact in eval mode), drop hooks, return the CNN."""
        with torch.no_grad():
            scores = self.scores()
            mods = dict(self.net.named_modules())
            for site, group in self.sites.items():
                _fold(mods[site], scores[group], site)
        for h in self._handles:
            h.remove()
        self._handles = []
        return self.net


def _fold(mod: nn.Module, s: torch.Tensor, name: str) -> None:
    if isinstance(mod, nn.modules.batchnorm._BatchNorm):
        if not mod.affine:
            raise PrunebenchError(f"PAAM cannot fold scores into {name!r}: BatchNorm without "
                                  "affine parameters; use affine=True")
        mod.weight.mul_(s)
        mod.bias.mul_(s)
        return
    mod.weight.mul_(s.view(-1, *([1] * (mod.weight.dim() - 1))))
    if getattr(mod, "bias", None) is not None:
        mod.bias.mul_(s)


# ----------------------------------------------------------------------------- budget
def floor_count(channels: int, floor: float) -> int:
    """Filters a group of ``channels`` always keeps under a budget: ``ceil(floor x channels)``,
    at least one (``floor`` a fraction in [0, 1])."""
    return min(channels, max(1, math.ceil(floor * channels - 1e-9)))


def select_by_budget(net: nn.Module, example_input: torch.Tensor,
                     scores: Mapping[str, torch.Tensor], kind: str, limit: float,
                     floor: float = 0.0) -> tuple[dict[str, list[int]], dict[str, Any]]:
    """Keep filters by decreasing score while the cut network's ``kind`` stays <= ``limit``.

    Every group first keeps its :func:`floor_count` top-scored filters (``floor`` 0: its top
    one); ties keep the lower index. Returns the indices to remove per group and a summary.
    """
    from prunebench.harness.pruning.static.cut import cut_filters

    forced = {(g, int(i)) for g, s in scores.items()
              for i in torch.argsort(s, descending=True, stable=True)[:floor_count(len(s), floor)]}
    rest = sorted(((float(v), g, i) for g, s in scores.items() for i, v in enumerate(s)
                   if (g, i) not in forced), key=lambda r: (-r[0], r[1], r[2]))

    def prune_idxs(k: int) -> dict[str, list[int]]:
        keep = forced | {(g, i) for _, g, i in rest[:k]}
        return {g: [i for i in range(len(s)) if (g, i) not in keep] for g, s in scores.items()}

    def cost(k: int) -> int:
        idxs = {g: ii for g, ii in prune_idxs(k).items() if ii}
        cut = cut_filters(net, example_input, idxs) if idxs else net
        return _cost(cut, example_input, kind)

    if cost(0) > limit:
        what = ("one filter per layer" if floor == 0 else
                f"the per-group floor (group_floor={floor:g}: {len(forced)} filters)")
        hint = "" if floor == 0 else " or lower group_floor"
        raise PrunebenchError(f"budget {kind}={limit:.4g} is below what {what} needs "
                              f"({cost(0)}); raise the budget{hint}")
    lo, hi = 0, len(rest)  # cost(lo) <= limit; find the largest such k
    if cost(hi) <= limit:
        lo = hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if cost(mid) <= limit else (lo, mid)
    idxs = prune_idxs(lo)
    return ({g: ii for g, ii in idxs.items() if ii},
            {"kept_filters": len(forced) + lo, "total_filters": len(forced) + len(rest),
             kind: cost(lo), f"{kind}_limit": limit, "group_floor": floor,
             "kept_per_group": {g: len(scores[g]) - len(ii) for g, ii in idxs.items()},
             "at_floor": sorted(g for g, ii in idxs.items()
                                if len(scores[g]) - len(ii) == floor_count(len(scores[g]), floor)
                                and ii)})


# ----------------------------------------------------------------------------- method
class PAAM(PruningMethod):
    """Pruning by Active Attention Manipulation: learned analog filter scores, global budget."""

    info = MethodInfo(
        "paam", "static",
        "attention networks map each layer's filter weights to analog scores that scale its "
        "outputs during one joint training with a score-sum penalty; keep the top-scored "
        "filters under a global params/MACs budget",
        "Babaiee, Liebenwein, Hasani, Rus, Grosu 2022, Pruning by Active Attention "
        "Manipulation (arXiv:2210.11114)")
    options = OptionSchema(
        Option("budget", str, None, "global budget: params=Y or macs=Y (a fraction of dense when "
               "<= 1, else a count); or give ratios instead", example="params=0.5"),
        Option("epochs", int, None, "score-training epochs (default: the recipe's epochs from "
               "scratch, a third of them from a pretrained network)", min=0, example=2),
        Option("lr", float, None, "score-training learning rate (default: the recipe's lr from "
               "scratch, lr / 10 from a pretrained network)", min=0, min_exclusive=True,
               example=0.01),
        Option("lam", float, 1e-3, "weight of the score-sum penalty, per filter score", min=0),
        Option("from_scratch", bool, False, "the paper's one stage: re-initialise every weight "
               "(seeded) and train weights and scores together from random init, then cut; the "
               "given network's weights are not used"),
        Option("hidden", int, 16, "width of each attention network", min=1),
        Option("alpha", float, 0.1, "leak of the leaky exponential activation", min=0),
        Option("group_floor", float, 0.2, "with a budget, every coupled group keeps at least "
               "this fraction of its filters (rounded up, at least one), so a residual stream "
               "cannot collapse; 0 keeps only each group's top filter", min=0, max=1),
        FINETUNE_EPOCHS,
        FINETUNE_LR,
        dataclasses.replace(ROUND_TO, help=ROUND_TO.help + " (with ratios only)"),
    )

    def apply(self, model: nn.Module, config: PruningConfig, ctx: PruneContext) -> nn.Module:
        """Train scores on a copy of ``model``, cut it to the budget; ``model`` is untouched."""
        given = self.options.parse(self.info.name, config.options)
        has_ratio = uses_ratios(self.info.name, config, given, "budget",
                                "--budget params=0.5 or macs=0.5")
        opts = {**self.options.defaults(), **given}
        if ctx.splits is None and opts["epochs"] != 0:
            raise PrunebenchError("method 'paam' trains its scores on data; give --dataset "
                                  "(e.g. digits), or epochs=0 to cut on the initial scores")
        if opts["from_scratch"] and opts["epochs"] == 0:
            raise PrunebenchError("PAAM option from_scratch=true with epochs=0 would cut an "
                                  "untrained random network; give epochs >= 1 (or leave it "
                                  "unset: the recipe's epochs)")
        if has_ratio and "group_floor" in given:
            raise PrunebenchError("PAAM option group_floor applies to a budget only; with "
                                  "ratios each group's ratio sets its amount")
        x = ctx.example_input
        wrapped = train_scores(model, ctx, opts)
        final = {g: s.detach() for g, s in wrapped.scores().items()}
        net = wrapped.fold_and_detach().eval()
        if has_ratio:  # PAAM's scores choose the filters, the search's ratios the amount
            idxs = ratio_prune_idxs(net, x, final, config.ratios, config.global_ratio,
                                    opts["round_to"])
            summary: dict[str, Any] = {"ratios": True}
        else:
            kind, value = parse_spec(opts["budget"], BUDGETS, "budget", "params=0.5")
            limit = resource_limit(value, _cost(model, x, kind))
            idxs, summary = select_by_budget(net, x, final, kind, limit, opts["group_floor"])
        return self._cut(net, idxs, summary, final, ctx, opts)

    def _cut(self, net: nn.Module, idxs: Mapping[str, list[int]], summary: dict[str, Any],
             scores: Mapping[str, torch.Tensor], ctx: PruneContext, opts: Mapping[str, Any]
             ) -> nn.Module:
        from prunebench.harness.pruning.static.cut import cut_filters
        from prunebench.harness.pruning.static.recovery import finish_cut

        pruned = finish_cut(cut_filters(net, ctx.example_input, idxs) if idxs
                            else copy.deepcopy(net), ctx, opts, desc="paam finetune")
        allscores = torch.cat(list(scores.values()))
        pruned.prunebench_paam = {**summary, "from_scratch": opts["from_scratch"],
                                  "score_min": float(allscores.min()),
                                  "score_median": float(allscores.median()),
                                  "score_max": float(allscores.max())}
        return pruned.eval()


def train_scores(model: nn.Module, ctx: PruneContext, opts: Mapping[str, Any]) -> PaamNetwork:
    """A copy of ``model`` wrapped with attention networks, trained jointly (one stage).

    ``opts`` are PAAM's parsed options; missing ones take ``PAAM.options``' defaults.
    """
    from prunebench.harness.pruning.static.cut import coupled_groups
    from prunebench.harness.train import DEFAULT_RECIPE, train_model

    opts = {**PAAM.options.defaults(), **opts}
    net = copy.deepcopy(model)
    scratch = opts["from_scratch"]
    if scratch:
        reinitialise(net, ctx.seed)
    groups = coupled_groups(net, ctx.example_input)
    sites = scale_sites(net, groups, ctx.example_input)
    with torch.random.fork_rng(devices=[]):  # the attention networks' start repeats per seed
        torch.manual_seed(ctx.seed)
        wrapped = PaamNetwork(net, groups, sites, opts["hidden"], opts["alpha"])
    base = ctx.recipe or DEFAULT_RECIPE
    epochs = opts["epochs"]
    if epochs is None:
        epochs = base.epochs if scratch else max(1, base.epochs // 3)
    if epochs:
        lr = opts["lr"]
        if lr is None:
            lr = base.lr if scratch else base.lr / 10
        lam = opts["lam"]
        train_model(wrapped, ctx.splits, base.with_(epochs=epochs, lr=lr),
                    loss_hook=lambda m, x, o, y: lam * m.regulariser(),
                    progress=ctx.progress, desc="paam")
    return wrapped.eval()


def reinitialise(net: nn.Module, seed: int) -> None:
    """Random weights in place (PAAM from scratch), seeded: every layer's own
    ``reset_parameters`` (BatchNorm: scale 1, shift 0, fresh statistics), then convolutions
    He-normal (fan-out, ReLU), the initialisation of the zoo's networks and torchvision's ResNets.

    A module holding parameters without ``reset_parameters`` cannot be re-initialised and raises
    rather than keep its trained weights.
    """
    for name, m in net.named_modules():
        if any(True for _ in m.parameters(recurse=False)) and not hasattr(m, "reset_parameters"):
            raise PrunebenchError(f"PAAM from_scratch=true cannot re-initialise module "
                                  f"{name!r} ({type(m).__name__}: parameters but no "
                                  "reset_parameters); give that module a reset_parameters "
                                  "method or use from_scratch=false")
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for m in net.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


register_method(PAAM())
