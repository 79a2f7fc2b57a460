"""AAP: Automatic Attention Pruning (Zhao, Jain, Zhao; AISTATS 2023).

*Importance*: the activation-based attention of a filter, ``mean |A|^p`` of its post-activation
output ``A`` over a calibration set drawn from the **train** split (never test). The tensor used is
the one the next layers actually read (the input of the group's consumer layers), so for a
residual stage it is the activation after the addition; a consumer that reads a globally pooled
vector (the classifier) sees the spatial mean, to which ``p`` is then applied.

*Amount*: one global threshold ``T`` (in units of the dense network's median filter score) scaled
per coupled group by that group's share of the network's weights (or MACs, ``share=macs``),
normalised so that a group with the average share gets exactly ``T``. Filters whose score is below
their group's threshold are cut physically (``harness.pruning.static.cut.cut_filters``). The paper's
rule can empty a layer; here a group whose every filter falls below the threshold keeps its
highest-scored filter (a stated bound, logged per round as ``kept_one``).

*Policy*: rounds of prune-then-fine-tune (``round_epochs`` each,
1 by default), raising ``T`` by ``step`` while the target holds; when it fails, the last good
network is restored and the step halved; stop after ``max_rounds`` or when ``step < min_step``.
Targets (``options["target"]``): ``accuracy-loss=X`` (val top-1 loss at most X points),
``params=Y`` / ``macs=Y`` (a count, or a fraction of dense when at most 1) and ``latency-ms=Z``
(p50 on ``ctx.profile``: the dense p50, measured first, divided by the candidate's speedup
over dense from interleaved rounds, so machine drift between rounds cancels). Every round is logged
to ``ctx.run_dir/aap_rounds.{jsonl,csv}`` when a run folder is given.

Options: ``target``; ``p`` (1), ``share`` (``params`` | ``macs``), ``step`` (0.25) and
``min_step`` (step / 8) in units of the dense median score, ``max_rounds`` (8 trained rounds;
rounds that prune nothing or repeat a tried cut train nothing and are not counted),
``round_epochs`` (1), ``finetune_lr`` (recipe lr, rewound), ``calib_samples`` (512), ``guard``
(5): with a resource target, a round whose val top-1 falls more than ``guard`` points below dense
is rejected like a failed accuracy round (restore, halve the step), so a noisy or unreachable
limit never drives the network to chance accuracy; if no round met the limit within the guard,
the run fails naming the best value reached. A latency
target's candidates are re-measured before one is returned (timing is noisy). With ``ratios`` /
``global_ratio`` instead of a target, the attention scores choose the filters and the ratios
the amount (``round_to``, ``finetune_epochs`` apply), as for the other static methods.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from prunebench.harness.errors import PrunebenchError
from prunebench.harness.pruning.base import MethodInfo, PruneContext, PruningMethod, register_method
from prunebench.harness.pruning.config import PruningConfig
from prunebench.harness.pruning.static.cut import Group

SHARES = ("params", "macs")


# ----------------------------------------------------------------------------- options
def amount_options(method: str, config: PruningConfig, allowed: Mapping[str, type],
                   amount_key: str, example: str) -> tuple[dict[str, Any], bool]:
    """Typed options of an attention-driven static method and whether ratios set the amount.

    Such a method takes exactly one of its own amount (``amount_key`` in the options, e.g. AAP's
    target or PAAM's budget) or ratios; keep-ratios and execution modes are dynamic-only.
    """
    if config.keep or config.global_keep is not None or config.exec_mode:
        raise PrunebenchError(f"static method {method!r} takes a {amount_key} (or ratios), not "
                              "keep-ratios or an execution mode")
    opts = coerce_options(method, config.options, allowed)
    has_ratio = bool(config.ratios) or config.global_ratio is not None
    if has_ratio == (amount_key in opts):
        raise PrunebenchError(f"method {method!r} needs exactly one of a {amount_key} "
                              f"({example}) or ratios")
    return opts, has_ratio


def coerce_options(method: str, options: Mapping[str, Any],
                   allowed: Mapping[str, type]) -> dict[str, Any]:
    """Typed options; strings from the command line are converted, unknown keys raise."""
    out: dict[str, Any] = {}
    for key, value in options.items():
        kind = allowed.get(key)
        if kind is None:
            raise PrunebenchError(f"method {method!r} takes no option {key!r}; its options: "
                                  f"{', '.join(sorted(allowed))}")
        try:
            if kind is bool and isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                value = value.lower() in ("true", "1", "yes")
            elif kind in (int, float) and isinstance(value, bool):
                raise ValueError(value)
            elif kind is int and isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            out[key] = value if kind is object else kind(value)
        except (TypeError, ValueError):
            raise PrunebenchError(f"option {key}={value!r} of method {method!r} must be a "
                                  f"{kind.__name__}") from None
    return out


def parse_spec(text: Any, kinds: Sequence[str], what: str, example: str) -> tuple[str, float]:
    """``"kind=value"`` (or a one-item dict) -> ``(kind, value)``; errors name the fix."""
    if isinstance(text, Mapping) and len(text) == 1:
        text = "{}={}".format(*next(iter(text.items())))
    if not isinstance(text, str) or text.count("=") != 1:
        raise PrunebenchError(f"{what} {text!r} is not KIND=VALUE; use e.g. {example} "
                              f"(kinds: {', '.join(kinds)})")
    kind, raw = (s.strip() for s in text.split("="))
    if kind not in kinds:
        raise PrunebenchError(f"unknown {what} kind {kind!r} in {text!r}; use one of "
                              f"{', '.join(kinds)} (e.g. {example})")
    try:
        value = float(raw)
    except ValueError:
        raise PrunebenchError(f"{what} value {raw!r} in {text!r} is not a number; use e.g. "
                              f"{example}") from None
    if not value > 0 and not (kind == "accuracy-loss" and value == 0):
        raise PrunebenchError(f"{what} value {value} in {text!r} must be positive; use e.g. "
                              f"{example}")
    return kind, value


def resource_limit(value: float, dense: float) -> float:
    """A count, or a fraction of the dense figure when ``value <= 1``."""
    return value * dense if value <= 1 else value


# ----------------------------------------------------------------------------- costs
def model_cost(model: nn.Module, example_input: torch.Tensor) -> tuple[int, int]:
    """``(params, macs)`` of one forward pass on ``example_input`` (batch 1).

    MACs are counted by ``torch.utils.flop_counter`` (FLOPs / 2), as the harness counts them.
    """
    from torch.utils.flop_counter import FlopCounterMode

    params = sum(p.numel() for p in model.parameters())
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(example_input[:1])
    finally:
        model.train(was_training)
    return params, counter.get_total_flops() // 2


def group_shares(model: nn.Module, groups: Sequence[Group], example_input: torch.Tensor,
                 by: str = "params") -> dict[str, float]:
    """Each group's share (summing to 1) of its members' weights, or of their MACs."""
    if by not in SHARES:
        raise PrunebenchError(f"option share={by!r} must be one of {', '.join(SHARES)}")
    mods = dict(model.named_modules())
    cost: dict[str, float] = {}
    if by == "params":
        for g in groups:
            cost[g.name] = float(sum(mods[m].weight.numel() for m in g.members))
    else:
        member_macs: dict[str, float] = {}

        def hook(name: str):
            def fn(mod: nn.Module, inp: Any, out: torch.Tensor) -> None:
                member_macs[name] = float(out[0].numel() * mod.weight[0].numel())
            return fn

        handles = [mods[m].register_forward_hook(hook(m)) for g in groups for m in g.members]
        try:
            with torch.no_grad():
                model.eval()(example_input[:1])
        finally:
            for h in handles:
                h.remove()
        for g in groups:
            cost[g.name] = sum(member_macs.get(m, 0.0) for m in g.members)
    total = sum(cost.values()) or 1.0
    return {k: v / total for k, v in cost.items()}


# ----------------------------------------------------------------------------- importance
def calibration_set(ctx: PruneContext, n: int) -> Dataset:
    """``n`` seeded items of the **train** split (the only split AAP scores on)."""
    if ctx.splits is None:
        raise PrunebenchError("AAP needs a data set to compute activation attention; give "
                              "--dataset (e.g. digits)")
    train = ctx.splits.train
    size = len(train)  # type: ignore[arg-type]
    gen = torch.Generator().manual_seed(ctx.seed)
    idx = torch.randperm(size, generator=gen)[:max(1, min(n, size))].tolist()
    return train.subset(idx) if hasattr(train, "subset") else Subset(train, idx)


def filter_attention(model: nn.Module, groups: Sequence[Group], data: Dataset, p: float = 1.0,
                     batch_size: int = 128) -> dict[str, torch.Tensor]:
    """Per group, each filter's attention ``mean |A|^p`` over ``data`` (eval mode, no grad).

    ``A`` is what the group's consumer layers read; scores of several consumers are averaged.
    """
    from prunebench.harness.datasets import make_loader

    mods = dict(model.named_modules())
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def hook(name: str):
        def fn(mod: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            a = args[0].detach().abs().pow(p).transpose(0, 1).reshape(args[0].shape[1], -1)
            sums[name] = sums.get(name, 0) + a.sum(dim=1).double()
            counts[name] = counts.get(name, 0) + a.shape[1]
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
        per = [(sums[c] / counts[c]).float() for c in g.consumers
               if c in sums and len(sums[c]) == g.channels]
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
    from prunebench.harness.pruning.static.cut import coupled_groups, keep_count, resolve_ratios

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


# ----------------------------------------------------------------------------- policy
# ----------------------------------------------------------------------------- method
AAP_OPTIONS: dict[str, type] = {
    "target": object, "p": float, "share": str, "step": float, "min_step": float,
    "max_rounds": int, "round_epochs": int, "finetune_lr": float, "calib_samples": int,
    "guard": float,
    "round_to": int, "finetune_epochs": int,
}


class AAP(PruningMethod):
    """Automatic Attention Pruning: adaptive, target-driven activation-attention pruning."""

    info = MethodInfo(
        "aap", "static",
        "activation-attention filter scores, one global threshold scaled by each layer's weight "
        "share, adaptive prune/fine-tune rounds to an accuracy, memory or latency target",
        "Zhao, Jain, Zhao 2023, Automatic Attention Pruning: Improving and Automating Model "
        "Pruning using Attentions (AISTATS)")

    def apply(self, model: nn.Module, config: PruningConfig, ctx: PruneContext) -> nn.Module:
        """The network the adaptive policy stopped at (a pruned copy; ``model`` is untouched).

        With ``ratios`` / ``global_ratio`` instead of a target, AAP's attention scores choose
        the filters and the ratios the amount (one cut, ``finetune_epochs`` after it).
        """
        opts, has_ratio = amount_options("aap", config, AAP_OPTIONS, "target",
                                         "--target accuracy-loss=0.5, params=0.5 or "
                                         "latency-ms=1.2")
        if has_ratio:
            return self._ratio_cut(model, config, opts, ctx)
        for key in ("round_to", "finetune_epochs"):
            if key in opts:
                raise PrunebenchError(f"AAP option {key} applies to ratios only; with a target "
                                      "use round_epochs")
        from prunebench.harness.pruning.static.aap_policy import AapSettings, run_policy

        return run_policy(model, AapSettings.from_options(opts), ctx)

    def _ratio_cut(self, model: nn.Module, config: PruningConfig, opts: Mapping[str, Any],
                   ctx: PruneContext) -> nn.Module:
        from prunebench.harness.pruning.static.cut import coupled_groups, cut_filters
        from prunebench.harness.pruning.static.recovery import finish_cut

        if opts.get("round_to", 1) < 1:
            raise PrunebenchError(f"option round_to={opts['round_to']} must be >= 1 (e.g. 8)")
        x = ctx.example_input
        groups = coupled_groups(model, x)
        scores = filter_attention(model, groups, calibration_set(ctx, opts.get(
            "calib_samples", 512)), opts.get("p", 1.0))
        idxs = ratio_prune_idxs(model, x, scores, config.ratios, config.global_ratio,
                                opts.get("round_to", 1))
        return finish_cut(cut_filters(model, x, idxs), ctx, opts, desc="aap finetune")


register_method(AAP())
