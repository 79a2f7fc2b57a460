"""``prunebench train``: train (or load from the cache) a dense model and report test accuracy."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from prunebench.search.commands.arguments import (
    add_recipe_arguments,
    add_runtime_arguments,
    positive,
    training_recipe,
    whole,
)

NAME = "train"
HELP = "train a dense model on a data set (cached) and report its test accuracy"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``prunebench train``."""
    p.add_argument("--model", default="resnet20", help="registered model (default: resnet20; "
                   "see `prunebench models`)")
    p.add_argument("--dataset", default="digits", help="registered data set (default: digits; "
                   "see `prunebench datasets`)")
    p.add_argument("--data-dir", default=None, help="folder holding the data set's files")
    p.add_argument("--download", action="store_true",
                   help="download the data set into --data-dir if it is missing (CIFAR, MNIST)")
    p.add_argument("--image-size", type=whole(8, 32), default=32,
                   help="side in pixels that imagefolder images are resized to (default: 32)")
    add_recipe_arguments(p)
    p.add_argument("--epochs", type=whole(1, 10), default=None,
                   help="training epochs, at least 1 (default: the recipe's)")
    p.add_argument("--lr", type=positive(0.05), default=None,
                   help="peak learning rate (default: the recipe's)")
    p.add_argument("--batch-size", type=whole(1, 32), default=None,
                   help="training batch size (default: the recipe's)")
    p.add_argument("--weights", default=None, metavar="PATH",
                   help="start training from these weights instead of a random initialisation: "
                        "a prunebench checkpoint or a plain state_dict of --model (e.g. "
                        "torchvision's); nothing is downloaded")
    p.add_argument("--seed", type=whole(0, 0), default=0, help="training seed (default: 0)")
    p.add_argument("--split-seed", type=whole(0, 0), default=0,
                   help="seed of the train/val/test split (default: 0)")
    p.add_argument("--cache-dir", default=None,
                   help="checkpoint cache (default: $PRUNEBENCH_CACHE or ~/.cache/prunebench)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_runtime_arguments(p)


def train_and_report(args: argparse.Namespace) -> dict[str, Any]:
    """Load the data, get the cached or freshly trained model, and measure it on every split."""
    from prunebench.harness.datasets import DATASETS, load_dataset
    from prunebench.harness.files import check_writable_dir
    from prunebench.harness.models import MODELS
    from prunebench.harness.train import checkpoint_meta, get_base_model, runtime_accuracy

    MODELS.get(args.model)  # unknown names fail before any data is read
    DATASETS.get(args.dataset)
    if args.cache_dir is not None:
        check_writable_dir(args.cache_dir, "--cache-dir")
    if args.weights is not None:
        checkpoint_meta(args.weights)  # a missing or foreign file: refused before any data
    start = time.perf_counter()
    recipe = training_recipe(args, seed=args.seed, epochs=args.epochs, lr=args.lr,
                             batch_size=args.batch_size)
    splits = load_dataset(args.dataset, args.data_dir, seed=args.split_seed,
                          download=args.download, image_size=args.image_size)
    model, path = get_base_model(args.model, args.dataset, splits, recipe,
                                 data_dir=args.data_dir, cache_dir=args.cache_dir,
                                 progress=not args.quiet, init_weights=args.weights)
    test = runtime_accuracy(model, splits.test, recipe.runtime)
    return {
        "model": args.model, "dataset": args.dataset, "accuracy_top1": test.top1,
        "accuracy_top5": test.top5, "test_n": test.n,
        "val_accuracy_top1": runtime_accuracy(model, splits.val, recipe.runtime).top1,
        "params": sum(p.numel() for p in model.parameters()),
        "input_size": list(splits.input_size), "num_classes": splits.num_classes,
        "recipe": recipe.to_dict(), "recipe_key": recipe.key,
        "train_runtime": recipe.runtime.to_dict(), "weights": args.weights,
        "checkpoint": str(path),
        "seconds": round(time.perf_counter() - start, 3),
    }


def run(args: argparse.Namespace) -> int:
    """Entry of ``prunebench train``."""
    result = train_and_report(args)
    if args.json:
        print(json.dumps(result))
        return 0
    rows = [("model", result["model"]), ("dataset", result["dataset"]),
            ("test top-1", f"{100 * result['accuracy_top1']:.2f} % of {result['test_n']}"),
            ("test top-5", f"{100 * result['accuracy_top5']:.2f} %"),
            ("val top-1", f"{100 * result['val_accuracy_top1']:.2f} %"),
            ("params", f"{result['params']:,}"),
            ("recipe", f"{result['recipe']['name']} ({result['recipe_key']})"),
            ("trained on", result["train_runtime"]["device"]),
            ("checkpoint", result["checkpoint"]),
            ("seconds", f"{result['seconds']:.1f}")]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k.ljust(width)}  {v}")
    return 0
