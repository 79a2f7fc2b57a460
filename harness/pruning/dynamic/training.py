"""Training for dynamic pruning: AntiDote's targeted dropout and instance-wise feature decay.

Both attach forward hooks to the gated feature maps (the gate modules of
``sites.py``) of an
ordinary network, so the trained weights load into the unmodified architecture; remove the hooks
(``.remove()``) before saving or evaluating.

- :class:`TargetedDropout` (AntiDote's training phase): in training mode, for each input the
  fraction ``gamma`` of channels (and, with ``columns``, of spatial positions) with the lowest
  attention is *targeted*, and each targeted unit is dropped (zeroed) with probability ``alpha``.
  The network learns to do without the units the test-time gates remove. With ``sample=1``
  each input draws its own fraction from ``[0, gamma]`` (use alpha=1: the exact test-time rule
  at every keep-ratio the search may ask for); with ``order="calibrated"`` (``prunebench
  finetune --method antidote_fast``) the targeted channels are the tail of a static per-layer
  order (running mean attention), i.e. the nested-width ("ordered dropout") training that
  matches ``antidote_fast``'s prefix widths. With ``inputs`` (``inputs=1`` in the CLI setting)
  each residual block's input channels are targeted too, in front of its first conv only, for
  ``antidote`` with its option ``inputs=1``. What each recipe recovers is measured by
  ``benchmarks/accuracy_dynamic.py`` (its recorded figures: ``docs/benchmarks.md``).
- :class:`FeatureDecay` (Liu et al. 2019): an instance-wise l2,1 penalty ``lambda_t x
  sum_sites mean_inputs sum_channels ||z_c||_2 / sqrt(HW)`` on the gated feature maps (each
  input's channel norms are summed, so for each input many channels are driven to silence),
  returned by :meth:`loss_hook` for ``prunebench.harness.train.train_model(..., loss_hook=...)``.
  Its weight ``lambda_t`` ramps linearly from 0 to ``lambda`` over the first ``warmup_steps``
  optimiser steps, then stays (``finetune_dynamic``: the first quarter of the steps), so that the
  penalty does not silence channels before the classifier has adapted to the fine-tuning.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from prunebench.harness.errors import PrunebenchError
from prunebench.harness.pruning.dynamic.gates import channel_attention
from prunebench.harness.pruning.dynamic.sites import get_module, require_sites


def _bottom_mask(att: torch.Tensor, fraction: float | torch.Tensor) -> torch.Tensor:
    """Boolean mask of the ``floor(fraction * n)`` lowest entries per row of ``att`` (B, n);
    ``fraction`` is one number or one per row (B,)."""
    n = att.shape[1]
    if not torch.is_tensor(fraction):
        k = int(math.floor(fraction * n))
        mask = torch.zeros_like(att, dtype=torch.bool)
        if k > 0:
            mask.scatter_(1, att.topk(k, dim=1, largest=False).indices, True)
        return mask
    k = torch.floor(fraction.to(att.device, torch.float64) * n + 1e-9).long()  # (B,)
    rank = att.argsort(dim=1).argsort(dim=1)  # 0 = lowest
    return rank < k[:, None]


def _prefix_tail_mask(order_score: torch.Tensor, fraction: torch.Tensor, batch: int
                      ) -> torch.Tensor:
    """(B, n) mask of the last ``floor(fraction_i * n)`` channels of the static order given by
    descending ``order_score`` (n,): the channels a prefix width leaves out."""
    n = order_score.numel()
    pos = torch.empty(n, dtype=torch.long)
    pos[order_score.argsort(descending=True).cpu()] = torch.arange(n)
    k = torch.floor(fraction.double() * n + 1e-9).long()
    return (pos[None].expand(batch, n) >= (n - k)[:, None]).to(order_score.device)


class TargetedDropout:
    """Targeted dropout on every gated feature map of ``model`` while it is training.

    ``sample``: each input draws its own targeted fraction uniformly from ``[0, gamma]`` (the
    network learns every keep-ratio up to ``1 - gamma``, as the search will ask for). ``order``:
    ``"attention"`` targets each input's lowest-attention channels (AntiDote's exact rule);
    ``"calibrated"`` targets the tail of one static order per layer, the running mean attention
    over training inputs (what ``antidote_fast`` keeps: a prefix of its calibrated order).
    """

    def __init__(self, model: nn.Module, gamma: float, alpha: float, *, columns: bool = False,
                 seed: int = 0, sample: bool = False, order: str = "attention",
                 momentum: float = 0.1, inputs: bool = False) -> None:
        for key, v in (("gamma", gamma), ("alpha", alpha)):
            if not 0.0 <= v <= 1.0:
                raise PrunebenchError(f"targeted dropout {key}={v!r} is outside [0, 1]; use e.g. "
                                      "gamma=0.5,alpha=0.5")
        if order not in ("attention", "calibrated"):
            raise PrunebenchError(f"targeted dropout order={order!r} is unknown; use "
                                  "'attention' (antidote) or 'calibrated' (antidote_fast)")
        if inputs and order == "calibrated":
            raise PrunebenchError("targeted dropout inputs=1 trains AntiDote's input gates; "
                                  "antidote_fast gates block internals only, drop inputs=1")
        self.gamma, self.alpha, self.columns = float(gamma), float(alpha), columns
        self.sample, self.order, self.momentum = sample, order, float(momentum)
        self.generator = torch.Generator().manual_seed(seed)
        self.running: dict[int, torch.Tensor] = {}
        self._hooks = []
        for site in require_sites(model, "antidote", inputs=inputs):
            if site.is_input:  # drop the consumer's own input channels (not the shortcut's)
                self._hooks.append(get_module(model, site.consumer).register_forward_pre_hook(
                    lambda m, args: (self._hook(m, args, args[0], columns=False), *args[1:])))
            else:  # the gate's output, activated as the site says, decides what is dropped
                self._hooks.append(get_module(model, site.gate).register_forward_hook(
                    lambda m, args, z, site=site: self._hook(m, args, z, att_of=site.gated_map)))

    def _drop(self, shape: tuple[int, ...], targeted: torch.Tensor) -> torch.Tensor:
        if self.alpha >= 1.0:
            return ~targeted
        coin = torch.rand(shape, generator=self.generator) < self.alpha
        return ~(targeted & coin.to(targeted.device))

    def _fractions(self, batch: int) -> float | torch.Tensor:
        if not self.sample:
            return self.gamma
        return torch.rand(batch, generator=self.generator, dtype=torch.float64) * self.gamma

    def _hook(self, module: nn.Module, inputs: tuple, z: torch.Tensor,
              columns: bool = True, att_of: Callable | None = None) -> torch.Tensor:
        if not module.training or self.gamma == 0.0 or self.alpha == 0.0:
            return z
        with torch.no_grad():
            a = att_of(z) if att_of is not None else z  # the map as activated (site.act)
            att = channel_attention(a)
            frac = self._fractions(z.shape[0])
            if self.order == "calibrated":
                mean = att.mean(0)
                run = self.running.get(id(module))
                run = mean if run is None else run.mul_(1 - self.momentum).add_(
                    mean, alpha=self.momentum)
                self.running[id(module)] = run
                fr = frac if torch.is_tensor(frac) else torch.full((z.shape[0],), frac,
                                                                    dtype=torch.float64)
                targeted = _prefix_tail_mask(run, fr, z.shape[0])
            else:
                targeted = _bottom_mask(att, frac)
            keep = self._drop(tuple(att.shape), targeted)[:, :, None, None]
            if self.columns and columns:  # input sites gate channels only, as at test time
                col = a.abs().mean(1).flatten(1)
                keep_col = self._drop(tuple(col.shape), _bottom_mask(col, frac))
                keep = keep & keep_col.view(z.shape[0], 1, *z.shape[2:])
        return z * keep.to(z.dtype)

    def remove(self) -> None:
        """Detach the hooks (the model is an ordinary network again)."""
        for h in self._hooks:
            h.remove()
        self._hooks = []


class FeatureDecay:
    """Collects the gated feature maps during training and returns their l2,1 penalty.

    ``warmup_steps``: the weight ramps linearly from ``strength / warmup_steps`` at the first
    penalised step to ``strength`` at step ``warmup_steps`` (0: ``strength`` from the start).
    """

    def __init__(self, model: nn.Module, strength: float, warmup_steps: int = 0) -> None:
        if not strength >= 0.0:
            raise PrunebenchError(f"feature decay {strength!r} must be >= 0; use e.g. 1e-4")
        if not (isinstance(warmup_steps, int) and warmup_steps >= 0):
            raise PrunebenchError(f"feature decay warm-up {warmup_steps!r} must be a whole "
                                  "number of steps >= 0; use e.g. 100")
        self.strength = float(strength)
        self.warmup_steps = warmup_steps
        self.steps = 0  # penalties returned so far
        self._maps: list[torch.Tensor] = []
        self._hooks = [get_module(model, s.gate).register_forward_hook(
            lambda m, args, z, s=s: self._hook(m, args, s.gated_map(z)))
            for s in require_sites(model, "instance_sparsity")]

    def _hook(self, module: nn.Module, inputs: tuple, z: torch.Tensor) -> None:
        if module.training:
            self._maps.append(z)

    def weight(self) -> float:
        """The penalty's weight at the current step (the schedule above)."""
        if self.warmup_steps == 0:
            return self.strength
        return self.strength * min(1.0, (self.steps + 1) / self.warmup_steps)

    def penalty(self) -> torch.Tensor | None:
        """The l2,1 penalty of the maps seen since the last call (and forget them); each call
        that returns one is one step of the weight's schedule."""
        maps, self._maps = self._maps, []
        if not maps or self.strength == 0.0:
            return None
        total = sum(channel_attention(z, 2.0).sum(1).mean() for z in maps)
        weight = self.weight()
        self.steps += 1
        return weight * total

    def loss_hook(self, model: nn.Module, inputs: torch.Tensor, outputs: torch.Tensor,
                  targets: torch.Tensor) -> torch.Tensor | None:
        """``harness.train.train_model`` loss hook: the penalty of this step's forward."""
        return self.penalty()

    def remove(self) -> None:
        """Detach the hooks."""
        for h in self._hooks:
            h.remove()
        self._hooks = []


