"""Reproduction (issue #20): ResNet-56 on CIFAR-10, dense, then L1 and FPGM at ~50% FLOPs.

The published starting points of static filter pruning on CIFAR-10 ResNet-56, beside what
prunebench's own code path gives:

- dense: ``resnet56`` trained with the ``cifar-resnet`` recipe (He et al. 2016: SGD 0.1, step
  /10 at epochs 91 and 136 of 182, batch 128, 4-px padded random crop and flip) by
  ``harness.train.get_base_model``, the checkpoint cache ``prunebench train`` uses (a second
  run with the same data, recipe and seed loads it instead of training again);
- ``l1`` (Li et al. 2017, *Pruning Filters for Efficient ConvNets*: 93.04 -> 93.06 % at -27.6 %
  FLOPs) and ``fpgm`` (He et al. 2019, *Filter Pruning via Geometric Median*: 93.59 -> 93.49 %
  at -52.6 % FLOPs): each cut by ``harness.pruning.pipeline.build`` with one uniform ratio over
  every prunable layer group, the ratio found from the MACs of the really cut network
  (:func:`ratio_for`; FLOPs = 2 x MACs, so the reduction is the same), then fine-tuned with
  ``cifar-finetune`` (SGD 0.01 cosine, 40 epochs, crop+flip) by the pipeline's recovery stage
  (``pipeline.finetune``).

Both methods are cut to the same ~50 % (``--target``), so the L1 row is not at the paper's
27.6 % (Li et al.'s ResNet-56-B skips the most sensitive layers; a uniform cut of that size is a
harder test). Accuracies are top-1 on the official 10,000-image test batch; the dense model
and the fine-tuning see only the train split (45,000 images; 5,000 are held out as val).

Before training, a few steps of a fresh ResNet-56 are timed on the training device (the
probe) and the whole run's time is estimated from them (dense epochs plus both fine-tunes at
the dense network's speed: an upper bound, the pruned networks train faster); the estimate
and the actual times are printed with the table. It is meant for a GPU (``--train-device
cuda``); on a CPU a full run is far slower (the probe's estimate says how slow). ``--epochs``,
``--finetune-epochs`` and ``--limit-train N`` (the first N train images) make a quick run.

Usage: ``python benchmarks/reproduce_cifar.py --data-dir DIR [--train-device cuda]`` with
``DIR/cifar-10-batches-py/`` (torchvision's python pickles). The last line printed is one JSON
object (``--json``: only that line).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

PUBLISHED = {
    "l1": {"paper": "Li et al. 2017 (ICLR)", "base_top1": 93.04, "pruned_top1": 93.06,
           "flops_reduction": 0.276},
    "fpgm": {"paper": "He et al. 2019 (CVPR)", "base_top1": 93.59, "pruned_top1": 93.49,
             "flops_reduction": 0.526},
}
MODEL, DATASET = "resnet56", "cifar10"
PROBE_STEPS = 5


class _Stop(Exception):
    """Raised from the probe's loss hook once its steps are timed."""


