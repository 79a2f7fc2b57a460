"""Accuracy of AntiDote (exact rule) and antidote_fast with and without targeted dropout.

For digits and MNIST (``/work/shared/data/mnist`` or ``$PRUNEBENCH_MNIST``; 8,000/2,000 split),
starting from the cached dense ResNet-20 base model (``prunebench.harness.train.get_base_model``):

1. arms (``ARMS``), each fine-tuned from the base with the same LR and distillation from it:
   plain fine-tuning (no dropout; 10 and 20 epochs) and AntiDote targeted-dropout fine-tuning:
   per input a fraction drawn from [0, 0.75] of channels is dropped (alpha=1, the test-time rule
   at every keep-ratio), ranked by the input's own attention for ``antidote`` (10 epochs; with
   ``inputs=1``, each block's input channels too, 20 epochs) and by the calibrated static order
   (a prefix width, as ``prunebench finetune --method antidote_fast``) for ``antidote_fast``;
2. test accuracy (masked execution: the reference; gathered gives the same outputs) and mean
   effective MACs over the test set, for each configuration in ``POINTS`` of the families the
   arm is for.

Checks (``checks``, per family): its targeted-dropout arm within 0.5 points of the dense base at
>= 37% effective MAC reduction, and beating the plain arm of the same epochs at the family's
highest reduction. Usage: ``python benchmarks/accuracy_dynamic.py [digits] [mnist]`` (tens of
minutes on 2 cores; ``PRUNEBENCH_BENCH_ARMS=base,plain_ft_20,targeted_dropout_inputs_ft`` runs
only those arms); the last line is one JSON object.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import warnings

import torch

from prunebench.harness.datasets import load_dataset, make_loader
from prunebench.harness.measure.accuracy import accuracy
from prunebench.harness.measure.flops import count_macs, effective_macs
from prunebench.harness.pruning import PruneContext, PruningConfig, get_method
from prunebench.harness.pruning.dynamic.training import finetune_dynamic
from prunebench.harness.train import DEFAULT_RECIPE, get_base_model

EPOCHS, LR, KD = 10, 0.05, 0.7
TD = {"gamma": 0.75, "alpha": 1.0, "sample": 1.0}
# (family, method, keep, options): exact AntiDote on block internals at ~26/37/44%, with the
# block inputs gated too (inputs=1) at ~37/49/57%, and antidote_fast at ~40/50/60%
POINTS = [("antidote", "antidote", 0.5, {}), ("antidote", "antidote", 0.5, {"columns": 0.5}),
          ("antidote", "antidote", 0.25, {}), ("antidote", "antidote", 0.25, {"columns": 0.5}),
          ("antidote+inputs", "antidote", 0.6, {"inputs": 1}),
          ("antidote+inputs", "antidote", 0.5, {"inputs": 1}),
          ("antidote+inputs", "antidote", 0.4, {"inputs": 1}),
          ("antidote_fast", "antidote_fast", 0.6, {}), ("antidote_fast", "antidote_fast", 0.5, {}),
          ("antidote_fast", "antidote_fast", 0.4, {}),
          # one decision per stage (the granularity the exported graphs favour)
          ("antidote_fast+stage", "antidote_fast", 0.6, {"decide": "stage"}),
          ("antidote_fast+stage", "antidote_fast", 0.5, {"decide": "stage"}),
          ("antidote_fast+stage", "antidote_fast", 0.4, {"decide": "stage"})]
# label -> (epochs, targeted dropout, its order, families evaluated, plain arm it is checked
# against); the gates of each family are trained for by one targeted-dropout arm, and each
# targeted-dropout arm has a plain arm with the same epochs, LR and distillation
ARMS = {
    "base": (0, None, "attention", ("antidote", "antidote+inputs", "antidote_fast",
                                    "antidote_fast+stage"), None),
    "plain_ft": (EPOCHS, None, "attention", ("antidote", "antidote_fast", "antidote_fast+stage"),
                 None),
    "targeted_dropout_ft": (EPOCHS, TD, "attention", ("antidote",), "plain_ft"),
    "targeted_dropout_fast_ft": (EPOCHS, TD, "calibrated", ("antidote_fast", "antidote_fast+stage"),
                                 "plain_ft"),
    "plain_ft_20": (2 * EPOCHS, None, "attention", ("antidote+inputs",), None),
    "targeted_dropout_inputs_ft": (2 * EPOCHS, {**TD, "inputs": 1.0}, "attention",
                                   ("antidote+inputs",), "plain_ft_20"),
}


def _evaluate(model: torch.nn.Module, splits: object, method: str, keep: float,
              options: dict, dense_macs: float) -> dict:
    cfg = PruningConfig(method, global_keep=keep, exec_mode="masked", options=options)
    example = splits.test[0][0][None]
    net = get_method(method).apply(model, cfg, PruneContext(example, splits=splits))
    batches = [x for x, _ in make_loader(splits.test, 500)]
    red = 1.0 - effective_macs(net, batches).mean / dense_macs
    return {"method": method, "keep": keep, "options": options,
            "macs_reduction": round(red, 4), "top1": accuracy(net, splits.test).top1}


def _arms() -> list[str]:
    """The arms to run: ``$PRUNEBENCH_BENCH_ARMS`` (comma-separated labels) or all."""
    chosen = [a for a in os.environ.get("PRUNEBENCH_BENCH_ARMS", "").split(",") if a] or list(ARMS)
    unknown = [a for a in chosen if a not in ARMS]
    if unknown:
        print(f"accuracy_dynamic: error: unknown arm(s) {unknown} in PRUNEBENCH_BENCH_ARMS; "
              f"choose from {list(ARMS)}", file=sys.stderr)
        sys.exit(2)
    return chosen


def run_dataset(name: str, data_dir: str | None, arms: list[str]) -> dict:
    """The chosen arms on one data set: each fine-tuned from the dense base, then evaluated."""
    splits = load_dataset(name, data_dir)
    base, _ = get_base_model("resnet20", name, splits, DEFAULT_RECIPE, data_dir=data_dir)
    dense_top1 = accuracy(base, splits.test).top1
    dense_macs = float(count_macs(base, splits.test[0][0][None]).macs)
    rows = []
    for label in arms:
        epochs, td, order, families, _ = ARMS[label]
        model = base
        if epochs:
            model = finetune_dynamic(copy.deepcopy(base), splits,
                                     DEFAULT_RECIPE.with_(epochs=epochs, lr=LR),
                                     targeted_dropout=td, order=order, teacher=base,
                                     kd_alpha=KD, progress=False)
        for family, method, keep, options in POINTS:
            if family in families:
                row = {"weights": label, "family": family,
                       **_evaluate(model, splits, method, keep, options, dense_macs)}
                print(json.dumps(row), file=sys.stderr, flush=True)
                rows.append(row)
    checks = {}
    for label in arms:
        epochs, td, _, families, plain = ARMS[label]
        if td is None:
            continue
        mine = [r for r in rows if r["weights"] == label and r["family"] == families[0]]
        # the family's most pruned channel-only point (columns change what is compared)
        lowest = min(k for f, _, k, o in POINTS if f == families[0] and not o.get("columns"))
        highest = [r for r in rows if r["family"] == families[0] and r["keep"] == lowest
                   and not r["options"].get("columns") and r["weights"] in (label, plain)]
        at_top = {r["weights"]: r["top1"] for r in highest}
        at37 = [r["top1"] for r in mine if r["macs_reduction"] >= 0.37]
        checks[families[0]] = {
            "weights": label, "epochs": epochs,
            "within_0.5pt_at_37pct": any(dense_top1 - a <= 0.005 for a in at37),
            "best_top1_at_37pct": max(at37, default=None),
            "highest_reduction": highest[0]["macs_reduction"], "top1_at_highest": at_top,
            "td_beats_plain_at_highest": (at_top[label] > at_top[plain]) if plain in at_top
            else None}
    return {"dataset": name, "test_n": len(splits.test), "dense_top1": dense_top1,
            "rows": rows, "checks": checks}


def main() -> None:
    """Both data sets; JSON on the last line."""
    warnings.simplefilter("ignore")
    mnist = os.environ.get("PRUNEBENCH_MNIST", "/work/shared/data/mnist")
    which = sys.argv[1:] or ["digits", "mnist"]
    arms = _arms()
    out = [run_dataset(d, mnist if d == "mnist" else None, arms) for d in which]
    print(json.dumps({"model": "resnet20", "arms": {a: {"epochs": ARMS[a][0], "td": ARMS[a][1],
                                                        "order": ARMS[a][2]} for a in arms},
                      "finetune": {"lr": LR, "kd": KD}, "results": out}))


if __name__ == "__main__":
    main()
