"""``make demo`` (``python -m search.demo``): the end-to-end tour on the embedded digits data.

Stage 1 trains the dense ResNet-20 on digits with the default recipe (or loads it from the
checkpoint cache) and reports its test accuracy, parameter count and time. Later stages build
on the same base model.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from harness.errors import PrunebenchError

MODEL, DATASET = "resnet20", "digits"
QUICK_EPOCHS = 3


@dataclass(frozen=True)
class BaseResult:
    """What stage 1 produced: the dense model's test accuracy (fraction) and where it lives."""

    model: torch.nn.Module
    checkpoint: str
    accuracy_top1: float
    params: int
    seconds: float


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options of the demo."""
    p = argparse.ArgumentParser(prog="python -m search.demo", description=__doc__)
    p.add_argument("--quick", action="store_true",
                   help=f"a short smoke run ({QUICK_EPOCHS} epochs; accuracy will be lower)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def stage_base(args: argparse.Namespace) -> BaseResult:
    """Train (or load from the cache) the dense base model and measure its test accuracy."""
    from harness.datasets import load_dataset
    from harness.measure.accuracy import accuracy
    from harness.train import DEFAULT_RECIPE, get_base_model

    recipe = DEFAULT_RECIPE.with_(epochs=QUICK_EPOCHS) if args.quick else DEFAULT_RECIPE
    start = time.perf_counter()
    splits = load_dataset(DATASET)
    model, path = get_base_model(MODEL, DATASET, splits, recipe, progress=not args.quiet)
    test = accuracy(model, splits.test)
    seconds = time.perf_counter() - start
    params = sum(p.numel() for p in model.parameters())
    print(f"[1] dense {MODEL} on {DATASET} ({recipe.epochs} epochs, recipe {recipe.key}): "
          f"test top-1 {100 * test.top1:.2f} % of {test.n}, {params:,} params, "
          f"{seconds:.1f} s\n    checkpoint {path}")
    return BaseResult(model, str(path), test.top1, params, seconds)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo stages; returns the exit code (2 on a user error)."""
    args = parse_args(argv)
    torch.set_num_threads(_cores())  # training: use every core this process may run on
    start = time.perf_counter()
    try:
        stage_base(args)
    except PrunebenchError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 2
    print(f"demo finished in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
