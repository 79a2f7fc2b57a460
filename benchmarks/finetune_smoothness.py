"""How rugged a search's accuracy axis is: validation accuracy along the uniform L1 line after a
brief fine-tune, for the fine-tune budgets a search could use.

``bench_search`` fine-tunes every trial before it takes the validation accuracy, and a search
can only beat a sweep if that accuracy says something about the configuration rather than about
the fine-tune's luck. This script takes the cached dense ResNet-20 on digits, cuts it with
uniform L1 ratios 0.50, 0.52, ..., 0.70 (the in-budget stretch of ``bench_search``) and builds
each trial's network with ``search.objective.SearchObjective.build`` itself (cut, then the
recipe's lr in a fresh cosine schedule, seed 0) under each setting of ``SETTINGS``, and reports
the validation top-1.

Per setting it reports the accuracies, the largest drop between two neighbouring ratios
(``largest_step_drop``) and the mean.
No arguments; 77 s on 2 cores; accuracy does not depend on the machine's speed. The
last line is one JSON object.
"""

from __future__ import annotations

import dataclasses
import json

from prunebench.harness.evaluate import Workload, prepare
from prunebench.harness.measure.accuracy import accuracy
from prunebench.harness.profiles import load_profile
from prunebench.search.objective import SearchObjective, SearchSpec
from prunebench.search.space import SpaceSpec, uniform_params

RATIOS = [round(0.50 + 0.02 * i, 2) for i in range(11)]
# name -> (fine-tune epochs, learning rate; None: the recipe's)
SETTINGS = {"1_epoch": (1, None), "2_epochs": (2, None), "1_epoch_lr_0.01": (1, 0.01)}


def main() -> int:
    """Cut, fine-tune and evaluate every ratio under every setting; print one JSON object."""
    profile = load_profile("cpu-1t")
    prepared = prepare(Workload(model="resnet20", dataset="digits"), progress=True)
    recipe = prepared.workload.recipe
    objectives = {}  # one search objective per setting, as a search with it would build trials
    for name, (epochs, lr) in SETTINGS.items():
        tuned = dataclasses.replace(prepared, workload=dataclasses.replace(
            prepared.workload, recipe=dataclasses.replace(recipe, lr=lr or recipe.lr)))
        spec = SearchSpec(model="resnet20", dataset="digits", profile="cpu-1t",
                          space=SpaceSpec(kind="static", static_methods=("l1",),
                                          finetune_epochs=epochs))
        objectives[name] = SearchObjective(spec, prepared=tuned, profile=profile)
    acc: dict[str, list[float]] = {name: [] for name in SETTINGS}
    for ratio in RATIOS:
        for name, objective in objectives.items():
            space = objective.space
            net = objective.build(space.config(uniform_params(space, ratio)))
            acc[name].append(round(100 * accuracy(net, prepared.splits.val).top1, 2))
            print(f"ratio {ratio:.2f}  {name:>16}: {acc[name][-1]:.2f}%", flush=True)
    result = {
        "ratios": RATIOS, "val_accuracy_pct": acc,
        "largest_step_drop": {n: round(max(a - b for a, b in zip(v, v[1:], strict=False)), 2)
                              for n, v in acc.items()},
        "mean_val_accuracy_pct": {n: round(sum(v) / len(v), 2) for n, v in acc.items()},
        "n_val": len(prepared.splits.val), "recipe_lr": recipe.lr,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
