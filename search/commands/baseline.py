"""``prunebench baseline``: sweep one static method over uniform ratios and measure each point.

The sweep and the folder it writes are :mod:`prunebench.search.runs.sweep`'s
(``results/baseline-<model>-<dataset>-<method>-<timestamp>/`` or ``--out``: ``config.json``,
``dense.json``, ``points.csv``); running again with the same ``--out`` resumes. This command
turns the flags into the sweep's points and options, runs it and prints the points.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from prunebench.harness.errors import PrunebenchError
from prunebench.search.commands.arguments import (
    add_recipe_arguments,
    add_runtime_arguments,
    training_recipe,
    whole,
)
from prunebench.search.runs.sweep import parse_ratios

NAME = "baseline"
HELP = ("sweep a static pruning method over uniform ratios: prune, fine-tune, measure each point "
        "(accuracy on the TEST split: this is a report, not a tuning run)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``prunebench baseline``."""
    p.add_argument("--model", required=True, help="registered model (see `prunebench models`)")
    p.add_argument("--dataset", required=True, help="registered data set (see `prunebench "
                   "datasets`)")
    p.add_argument("--data-dir", default=None, help="folder holding the data set's files")
    p.add_argument("--method", default="l1", help="static pruning method (default: l1; see "
                   "`prunebench methods`)")
    p.add_argument("--ratios", default=None, help="comma-separated uniform ratios in [0, 1), "
                   "e.g. 0.25,0.5,0.75 (the share of filters removed in every layer)")
    p.add_argument("--profile", default="cpu-1t", help="hardware profile (default: cpu-1t)")
    p.add_argument("--finetune-epochs", type=int, default=0,
                   help="fine-tuning epochs after each cut (default: 0)")
    p.add_argument("--finetune-lr", type=float, default=None,
                   help="peak fine-tuning learning rate (default: the training recipe's lr, "
                        "rewound)")
    p.add_argument("--kd", action="store_true",
                   help="distil from the dense network while fine-tuning")
    p.add_argument("--bn-recalibrate", type=int, default=0, metavar="N",
                   help="adaptive BN: re-estimate BatchNorm statistics on N train batches "
                        "right after each cut, before fine-tuning (default: 0, off)")
    p.add_argument("--round-to", type=int, default=1,
                   help="keep channel counts multiples of N (default: 1)")
    p.add_argument("--target", default=None, metavar="K=V",
                   help="target for methods that choose their own amount (e.g. aap)")
    p.add_argument("--budget", default=None, metavar="K=V",
                   help="budget for methods that take one (e.g. paam)")
    p.add_argument("--epochs", type=whole(1, 10), default=None,
                   help="epochs (at least 1) to train the dense model if it is not cached "
                        "(default: recipe)")
    add_recipe_arguments(p, "dense-model and fine-tuning")
    p.add_argument("--checkpoint", "--weights", dest="checkpoint", default=None,
                   help="dense weights to start from: a prunebench checkpoint or a plain "
                        "state_dict of --model, e.g. torchvision's (default: the cached base)")
    p.add_argument("--image-size", type=whole(8, 32), default=None,
                   help="side in pixels imagefolder images are loaded at (default: the "
                        "checkpoint's, else 32)")
    p.add_argument("--seed", type=whole(0, 0), default=0,
                   help="split and pruning seed (default: 0)")
    p.add_argument("--dense", type=Path, default=None, metavar="DENSE_JSON",
                   help="use this dense measurement (a run folder's dense.json of the same "
                        "model, data set and profile) as the sweep's dense point and latency "
                        "anchor instead of timing dense again: several runs then share one frame")
    p.add_argument("--out", type=Path, default=None, help="run folder (default: results/"
                   "baseline-<model>-<dataset>-<method>-<timestamp>); an existing one resumes")
    p.add_argument("--force", action="store_true",
                   help="use the profile even if this machine does not match its fingerprint")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_runtime_arguments(p)


def _options(args: argparse.Namespace) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    if args.round_to != 1:
        opts["round_to"] = args.round_to
    if args.finetune_epochs:
        opts["finetune_epochs"] = args.finetune_epochs
    if args.finetune_lr is not None:
        opts["finetune_lr"] = args.finetune_lr
    if args.kd:
        opts["kd"] = True
    if args.bn_recalibrate:
        opts["bn_recalibrate"] = args.bn_recalibrate
    for key in ("target", "budget"):
        if getattr(args, key) is not None:
            opts[key] = getattr(args, key)
    return opts


