"""AAP's adaptive policy: prune-then-fine-tune rounds to an accuracy, memory or latency target.

See :mod:`harness.pruning.static.aap` for the method; its scores and threshold rule are in
:mod:`harness.pruning.static.attention_scores`, its options (:data:`AAP_OPTIONS`) here. Each round
raises the global threshold ``T`` by ``step``; a round that breaks the target restores the last
good network and halves the step (a *reset*). As the paper, the run stops at the ``max_resets``-th
(3rd) reset in a row after a good round, and otherwise after ``max_rounds`` trained rounds, when the
step falls below ``min_step`` or when nothing is left to prune. Rounds are logged to
``aap_rounds.{jsonl,csv}`` in the run folder.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import io
import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunebench.harness.errors import PrunebenchError
from prunebench.harness.files import write_atomic
from prunebench.harness.measure.flops import count_macs
from prunebench.harness.measure.memory import count_params
from prunebench.harness.pruning.base import PruneContext
from prunebench.harness.pruning.calibration import calibration_set, samples_option
from prunebench.harness.pruning.options import Option, OptionSchema
from prunebench.harness.pruning.static.attention_scores import (
    SHARES,
    filter_attention,
    group_shares,
    median_score,
    select_below_threshold,
)
from prunebench.harness.pruning.static.recovery import FINETUNE_EPOCHS, FINETUNE_LR, ROUND_TO
from prunebench.harness.pruning.static.targets import parse_spec, resource_limit

TARGETS = ("accuracy-loss", "params", "macs", "latency-ms")
# validation images handed to the latency timer, which regroups them into batches of the
# profile's batch size (batch 1 on cpu-1t: one image at a time) and cycles through up to 16
LATENCY_IMAGES = 32
_EXAMPLE = "accuracy-loss=0.5"
# AAP's options (``AAP.options``), the policy's and the ratio mode's: here, beside the
# settings they fill, so that aap.py imports this module and not the reverse
AAP_OPTIONS = OptionSchema(
    Option("target", str, None, "what the adaptive policy keeps: accuracy-loss=X (val top-1 "
           "points), params=Y or macs=Y (a count, or a fraction of dense when <= 1), "
           "latency-ms=Z (p50 on the profile); or give ratios instead",
           example="accuracy-loss=0.5"),
    Option("p", float, 1.0, "exponent of the attention mean |A|^p", min=0, min_exclusive=True),
    Option("share", str, "params", "what scales each group's threshold: its share of the "
           "weights or of the MACs", choices=SHARES),
    Option("step", float, 0.25, "threshold increase per round, in units of the dense median "
           "filter score", min=0, min_exclusive=True),
    Option("min_step", float, None, "stop once the halved step falls below this (default: "
           "step / 8)", min=0, min_exclusive=True, example=0.03),
    Option("max_rounds", int, 8, "trained rounds at most", min=0),
    Option("max_resets", int, 3, "stop at this many resets in a row (a round that breaks the "
           "target: restore the last good network, halve the step) after a good round; the "
           "paper's rule is 3", min=1),
    Option("round_epochs", int, 1, "fine-tuning epochs per round", min=0),
    FINETUNE_LR,
    samples_option(512),
    Option("guard", float, 5.0, "with a resource target, reject a round whose val top-1 "
           "falls more than this many points below dense", min=0, max=100,
           min_exclusive=True),
    dataclasses.replace(ROUND_TO, help=ROUND_TO.help + " (with ratios only)"),
    dataclasses.replace(FINETUNE_EPOCHS, help=FINETUNE_EPOCHS.help + " (with ratios only)"),
)
_DEFAULTS = AAP_OPTIONS.defaults()


@dataclass(frozen=True)
class AapSettings:
    """The adaptive policy's settings (``PruningConfig.options`` keys of the same name; their
    types, ranges and defaults are :data:`AAP_OPTIONS`).

    ``step`` and ``min_step`` are in units of the dense network's median filter score;
    ``max_resets`` the resets in a row after a good round that end the run;
    ``round_epochs`` is the fine-tuning per round (train split, lr ``finetune_lr`` or the
    recipe's lr, rewound).
    """

    target_kind: str
    target_value: float
    p: float = _DEFAULTS["p"]
    share: str = _DEFAULTS["share"]
    step: float = _DEFAULTS["step"]
    min_step: float = _DEFAULTS["step"] / 8
    max_rounds: int = _DEFAULTS["max_rounds"]
    max_resets: int = _DEFAULTS["max_resets"]
    round_epochs: int = _DEFAULTS["round_epochs"]
    finetune_lr: float | None = _DEFAULTS["finetune_lr"]
    calibration_samples: int = _DEFAULTS["calibration_samples"]
    guard: float = _DEFAULTS["guard"]

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> AapSettings:
        """Settings from AAP's options (parsed with :data:`AAP_OPTIONS`); bad values raise
        naming the option and the fix."""
        opts = {**_DEFAULTS, **AAP_OPTIONS.parse("aap", options)}
        kind, value = parse_spec(opts["target"], TARGETS, "target", _EXAMPLE)
        if opts["min_step"] is None:
            opts["min_step"] = opts["step"] / 8
        if opts["min_step"] > opts["step"]:
            raise PrunebenchError(f"AAP option min_step={opts['min_step']!r} is invalid; use a "
                                  f"value in (0, step] (step is {opts['step']!r})")
        fields = {f.name for f in dataclasses.fields(cls)} - {"target_kind", "target_value"}
        return cls(kind, value, **{k: opts[k] for k in fields})


class _RoundLog:
    """Rounds appended to ``aap_rounds.jsonl`` and rewritten to ``aap_rounds.csv`` (atomic)."""

    _CSV = ("round", "t", "step", "action", "pruned_filters", "channels", "params", "macs",
            "val_top1", "latency_p50_ms", "latency_p50_ms_raw", "speedup", "kept_one",
            "elapsed_s")

    def __init__(self, run_dir: Path | None) -> None:
        self.rows: list[dict[str, Any]] = []
        self.dir = Path(run_dir) if run_dir is not None else None
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)
            (self.dir / "aap_rounds.jsonl").write_text("")

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if self.dir is None:
            return
        with open(self.dir / "aap_rounds.jsonl", "a") as fh:
            fh.write(json.dumps(row, sort_keys=True) + "\n")
        buf = io.StringIO()
        w = csv.DictWriter(buf, self._CSV, extrasaction="ignore")
        w.writeheader()
        for r in self.rows:
            w.writerow({**r, "kept_one": ";".join(r.get("kept_one", []))})
        write_atomic(self.dir / "aap_rounds.csv", buf.getvalue())


def _measure(model: nn.Module, ctx: PruneContext, latency: bool,
             dense: tuple[nn.Module, float] | None = None) -> dict[str, Any]:
    """Params, MACs, val top-1 and (``latency``) the p50 on ``ctx.profile``.

    Latency is timed at the profile's batch size on :data:`LATENCY_IMAGES` validation images.
    With ``dense = (dense network, its p50 in ms)``, the candidate is timed in interleaved rounds
    against the dense network and its p50 is reported as ``dense p50 / speedup``: a shared
    machine's slow and fast minutes then move both networks alike instead of moving the verdict.
    The candidate's own pooled p50 is kept as ``latency_p50_ms_raw``.
    """
    from prunebench.harness.measure.accuracy import accuracy

    params, macs = count_params(model), count_macs(model, ctx.example_input[:1]).macs
    out: dict[str, Any] = {"params": params, "macs": macs,
                           "val_top1": accuracy(model, ctx.splits.val).top1,  # type: ignore
                           "latency_p50_ms": None}
    if latency:
        from prunebench.harness.datasets import make_loader
        from prunebench.harness.measure.latency import measure_latency, measure_speedup

        batch = next(iter(make_loader(ctx.splits.val,  # type: ignore[union-attr]
                                      batch_size=LATENCY_IMAGES)))[0]
        if dense is None:
            out["latency_p50_ms"] = measure_latency(model.eval(), [batch], ctx.profile).p50_ms
        else:
            sp = measure_speedup(dense[0], model.eval(), [batch], ctx.profile)  # type: ignore
            out.update(latency_p50_ms=dense[1] / sp.ratio_median,
                       latency_p50_ms_raw=sp.latency_b.p50_ms, speedup=sp.ratio_median)
    return out


def _meets(kind: str, m: Mapping[str, Any], limit: float) -> bool:
    key = _metric_key(kind)
    return m[key] >= limit if kind == "accuracy-loss" else m[key] <= limit


def run_policy(model: nn.Module, s: AapSettings, ctx: PruneContext) -> nn.Module:
    """Prune/fine-tune rounds from a copy of ``model`` until the policy stops (see module doc).

    Accuracy targets return the most pruned network that held; resource targets the most
    accurate (val) network that met the limit (none met raises, naming what was reached).
    """
    if s.target_kind == "latency-ms" and ctx.profile is None:
        raise PrunebenchError("target latency-ms needs a hardware profile; give --profile "
                              "(e.g. cpu-1t)")
    return _Policy(model, s, ctx).run()


class _Policy:
    """State of one adaptive run: the last good network, its threshold, the step."""

    def __init__(self, model: nn.Module, s: AapSettings, ctx: PruneContext) -> None:
        from prunebench.harness.pruning.static.cut import coupled_groups

        self.s, self.ctx, self.x = s, ctx, ctx.example_input
        self.calib = calibration_set(ctx, s.calibration_samples, "aap")
        self.need_lat = s.target_kind == "latency-ms"
        self.acc_mode = s.target_kind == "accuracy-loss"
        self.start = time.perf_counter()
        self.log = _RoundLog(ctx.run_dir)
        self.good = copy.deepcopy(model).eval()
        self.dense_net = self.good
        self.dense = _measure(self.good, ctx, self.need_lat)
        limit = {"accuracy-loss": self.dense["val_top1"] - s.target_value / 100,
                 "latency-ms": s.target_value}.get(s.target_kind)
        self.limit = limit if limit is not None else resource_limit(
            s.target_value, self.dense[s.target_kind])
        self.ref = median_score(filter_attention(self.good, coupled_groups(self.good, self.x),
                                                 self.calib, s.p))
        self.met: list[tuple[nn.Module, float, int]] = []  # resource mode: (net, val, round)
        self.dense_meets = not self.acc_mode and _meets(s.target_kind, self.dense, self.limit)
        self.floor = self.dense["val_top1"] - s.guard / 100
        self.good_t, self.step = 0.0, s.step
        self.good_round, self.resets = 0, 0  # the last good round; resets in a row since it
        self._scored: tuple[nn.Module, list, dict, dict] | None = None
        self.tried: dict[frozenset[tuple[str, int]], tuple[bool, int]] = {}
        self.log.add({"round": 0, "t": 0.0, "step": s.step, "action": "dense",
                      "limit": self.limit, "ref_score": self.ref, **self.dense,
                      "elapsed_s": 0.0})

    def run(self) -> nn.Module:
        """Iterate rounds; returns the chosen network with ``prunebench_arch`` and a summary."""
        from prunebench.harness.pruning.static.cut import architecture

        trained = 0
        while trained < self.s.max_rounds and self.step >= self.s.min_step:
            if self.dense_meets:
                break  # the dense network already meets the resource limit
            outcome = self._round(trained + 1)
            if outcome == "stop":
                break
            trained += outcome == "trained"
            if self.resets >= self.s.max_resets:  # the paper's stopping rule
                self._add({"round": trained, "t": self.good_t, "step": self.step},
                          f"stop: {self.resets} resets in a row after good round "
                          f"{self.good_round}")
                break
        result = self.good if self.acc_mode or self.dense_meets else self._best_met()
        if result is None and self.met:  # met in their rounds, missed when re-measured
            again = [r["latency_p50_ms"] for r in self.log.rows
                     if r["action"] == "remeasured missed"]
            raise PrunebenchError(
                f"AAP: {len(self.met)} round(s) met target {self.s.target_kind}="
                f"{self.s.target_value} when measured, but none held when re-measured (p50 "
                f"{', '.join(f'{v:.4g}' for v in again)} ms): timing on this machine is too "
                "noisy for a budget this tight; loosen the target or measure on a quieter "
                "machine")
        if result is None:
            key = _metric_key(self.s.target_kind)
            reached = min((r[key] for r in self.log.rows if r.get(key) is not None
                           and not r["action"].startswith("rejected")), default=None)
            raise PrunebenchError(
                f"AAP did not reach target {self.s.target_kind}={self.s.target_value} (limit "
                f"{self.limit:.4g}; best reached within the {self.s.guard:g}-point accuracy "
                f"guard: {reached}) in {trained} rounds; raise max_rounds, step or guard, or "
                "loosen the target")
        if not hasattr(result, "prunebench_arch"):
            result.prunebench_arch = architecture(result)
        result.prunebench_aap = {"rounds": self.log.rows, "limit": self.limit,
                                 "dense": self.dense, "trained_rounds": trained,
                                 "target": f"{self.s.target_kind}={self.s.target_value}"}
        return result.eval()

    def _round(self, rnd: int) -> str:
        """One threshold raise: ``"trained"``, ``"skipped"`` (no training) or ``"stop"``."""
        from prunebench.harness.pruning.static.cut import coupled_groups, cut_filters
        from prunebench.harness.pruning.static.recovery import RecoveryOptions, finetune

        t = self.good_t + self.step
        if self._scored is None or self._scored[0] is not self.good:  # scores of this network
            groups = coupled_groups(self.good, self.x)
            self._scored = (self.good, groups,
                            filter_attention(self.good, groups, self.calib, self.s.p),
                            group_shares(self.good, groups, self.x, self.s.share))
        _, groups, scores, shares = self._scored
        idxs, kept_one = select_below_threshold(scores, shares, t, self.ref)
        row = {"round": rnd, "t": t, "step": self.step, "kept_one": kept_one,
               "pruned_filters": sum(map(len, idxs.values())),
               "thresholds": {g.name: t * self.ref * shares[g.name] * len(groups)
                              for g in groups}}
        key = frozenset((g, i) for g, ii in idxs.items() for i in ii)
        if not idxs:  # raising T pruned nothing: accept it without training, and let the
            # next round start at the first T that prunes a filter (no no-op rounds)
            first = _first_pruning_t(scores, shares, self.ref)
            stop = math.isinf(first)  # every group is down to one filter
            self.good_t = t if stop else max(t, first - self.step)
            # the same network at a higher T: a good round, as the paper would train and keep it
            self._good(rnd)
            self._add(row, "nothing left to prune" if stop else "empty")
            return "stop" if stop else "skipped"
        if key in self.tried:  # the same cut as an earlier round: its outcome (a reset) is
            ok, earlier = self.tried[key]  # known, so it counts as one without training again
            self.step /= 2
            self.resets += 1
            self._add(row, f"same cut as round {earlier}")
            return "skipped"
        cand = cut_filters(self.good, self.x, idxs)
        if self.s.round_epochs:
            finetune(cand, None, self.ctx, RecoveryOptions(
                finetune_epochs=self.s.round_epochs, finetune_lr=self.s.finetune_lr),
                desc=f"aap round {rnd}")
        m = _measure(cand.eval(), self.ctx, self.need_lat, self._dense_ref())
        ok = _meets(self.s.target_kind, m, self.limit)
        if not self.acc_mode and m["val_top1"] < self.floor:  # resource mode's accuracy guard
            self.tried[key] = (False, rnd)
            self.step /= 2
            self.resets += 1
            self._add({**row, **m}, f"rejected: val top-1 below the guard {self.floor:.4f}")
            return "trained"
        if ok == self.acc_mode:  # accuracy held, or resource limit not yet met: keep pruning
            self.good, self.good_t, self.tried = cand, t, {}
            self._good(rnd)
            action = "accepted" if ok else "continue"
        else:  # accuracy failed (restore last good), or limit met (look for less pruning)
            self.tried[key] = (ok, rnd)
            if ok:
                self.met.append((cand, m["val_top1"], rnd))
            self.step /= 2
            self.resets += 1
            action = "met" if ok else "rejected"
        self._add({**row, **m, "channels": sum(g.channels for g in coupled_groups(cand, self.x))},
                  action)
        return "trained"

    def _good(self, rnd: int) -> None:
        """Round ``rnd`` kept its network: the resets in a row start again from zero."""
        self.good_round, self.resets = rnd, 0

    def _best_met(self) -> nn.Module | None:
        """The most accurate (val) network that met the limit; latency is re-measured first.

        Timing is noisy, so a latency candidate counts only if a fresh measurement on the
        profile meets the budget again; otherwise the next most accurate one is tried.
        """
        for net, val, rnd in sorted(self.met, key=lambda r: (-r[1], r[2])):
            if not self.need_lat:
                return net
            again = _measure(net, self.ctx, True, self._dense_ref())["latency_p50_ms"]
            ok = again <= self.limit
            self.log.add({"round": rnd, "action": "remeasured " + ("met" if ok else "missed"),
                          "latency_p50_ms": again, "val_top1": val,
                          "elapsed_s": time.perf_counter() - self.start})
            if ok:
                return net
        return None

    def _dense_ref(self) -> tuple[nn.Module, float] | None:
        """The dense network and its p50, for interleaved (drift-cancelling) latency."""
        return (self.dense_net, self.dense["latency_p50_ms"]) if self.need_lat else None

    def _add(self, row: dict[str, Any], action: str) -> None:
        self.log.add({**row, "action": action, "elapsed_s": time.perf_counter() - self.start})


def _first_pruning_t(scores: Mapping[str, torch.Tensor], shares: Mapping[str, float],
                     ref: float) -> float:
    """The smallest ``T`` at which some group with more than one filter loses one."""
    n = len(scores)
    ts = [float(torch.sort(s).values[0]) / (ref * shares[g] * n) * (1 + 1e-6)
          for g, s in scores.items() if len(s) > 1 and shares[g] > 0]
    return min(ts, default=math.inf)


def _metric_key(kind: str) -> str:
    return {"accuracy-loss": "val_top1", "latency-ms": "latency_p50_ms"}.get(kind, kind)