def probe_images_per_s(splits: Any, recipe: Any) -> float:
    """Training images per second of a fresh ResNet-56 with ``recipe`` on its device, from a
    few steps through ``train_model`` (the first step, which starts the loader, not counted
    when there are more)."""
    import torch

    from prunebench.harness.models import create_model
    from prunebench.harness.train import train_model

    model = create_model(MODEL, splits.num_classes, splits.input_size[0])
    stamps: list[float] = []
    batches = min(PROBE_STEPS + 1, max(1, len(splits.train) // recipe.batch_size))

    def hook(model: object, x: Any, out: object, y: object) -> None:
        if recipe.runtime.is_cuda:
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())
        if len(stamps) >= batches:
            raise _Stop
        return None

    start = time.perf_counter()
    try:
        train_model(model, splits, recipe.with_(epochs=1), loss_hook=hook, progress=False)
    except _Stop:
        pass
    if len(stamps) >= 3:
        return (len(stamps) - 1) * recipe.batch_size / (stamps[-1] - stamps[0])
    seen = min(len(splits.train), len(stamps) * recipe.batch_size)
    return seen / max(stamps[-1] - start, 1e-9)


def ratio_for(base: Any, x: Any, target: float, iters: int = 6,
              tolerance: float = 0.005) -> float:
    """The uniform ratio whose cut's MAC reduction is closest to ``target``.

    A uniform ratio sets every layer's channel count, so L1 and FPGM cut to the same MACs at the
    same ratio: one search serves both (done with ``l1``). A layer's MACs scale with its kept
    input times output channels, so the kept fraction ``1 - ratio`` is corrected by the square
    root of the wanted over the measured kept MACs (from ``1 - sqrt(1 - target)``) until the
    reduction is within ``tolerance``; each step cuts the real network and counts its MACs.
    """
    from prunebench.harness.errors import PrunebenchError
    from prunebench.harness.measure.flops import count_macs
    from prunebench.harness.pruning import PruneContext, PruningConfig, pipeline

    dense = count_macs(base, x).macs
    keep, best = (1 - target) ** 0.5, (1.0, 0.0)
    for _ in range(iters):
        ratio = min(0.95, max(0.0, 1 - keep))
        try:
            cut = pipeline.build(base, PruningConfig("l1", global_ratio=ratio),
                                 PruneContext(example_input=x))
        except PrunebenchError:  # a layer would be emptied: prune less
            keep = (1 + keep) / 2
            continue
        kept = count_macs(cut, x).macs / dense
        best = min(best, (abs(1 - kept - target), ratio))
        if best[0] <= tolerance:
            break
        keep *= ((1 - target) / kept) ** 0.5
    return best[1]


def reproduce(cli: argparse.Namespace) -> dict[str, Any]:
    """Train (or load) the dense model, cut and fine-tune both methods; the result record."""
    import torch

    from prunebench.harness.datasets import load_dataset
    from prunebench.harness.measure.flops import count_macs
    from prunebench.harness.pruning import PruneContext, PruningConfig, pipeline
    from prunebench.harness.recipes import load_recipe
    from prunebench.harness.train import get_base_model, runtime_accuracy
    from prunebench.search.commands.arguments import training_runtime

    start = time.perf_counter()
    runtime = training_runtime(cli)
    dense_recipe = load_recipe("cifar-resnet").with_(runtime=runtime, seed=cli.seed)
    if cli.epochs is not None:
        dense_recipe = dense_recipe.with_(epochs=cli.epochs)
    ft_recipe = load_recipe("cifar-finetune").with_(runtime=runtime, seed=cli.seed)
    ft_epochs = ft_recipe.epochs if cli.finetune_epochs is None else cli.finetune_epochs
    splits = load_dataset(DATASET, cli.data_dir, seed=cli.seed)
    if cli.limit_train is not None and cli.limit_train < len(splits.train):
        splits = dataclasses.replace(splits, train=splits.train.subset(range(cli.limit_train)))
    n_train, n_test = len(splits.train), len(splits.test)

    ips = probe_images_per_s(splits, dense_recipe)
    estimate = {"dense_s": dense_recipe.epochs * n_train / ips,
                "finetune_s": len(PUBLISHED) * ft_epochs * n_train / ips}
    estimated_s = sum(estimate.values())
    _say(cli, f"training on {runtime.device}: {ips:,.0f} images/s (probe); estimated "
              f"{_hours(estimated_s)} for {dense_recipe.epochs} dense and 2 x {ft_epochs} "
              f"fine-tuning epochs over {n_train:,} images")

    dense_start, wall_start = time.perf_counter(), time.time()
    base, path = get_base_model(MODEL, DATASET, splits, dense_recipe, data_dir=cli.data_dir,
                                cache_dir=cli.cache_dir, progress=not cli.quiet)
    dense_s = time.perf_counter() - dense_start
    cached = path.stat().st_mtime < wall_start
    x = splits.test[0][0].unsqueeze(0)
    dense_macs = count_macs(base, x).macs
    dense_top1 = 100 * runtime_accuracy(base, splits.test, runtime).top1
    ctx = PruneContext(example_input=x, splits=splits, recipe=ft_recipe, seed=cli.seed,
                       progress=not cli.quiet)
    rows, ratio = [], ratio_for(base, x, cli.target)
    dense_params = sum(p.numel() for p in base.parameters())
    for method, paper in PUBLISHED.items():
        cut = pipeline.build(base, PruningConfig(method, global_ratio=ratio), ctx)
        cut_top1 = 100 * runtime_accuracy(cut, splits.test, runtime).top1
        ft_start = time.perf_counter()  # the pipeline's recovery stage, on the cut network
        pruned = pipeline.finetune(cut, ft_epochs, ctx) if ft_epochs else cut
        finetune_s = time.perf_counter() - ft_start
        macs = count_macs(pruned, x).macs
        params = sum(p.numel() for p in pruned.parameters())
        rows.append({
            "method": method, "ratio": round(ratio, 4), "base_top1": round(dense_top1, 2),
            "pruned_top1_no_finetune": round(cut_top1, 2),
            "pruned_top1": round(100 * runtime_accuracy(pruned, splits.test, runtime).top1, 2),
            "flops_reduction": round(1 - macs / dense_macs, 4), "macs": macs,
            "params_reduction": round(1 - params / dense_params, 4),
            "finetune_epochs": ft_epochs, "finetune_s": round(finetune_s, 1),
            "published": paper})
    return {
        "model": MODEL, "dataset": DATASET, "train_device": runtime.device,
        "train_runtime": runtime.to_dict(), "dense_recipe": dense_recipe.to_dict(),
        "finetune_recipe": ft_recipe.with_(epochs=ft_epochs).to_dict(),
        "train_images": n_train, "test_images": n_test, "target_flops_reduction": cli.target,
        "dense_top1": round(dense_top1, 2), "dense_macs": dense_macs,
        "dense_checkpoint": str(path), "dense_cached": cached, "dense_s": round(dense_s, 1),
        "rows": rows, "probe_images_per_s": round(ips, 1),
        "estimated_s": round(estimated_s, 1),
        "estimated_dense_s": round(estimate["dense_s"], 1),
        "estimated_finetune_s": round(estimate["finetune_s"], 1),
        "actual_s": round(time.perf_counter() - start, 1), "torch": str(torch.__version__)}


def table(result: dict[str, Any]) -> str:
    """The published figures beside this run's, and the times, as aligned text."""
    head = ("", "source", "base top-1", "pruned top-1", "FLOPs")
    lines = [head]
    for row in result["rows"]:
        paper, name = row["published"], row["method"].upper()
        lines.append((name, paper["paper"], f"{paper['base_top1']:.2f}",
                      f"{paper['pruned_top1']:.2f}", f"-{100 * paper['flops_reduction']:.1f}%"))
        lines.append((name, f"this run (ratio {row['ratio']:.3f}, {row['finetune_epochs']} ep)",
                      f"{row['base_top1']:.2f}", f"{row['pruned_top1']:.2f}",
                      f"-{100 * row['flops_reduction']:.1f}%"))
    widths = [max(len(r[i]) for r in lines) for i in range(len(head))]
    out = [f"ResNet-56 on CIFAR-10, test top-1 (%) of {result['test_images']:,} images, "
           f"trained on {result['train_images']:,} ({result['train_device']})"]
    out += ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in
                      enumerate(zip(r, widths, strict=True))) for r in lines]
    cached = " (loaded from the checkpoint cache)" if result["dense_cached"] else ""
    out.append(f"time: estimated {_hours(result['estimated_s'])} of training, actual "
               f"{_hours(result['actual_s'])} in all (dense {_hours(result['dense_s'])}{cached}, "
               f"fine-tuning {_hours(sum(r['finetune_s'] for r in result['rows']))})")
    return "\n".join(out)


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds:.0f} s"