def _check_method(args: argparse.Namespace, configs: list[tuple[str, Any]]) -> None:
    """A static method, and every option the flags build valid by its schema (before the dense
    model is measured)."""
    from prunebench.harness.pruning import METHODS

    method = METHODS.get(args.method)
    if METHODS.metadata(args.method)["kind"] != "static":
        raise PrunebenchError(f"method {args.method!r} is not static; baseline sweeps static "
                              "methods (use `prunebench search` for dynamic ones)")
    for key, value in configs[0][1].options.items():
        try:
            method.options.parse(args.method, {key: value})
        except PrunebenchError as exc:
            flag = f"--{key.replace('_', '-')}" + ("" if value is True else f" {value}")
            raise PrunebenchError(f"{flag}: {exc}") from None


def _resolved(args: argparse.Namespace) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in sorted(vars(args).items())
            if k != "_run"}


def run(args: argparse.Namespace) -> int:
    """Entry of ``prunebench baseline``."""
    from prunebench.harness.datasets import DATASETS
    from prunebench.harness.evaluate import Workload
    from prunebench.harness.models import MODELS
    from prunebench.harness.profiles import check_usable, load_profile
    from prunebench.harness.train import checkpoint_meta
    from prunebench.search.runs.sweep import default_sweep_dir, run_sweep, sweep_points

    MODELS.get(args.model)
    DATASETS.get(args.dataset)
    points = sweep_points(args.method, parse_ratios(args.ratios), _options(args))
    _check_method(args, points)
    profile = load_profile(args.profile)
    check_usable(profile, args.force)
    run_dir = Path(args.out) if args.out is not None else \
        default_sweep_dir(args.model, args.dataset, args.method)
    recipe = training_recipe(args, epochs=args.epochs)
    if args.checkpoint is not None:
        checkpoint_meta(args.checkpoint)  # a missing or foreign file: refused before any work
    workload = Workload(args.model, args.dataset, args.data_dir, args.checkpoint, seed=args.seed,
                        recipe=recipe, image_size=args.image_size)
    resolved = {**_resolved(args), "train_runtime": recipe.runtime.to_dict()}
    dense = given_dense(args.dense, args.model, args.dataset, profile.name) \
        if args.dense is not None else None
    result = run_sweep(run_dir, points, workload=workload, profile=profile,
                       args=resolved, force=args.force, progress=not args.quiet, dense=dense)
    return _print(result.run_dir, result.dense, result.rows, args.json)


def given_dense(path: Path, model: str, dataset: str, profile: str) -> Any:
    """The dense Measurement in ``path`` (``--dense``), checked against the sweep's workload."""
    from prunebench.search.runs.sweep import read_measurement

    fix = "give the dense.json of a run of the same model, data set and profile"
    dense = read_measurement(path, fix, "--dense ")
    for what, have, want in (("model", dense.model, model), ("data set", dense.dataset, dataset),
                             ("profile", dense.profile, profile)):
        if have != want:
            raise PrunebenchError(f"--dense {path} measured {what} {have!r}, not {want!r}; "
                                  f"{fix}")
    if dense.method != "dense":
        raise PrunebenchError(f"--dense {path} measured method {dense.method!r}, not dense; {fix}")
    return dense


def _print(run_dir: Path, dense: Any, rows: list[dict[str, Any]], as_json: bool) -> int:
    keys = ("label", "accuracy_top1", "macs", "params", "latency_p50_ms", "speedup_vs_dense")
    table = [{k: r.get(k) for k in keys} for r in rows]
    if as_json:
        print(json.dumps({"run_dir": str(run_dir), "dense": dense.to_row(), "points": table},
                         sort_keys=True, default=str))
        return 0
    print(f"run folder: {run_dir} (accuracy on the test split)")
    widths = {k: max(len(k), *(len(_fmt(r[k])) for r in table)) for k in keys}
    print("  ".join(k.ljust(widths[k]) for k in keys))
    for r in table:
        print("  ".join(_fmt(r[k]).ljust(widths[k]) for k in keys))
    return 0


def _fmt(value: Any) -> str:
    if value in (None, ""):
        return "-"
    try:
        f = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f"{f:.4g}" if not f.is_integer() else f"{int(f):,}"
