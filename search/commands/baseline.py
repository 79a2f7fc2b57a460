"""``prunebench baseline``: sweep one static method over uniform ratios and measure each point.

Writes ``results/baseline-<model>-<dataset>-<method>-<timestamp>/`` (or ``--out``):
``config.json`` (resolved arguments, profile, environment), ``dense.json`` (the dense reference)
and ``points.csv`` (the dense row, then one ``Measurement.to_row()`` per ratio with ``run_kind``
and ``label``), rewritten atomically after every point. Running again with the same ``--out``
resumes: finished points are skipped and ratios may be added.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from prunebench.harness.errors import PrunebenchError

NAME = "baseline"
HELP = ("sweep a static pruning method over uniform ratios: prune, fine-tune, measure each point "
        "(accuracy on the TEST split: this is a report, not a tuning run)")
_VOLATILE = ("quiet", "json", "force", "ratios", "_run")


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
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs to train the dense model if it is not cached (default: recipe)")
    p.add_argument("--checkpoint", default=None, help="dense checkpoint to start from")
    p.add_argument("--seed", type=int, default=0, help="split and pruning seed (default: 0)")
    p.add_argument("--out", type=Path, default=None, help="run folder (default: results/"
                   "baseline-<model>-<dataset>-<method>-<timestamp>); an existing one resumes")
    p.add_argument("--force", action="store_true",
                   help="use the profile even if this machine does not match its fingerprint")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def parse_ratios(text: str | None) -> list[float]:
    """``"0.25,0.5"`` -> ``[0.25, 0.5]``; each must lie in [0, 1)."""
    if not text:
        return []
    try:
        ratios = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise PrunebenchError(f"--ratios {text!r} is not a comma-separated list of numbers; give "
                              "e.g. --ratios 0.25,0.5,0.75") from None
    bad = [r for r in ratios if not 0.0 <= r < 1.0]
    if bad:
        raise PrunebenchError(f"--ratios value {bad[0]} is outside [0, 1); give e.g. "
                              "--ratios 0.25,0.5,0.75")
    return list(dict.fromkeys(ratios))


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


def _points(args: argparse.Namespace, ratios: list[float]) -> list[tuple[str, Any]]:
    """(label, PruningConfig) per point to measure."""
    from prunebench.harness.pruning import PruningConfig

    opts = _options(args)
    if ratios:
        return [(f"{args.method} r={r:g}", PruningConfig(args.method, global_ratio=r,
                                                          options=opts)) for r in ratios]
    if not (args.target or args.budget):
        raise PrunebenchError("give --ratios, e.g. --ratios 0.25,0.5,0.75 (or --target K=V for a "
                              "method that chooses its own amount)")
    spec = " ".join(f"{k}={opts[k]}" for k in ("target", "budget") if k in opts)
    return [(f"{args.method} {spec}", PruningConfig(args.method, options=opts))]


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


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` via a temporary file and a rename (never half-written)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_points(path: Path) -> list[dict[str, str]]:
    """Rows of an existing ``points.csv`` (as strings), or ``[]``."""
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def write_points(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write every row (union of columns, ``run_kind``/``label`` first) atomically."""
    cols = ["run_kind", "label"]
    for row in rows:
        cols += [c for c in row if c not in cols]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="raise")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    write_atomic(path, buf.getvalue())


def _resolved(args: argparse.Namespace) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in sorted(vars(args).items())
            if k != "_run"}


def _run_dir(args: argparse.Namespace) -> Path:
    if args.out is not None:
        return Path(args.out)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("results") / f"baseline-{args.model}-{args.dataset}-{args.method}-{stamp}"


def _check_resume(run_dir: Path, resolved: dict[str, Any]) -> dict[str, Any] | None:
    path = run_dir / "config.json"
    if not path.is_file():
        return None
    old = json.loads(path.read_text())
    old_args = {k: v for k, v in old.get("args", {}).items() if k not in _VOLATILE}
    new_args = {k: v for k, v in resolved.items() if k not in _VOLATILE}
    diff = sorted(k for k in set(old_args) | set(new_args) if old_args.get(k) != new_args.get(k))
    if diff:
        raise PrunebenchError(f"--out {run_dir} holds a run with different arguments ({diff[0]}: "
                              f"{old_args.get(diff[0])!r}); use another --out or the same "
                              "arguments to resume")
    return old


def run(args: argparse.Namespace) -> int:
    """Entry of ``prunebench baseline``."""
    from tqdm import tqdm

    from prunebench.harness.evaluate import Workload, evaluate, prepare
    from prunebench.harness.measurement import Measurement
    from prunebench.harness.models import MODELS
    from prunebench.harness.profiles import check_usable, load_profile
    from prunebench.harness.pruning import DENSE
    from prunebench.harness.train import DEFAULT_RECIPE

    MODELS.get(args.model)
    points = _points(args, parse_ratios(args.ratios))
    _check_method(args, points)
    profile = load_profile(args.profile)
    check_usable(profile, args.force)
    run_dir = _run_dir(args)
    resolved = _resolved(args)
    old = _check_resume(run_dir, resolved)
    run_dir.mkdir(parents=True, exist_ok=True)
    if old is not None:  # keep ratios a previous invocation asked for
        done_ratios = parse_ratios(old["args"].get("ratios"))
        resolved["ratios"] = ",".join(f"{r:g}" for r in dict.fromkeys(
            done_ratios + parse_ratios(args.ratios)))
    recipe = DEFAULT_RECIPE if args.epochs is None else DEFAULT_RECIPE.with_(epochs=args.epochs)
    workload = Workload(args.model, args.dataset, args.data_dir, args.checkpoint, seed=args.seed,
                        recipe=recipe)
    prepared = prepare(workload, progress=not args.quiet)
    rows = read_points(run_dir / "points.csv")
    done = {r["label"] for r in rows}
    if (run_dir / "dense.json").is_file() and "dense" in done:
        dense = Measurement.from_dict(json.loads((run_dir / "dense.json").read_text()))
    else:
        dense = evaluate(prepared, DENSE, profile, split="test", force=args.force,
                         progress=not args.quiet)
        write_atomic(run_dir / "dense.json", json.dumps(dense.to_dict(), indent=1,
                                                        sort_keys=True))
        rows = [r for r in rows if r["label"] != "dense"]
        rows.insert(0, {"run_kind": "dense", "label": "dense", **dense.to_row()})
        write_points(run_dir / "points.csv", rows)
    config = {"command": NAME, "args": resolved, "profile": dataclasses.asdict(profile),
              "recipe": recipe.to_dict(), "accuracy_split": "test",
              "environment": dense.environment}
    write_atomic(run_dir / "config.json", json.dumps(config, indent=1, sort_keys=True,
                                                     default=str))
    todo = [(label, cfg) for label, cfg in points if label not in done]
    for label, cfg in tqdm(todo, desc="baseline", disable=args.quiet, file=sys.stderr):
        # in the run's dense frame: p50 = the dense point's p50 / the interleaved speedup, so a
        # busy machine's slow minutes cannot put a pruned point behind its own dense point
        m = evaluate(prepared, cfg, profile, split="test", force=args.force,
                     latency_anchor_ms=dense.latency_p50_ms, progress=not args.quiet)
        rows.append({"run_kind": "baseline", "label": label, **m.to_row()})
        write_points(run_dir / "points.csv", rows)
    return _print(run_dir, dense, rows, args.json)


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
