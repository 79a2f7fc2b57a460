"""Accuracy of AntiDote (exact rule) and antidote_fast with and without targeted dropout.

For digits and MNIST (``/work/shared/data/mnist`` or ``$PRUNEBENCH_MNIST``; 8,000/2,000 split),
starting from the cached dense ResNet-20 base model (``harness.train.get_base_model``):

1. plain fine-tuning (same epochs, LR and distillation from the base, no dropout) and AntiDote
   targeted-dropout fine-tuning of the base model: per input a fraction drawn from [0, 0.75] of
   channels is dropped (alpha=1, the test-time rule at every keep-ratio), ranked by the input's
   own attention for ``antidote`` and by the calibrated static order (a prefix width, as
   ``prunebench finetune --method antidote_fast``) for ``antidote_fast``;
2. test accuracy (masked execution: the reference; gathered gives the same outputs) and mean
   effective MACs over the test set, for each configuration in ``POINTS``.

Checks printed: AntiDote with targeted dropout within 0.5 points of the dense base at >= 37%
effective MAC reduction, and targeted dropout beating plain fine-tuning at the highest
reduction. Usage: ``python benchmarks/accuracy_dynamic.py`` (tens of minutes on 2 cores);
the last line is one JSON object.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import warnings

import torch

from harness.datasets import load_dataset, make_loader
from harness.measure.accuracy import accuracy
from harness.measure.flops import count_macs, effective_macs
from harness.pruning import PruneContext, PruningConfig, get_method
from harness.pruning.dyn_train import finetune_dynamic
from harness.train import DEFAULT_RECIPE, get_base_model

EPOCHS, LR, KD = 10, 0.05, 0.7
TD = {"gamma": 0.75, "alpha": 1.0, "sample": 1.0}
# (method, keep, options): exact AntiDote at ~26/37/44% and antidote_fast at ~40/50/60%
POINTS = [("antidote", 0.5, {}), ("antidote", 0.5, {"columns": 0.5}),
          ("antidote", 0.25, {}), ("antidote", 0.25, {"columns": 0.5}),
          ("antidote_fast", 0.6, {}), ("antidote_fast", 0.5, {}), ("antidote_fast", 0.4, {})]


def _evaluate(model: torch.nn.Module, splits: object, method: str, keep: float,
              options: dict, dense_macs: float) -> dict:
    cfg = PruningConfig(method, global_keep=keep, exec_mode="masked", options=options)
    example = splits.test[0][0][None]
    net = get_method(method).apply(model, cfg, PruneContext(example, splits=splits))
    batches = [x for x, _ in make_loader(splits.test, 500)]
    red = 1.0 - effective_macs(net, batches).mean / dense_macs
    return {"method": method, "keep": keep, "options": options,
            "macs_reduction": round(red, 4), "top1": accuracy(net, splits.test).top1}


def run_dataset(name: str, data_dir: str | None) -> dict:
    """Base, plain fine-tuning and targeted-dropout fine-tuning on one data set."""
    splits = load_dataset(name, data_dir)
    base, _ = get_base_model("resnet20", name, splits, DEFAULT_RECIPE, data_dir=data_dir)
    dense_top1 = accuracy(base, splits.test).top1
    dense_macs = float(count_macs(base, splits.test[0][0][None]).macs)
    recipe = DEFAULT_RECIPE.with_(epochs=EPOCHS, lr=LR)
    kd = {"teacher": base, "kd_alpha": KD, "progress": False}
    models = {"base": base,
              "plain_ft": finetune_dynamic(copy.deepcopy(base), splits, recipe, **kd),
              "targeted_dropout_ft": finetune_dynamic(copy.deepcopy(base), splits, recipe,
                                                      targeted_dropout=TD, **kd),
              "targeted_dropout_fast_ft": finetune_dynamic(
                  copy.deepcopy(base), splits, recipe, targeted_dropout=TD, order="calibrated",
                  **kd)}
    rows = []
    for label, model in models.items():
        for method, keep, options in POINTS:
            if (label == "targeted_dropout_ft" and method == "antidote_fast") or (
                    label == "targeted_dropout_fast_ft" and method == "antidote"):
                continue  # each TD model is evaluated with the method it was trained for
            row = {"weights": label, **_evaluate(model, splits, method, keep, options,
                                                 dense_macs)}
            print(json.dumps(row), file=sys.stderr)
            rows.append(row)
    td = [r for r in rows if r["weights"].startswith("targeted_dropout")
          and r["macs_reduction"] >= 0.37]
    top = max(r["macs_reduction"] for r in rows if r["weights"] == "targeted_dropout_fast_ft")
    at_top = {r["weights"].replace("targeted_dropout_fast_ft", "targeted_dropout_ft"): r["top1"]
              for r in rows if r["method"] == "antidote_fast" and r["keep"] == min(
                  k for m, k, _ in POINTS if m == "antidote_fast")}
    return {"dataset": name, "test_n": len(splits.test), "dense_top1": dense_top1,
            "rows": rows,
            "td_within_0.5pt_at_37pct": any(dense_top1 - r["top1"] <= 0.005 for r in td),
            "best_td_at_37pct": max((r["top1"] for r in td), default=None),
            "highest_reduction": top, "top1_at_highest": at_top,
            "td_beats_plain_at_highest": at_top.get("targeted_dropout_ft", 0)
            > at_top.get("plain_ft", 1)}


def main() -> None:
    """Both data sets; JSON on the last line."""
    warnings.simplefilter("ignore")
    mnist = os.environ.get("PRUNEBENCH_MNIST", "/work/shared/data/mnist")
    which = sys.argv[1:] or ["digits", "mnist"]
    out = [run_dataset(d, mnist if d == "mnist" else None) for d in which]
    print(json.dumps({"model": "resnet20",
                      "finetune": {"epochs": EPOCHS, "lr": LR, "kd": KD, "td": TD},
                      "results": out}))


if __name__ == "__main__":
    main()