def parse_targeted_dropout(text: str) -> dict[str, float]:
    """``"gamma=0.5,alpha=0.5[,columns=1][,sample=1][,inputs=1]"`` -> dict (gamma, alpha, columns
    always; sample and inputs only when given); errors name the bad part and the form."""
    out = {"gamma": 0.5, "alpha": 0.5, "columns": 0.0}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        try:
            if not sep or key not in (*out, "sample", "inputs"):
                raise ValueError
            out[key] = float(value)
        except ValueError:
            raise PrunebenchError(f"targeted dropout setting {part!r} is not understood; give "
                                  "e.g. gamma=0.5,alpha=0.5 (optionally columns=1, sample=1, "
                                  "inputs=1)") from None
    return out


def finetune_dynamic(model: nn.Module, splits: object, recipe: object, *,
                     targeted_dropout: dict[str, float] | None = None,
                     feature_decay: float | None = None, order: str = "attention",
                     teacher: nn.Module | None = None, kd_alpha: float = 0.0,
                     feature_decay_warmup: float = 0.25, progress: bool = True) -> nn.Module:
    """Fine-tune ``model`` in place for dynamic pruning (targeted dropout and/or feature decay,
    neither = plain fine-tuning) with ``harness.train.train_model``; returns it in eval mode
    with every hook removed, so it is an ordinary network of the same architecture.
    ``order`` is :class:`TargetedDropout`'s (``"calibrated"`` trains for ``antidote_fast``).
    ``teacher``/``kd_alpha``: distil from (typically) the dense base model, as slimmable networks'
    in-place distillation; on digits it lifts antidote_fast at keep 0.5 from 94 % to 98 % val.
    ``feature_decay_warmup``: the fraction of all optimiser steps over which the feature decay's
    weight ramps up to ``feature_decay`` (:class:`FeatureDecay`; 0: constant)."""
    from prunebench.harness.train import train_model

    attached: list[TargetedDropout | FeatureDecay] = []
    hook = None
    try:
        if targeted_dropout:
            attached.append(TargetedDropout(
                model, targeted_dropout.get("gamma", 0.5), targeted_dropout.get("alpha", 0.5),
                columns=bool(targeted_dropout.get("columns", 0.0)),
                sample=bool(targeted_dropout.get("sample", 0.0)), order=order,
                seed=getattr(recipe, "seed", 0),
                inputs=bool(targeted_dropout.get("inputs", 0.0))))
        if feature_decay:
            if not 0.0 <= feature_decay_warmup <= 1.0:
                raise PrunebenchError(f"feature decay warm-up {feature_decay_warmup!r} is "
                                      "outside [0, 1] (a fraction of the steps); use e.g. 0.25")
            decay = FeatureDecay(model, feature_decay, math.ceil(
                feature_decay_warmup * _steps(splits, recipe)))
            attached.append(decay)
            hook = decay.loss_hook
        train_model(model, splits, recipe, loss_hook=hook, progress=progress,  # type: ignore
                    teacher=teacher, kd_alpha=kd_alpha if teacher is not None else 0.0,
                    desc="finetune (dynamic)")
    finally:
        for a in attached:
            a.remove()
    return model.eval()


def _steps(splits: object, recipe: object) -> int:
    """Optimiser steps of ``train_model(model, splits, recipe)`` (its loader drops a last
    partial batch when the train split holds more than one batch)."""
    n, bs = len(splits.train), int(recipe.batch_size)  # type: ignore[attr-defined]
    per_epoch = n // bs if n > bs else 1
    return int(recipe.epochs) * per_epoch  # type: ignore[attr-defined]
