"""``prunebench finetune``: train a network for dynamic pruning and save the checkpoint.

AntiDote's training phase (``--targeted-dropout gamma=0.5,alpha=0.5``) or instance-wise sparsity's
feature decay (``--feature-decay 1e-4``), starting from ``--checkpoint`` or the cached dense base
model. The result has the base architecture; evaluate it with ``--checkpoint`` and a dynamic
method (``antidote``, ``antidote_fast``, ``instance_sparsity``).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

from prunebench.harness.errors import PrunebenchError
from prunebench.search.commands.arguments import (
    add_recipe_arguments,
    add_runtime_arguments,
    add_workload_arguments,
    positive,
    training_recipe,
    whole,
)

NAME = "finetune"
HELP = "fine-tune a network for dynamic pruning (targeted dropout or feature decay)"
_METHODS = ("antidote", "antidote_fast", "instance_sparsity")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``prunebench finetune``."""
    add_workload_arguments(p, "start from these weights: a prunebench checkpoint or a plain "
                           "state_dict of --model (default: the cached dense base model)", Path)
    add_recipe_arguments(p, "fine-tuning")
    p.add_argument("--base-recipe", default=None, metavar="NAME|PATH",
                   help="recipe the cached dense base model is trained with when no "
                        "--checkpoint is given (default: digits)")
    p.add_argument("--method", required=True, choices=_METHODS,
                   help="the dynamic method the network is trained for")
    p.add_argument("--targeted-dropout", default=None, metavar="gamma=G,alpha=A",
                   help="AntiDote targeted dropout: the fraction gamma of lowest-attention "
                        "channels is dropped with probability alpha (add columns=1 for columns; "
                        "sample=1 draws each input's fraction from [0, gamma]; inputs=1 also "
                        "targets each block's input channels, for antidote's option inputs=1); "
                        "with --method "
                        "antidote_fast the tail of the calibrated channel order is dropped "
                        "(recommended: gamma=0.75,alpha=1,sample=1)")
    p.add_argument("--feature-decay", type=positive(1e-4), default=None, metavar="LAMBDA",
                   help="instance-wise sparsity: l2,1 penalty strength on gated feature maps")
    p.add_argument("--epochs", type=int, default=None,
                   help="fine-tuning epochs (default: the recipe's; 10 for digits)")
    p.add_argument("--lr", type=positive(0.05), default=None,
                   help="peak learning rate (default: the recipe's; 0.05 cosine to 0 for "
                        "digits)")
    p.add_argument("--kd", type=float, default=0.0, metavar="ALPHA",
                   help="distil from the starting network with weight ALPHA in [0, 1) "
                        "(recommended 0.7; default 0: none)")
    p.add_argument("--seed", type=whole(0, 0), default=0, help="seed of data order and dropout")
    p.add_argument("--out", type=Path, default=None,
                   help="checkpoint path (default results/finetune/<model>-<dataset>-<method>.pt)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_runtime_arguments(p)


def run(args: argparse.Namespace) -> int:
    """Fine-tune and save; prints the checkpoint path and the validation accuracy."""
    from prunebench.harness.datasets import load_dataset
    from prunebench.harness.evaluate import Workload, workload_image_size
    from prunebench.harness.models import MODELS, create_model
    from prunebench.harness.pruning import finetune_dynamic, parse_targeted_dropout
    from prunebench.harness.recipes import DEFAULT_RECIPE_NAME, load_recipe
    from prunebench.harness.train import (
        get_base_model,
        load_checkpoint,
        runtime_accuracy,
        save_checkpoint,
    )

    if args.targeted_dropout is None and args.feature_decay is None:
        raise PrunebenchError("give --targeted-dropout gamma=0.5,alpha=0.5 (antidote) or "
                              "--feature-decay 1e-4 (instance_sparsity)")
    if args.epochs is not None and args.epochs < 1:
        raise PrunebenchError(f"--epochs {args.epochs} must be >= 1; use e.g. --epochs 10")
    if not 0.0 <= args.kd < 1.0:
        raise PrunebenchError(f"--kd {args.kd} must be in [0, 1); use e.g. --kd 0.7")
    MODELS.get(args.model)
    check_checkpoint_out(args.out)
    td = parse_targeted_dropout(args.targeted_dropout) if args.targeted_dropout else None
    recipe = training_recipe(args, epochs=args.epochs, lr=args.lr, seed=args.seed)
    # the cached dense base (no --checkpoint) is the one `prunebench train` makes with it
    base_recipe = load_recipe(args.base_recipe or DEFAULT_RECIPE_NAME).with_(
        runtime=recipe.runtime)
    image_size = workload_image_size(Workload(args.model, args.dataset,
                                              checkpoint=args.checkpoint,
                                              image_size=args.image_size))
    splits = load_dataset(args.dataset, args.data_dir, seed=args.seed, image_size=image_size)
    if args.checkpoint is not None:
        model, base_meta = load_checkpoint(
            args.checkpoint, create_model(args.model, splits.num_classes, splits.input_size[0]),
            expect={"model": args.model, "num_classes": splits.num_classes,
                    "in_channels": splits.input_size[0],
                    "input_size": list(splits.input_size)})
        source = str(args.checkpoint)
    else:
        model, path = get_base_model(args.model, args.dataset, splits, base_recipe,
                                     data_dir=args.data_dir, progress=not args.quiet)
        base_meta, source = {}, str(path)
    start = time.perf_counter()
    teacher = copy.deepcopy(model).eval() if args.kd > 0 else None
    finetune_dynamic(model, splits, recipe, targeted_dropout=td, teacher=teacher,
                     kd_alpha=args.kd,
                     feature_decay=args.feature_decay,
                     order="calibrated" if args.method == "antidote_fast" else "attention",
                     progress=not args.quiet)
    val = runtime_accuracy(model, splits.val, recipe.runtime).top1
    out = args.out or Path("results/finetune") / f"{args.model}-{args.dataset}-{args.method}.pt"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {**{k: v for k, v in base_meta.items() if k not in ("val_top1", "train_seconds")},
            "model": args.model, "dataset": args.dataset, "num_classes": splits.num_classes,
            "in_channels": splits.input_size[0], "input_size": list(splits.input_size),
            "finetuned_for": args.method, "train_runtime": recipe.runtime.to_dict(),
            "targeted_dropout": td,
            "targeted_dropout_order": "calibrated" if args.method == "antidote_fast" else None,
            "feature_decay": args.feature_decay, "kd_alpha": args.kd,
            "finetune_recipe": recipe.to_dict(), "base": source, "val_top1": val,
            "train_seconds": time.perf_counter() - start}
    save_checkpoint(model, out, meta)
    result = {"checkpoint": str(out), "val_top1": val, "method": args.method}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"saved {out} (val top-1 {val:.4f}, dense execution)", file=sys.stdout)
    return 0


def check_checkpoint_out(out: Path | None) -> None:
    """``--out`` names a checkpoint file whose folder can be written (before any training)."""
    from prunebench.search.runs.files import check_out_dir

    if out is None:
        return
    if out.is_dir():
        raise PrunebenchError(f"--out {out} is a folder; give a checkpoint file path, e.g. "
                              f"--out {out / 'model.pt'}")
    check_out_dir(out.parent, "--out")
