"""Benchmark (issue #4): does L1 filter pruning beat random filters after recovery, on digits?

ResNet-20 on digits (the cached ``DEFAULT_RECIPE`` base model), uniform pruning at ratios 0.3,
0.5 and 0.7 of every coupled group, each followed by ``FT_EPOCHS`` epochs of fine-tuning on the
train split under two recoveries: ``lr/10`` (Li et al. 2017's fine-tuning at a tenth of the
training learning rate) and ``rewound`` (the training learning rate in a fresh cosine schedule,
the baseline sweeps' default). Both criteria run with ``SEEDS`` seeds: the seed sets the
fine-tuning order for both, and the filters for random (L1's choice does not depend on it); means
and ranges are reported. Val and test top-1 of every network are printed; ``l1_minus_random`` is
the difference of the test means, in points.

Two more recoveries test the regime where the starting point matters most:
``abn`` (adaptive BN, Li et al. 2020: BatchNorm statistics re-estimated on 16 train batches,
no fine-tuning) and ``abn+1ep lr/10`` (adaptive BN, then one epoch at lr/10). They run with
``PRUNEBENCH_BENCH_RECOVERIES=abn,abn+1ep`` (default: ``lr/10,rewound``). With
``PRUNEBENCH_BENCH_SCHEME=block-internal`` only each basic block's first conv is pruned (Li et
al.'s scheme for ResNets) instead of every coupled group.

No arguments (about 15 minutes on 2 cores); the last line printed is one JSON object.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import sys
import time

import torch

RATIOS = (0.3, 0.5, 0.7)
SEEDS = (0, 1, 2)
FT_EPOCHS = int(os.environ.get("PRUNEBENCH_BENCH_FT_EPOCHS", "5"))
RECOVERIES = os.environ.get("PRUNEBENCH_BENCH_RECOVERIES", "lr/10,rewound").split(",")
SCHEME = os.environ.get("PRUNEBENCH_BENCH_SCHEME", "uniform")
ABN_BATCHES = 16


def _recovery_options(name: str, lr: float) -> dict:
    """``PruningConfig.options`` of a named recovery (``lr`` is the recipe's)."""
    table = {"lr/10": {"finetune_epochs": FT_EPOCHS, "finetune_lr": lr / 10},
             "rewound": {"finetune_epochs": FT_EPOCHS},
             "abn": {"bn_recalibrate": ABN_BATCHES},
             "abn+1ep": {"bn_recalibrate": ABN_BATCHES, "finetune_epochs": 1,
                         "finetune_lr": lr / 10}}
    if name not in table:
        raise SystemExit(f"unknown recovery {name!r}; choose from {', '.join(table)}")
    return table[name]


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _summary(runs: list[tuple[float, float]]) -> dict[str, float]:
    tests = [t for _, t in runs]
    return {"val_top1_mean": statistics.mean(v for v, _ in runs),
            "test_top1_mean": statistics.mean(tests), "test_top1_min": min(tests),
            "test_top1_max": max(tests)}


def main() -> int:
    """Prune, recover and evaluate every (ratio, recovery, criterion, seed); print the JSON."""
    from prunebench.harness.evaluate import Workload, build_pruned, prepare
    from prunebench.harness.measure.accuracy import accuracy
    from prunebench.harness.pruning import PruningConfig

    start = time.perf_counter()
    base = prepare(Workload("resnet20", "digits"), progress=False)
    val, test = base.splits.split("val"), base.splits.split("test")
    recipe = base.workload.recipe
    recoveries = {name: _recovery_options(name, recipe.lr) for name in RECOVERIES}
    if SCHEME not in ("uniform", "block-internal"):
        raise SystemExit(f"unknown scheme {SCHEME!r}; choose uniform or block-internal")
    inner = [n for n, m in base.base_model.named_modules()
             if n.endswith(".conv1") and n.startswith("layer")]
    out: dict = {"dense": {"val_top1": accuracy(base.base_model, val).top1,
                           "test_top1": accuracy(base.base_model, test).top1},
                 "finetune_epochs": FT_EPOCHS, "seeds": list(SEEDS), "scheme": SCHEME,
                 "recoveries": recoveries, "points": []}
    for ratio in RATIOS:
        for rec_name, opts in recoveries.items():
            runs: dict[str, list[tuple[float, float]]] = {"l1": [], "random": []}
            for method in runs:
                for seed in SEEDS:
                    prep = dataclasses.replace(base, workload=dataclasses.replace(
                        base.workload, seed=seed,
                        recipe=dataclasses.replace(recipe, seed=recipe.seed + seed)))
                    torch.manual_seed(seed)
                    amount = ({"global_ratio": ratio} if SCHEME == "uniform"
                              else {"ratios": {n: ratio for n in inner}})
                    net = build_pruned(prep, PruningConfig(method, **amount, options=opts),
                                       progress=False)
                    acc = (accuracy(net, val).top1, accuracy(net, test).top1)
                    runs[method].append(acc)
                    _log(f"ratio {ratio} {rec_name} {method} seed {seed}: val {acc[0]:.4f} "
                         f"test {acc[1]:.4f}")
            summary = {m: _summary(r) for m, r in runs.items()}
            out["points"].append({
                "ratio": ratio, "recovery": rec_name, **summary,
                "l1_minus_random": round(100 * (summary["l1"]["test_top1_mean"]
                                                - summary["random"]["test_top1_mean"]), 2),
            })
    out["wall_s"] = round(time.perf_counter() - start, 1)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