def _say(cli: argparse.Namespace, text: str) -> None:
    if not cli.quiet:
        print(f"reproduce_cifar: {text}", file=sys.stderr)


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 0.95:
        raise argparse.ArgumentTypeError(f"{text} must be a fraction in (0, 0.95); use e.g. 0.5")
    return value


def main(argv: list[str] | None = None) -> int:
    """Parse, run, print the table (unless ``--json``) and the JSON line; the exit code."""
    from prunebench.harness.errors import PrunebenchError
    from prunebench.search.commands.arguments import add_runtime_arguments, whole

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True,
                        help="folder holding cifar-10-batches-py/")
    parser.add_argument("--epochs", type=whole(1, 182), default=None,
                        help="dense training epochs (default: the cifar-resnet recipe's, 182)")
    parser.add_argument("--finetune-epochs", type=whole(0, 40), default=None,
                        help="fine-tuning epochs per method (default: cifar-finetune's, 40)")
    parser.add_argument("--limit-train", type=whole(1, 5000), default=None, metavar="N",
                        help="train on the first N train images only (a quick run)")
    parser.add_argument("--target", type=_fraction, default=0.5,
                        help="FLOPs reduction both methods are cut to (default 0.5)")
    parser.add_argument("--seed", type=whole(0, 0), default=0,
                        help="split, training and fine-tuning seed (default 0)")
    parser.add_argument("--cache-dir", default=None,
                        help="checkpoint cache (default: $PRUNEBENCH_CACHE or "
                             "~/.cache/prunebench)")
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or notes")
    add_runtime_arguments(parser)
    cli = parser.parse_args(argv)
    try:
        result = reproduce(cli)
    except PrunebenchError as exc:
        print(f"reproduce_cifar: error: {exc}", file=sys.stderr)
        return 2
    if not cli.json:
        print(table(result))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
