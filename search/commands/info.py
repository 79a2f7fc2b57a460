"""``prunebench models`` / ``datasets`` / ``methods``: list what is registered."""

from __future__ import annotations

import argparse
import json


def _add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def _print(rows: list[dict], as_json: bool, key: str) -> int:
    if as_json:
        print(json.dumps({key: rows}))
        return 0
    if not rows:
        return 0
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(str(r[c]).ljust(widths[c]) for c in cols))
    return 0


def run_models(args: argparse.Namespace) -> int:
    """List registered models with their nominal input size and family."""
    from prunebench.harness.models import MODELS

    rows = [{"name": n, "input_size": "x".join(map(str, MODELS.metadata(n)["input_size"])),
             "family": MODELS.metadata(n)["family"],
             "description": MODELS.metadata(n)["description"]} for n in MODELS.list()]
    return _print(rows, args.json, "models")


def run_datasets(args: argparse.Namespace) -> int:
    """List registered data sets with their layout."""
    from prunebench.harness.datasets import DATASETS

    rows = [{"name": n, **{k: v for k, v in DATASETS.metadata(n).items()}}
            for n in DATASETS.list()]
    return _print(rows, args.json, "datasets")


def run_methods(args: argparse.Namespace) -> int:
    """List registered pruning methods with kind and citation."""
    from prunebench.harness.pruning import METHODS

    rows = [{"name": n, "kind": METHODS.metadata(n)["kind"],
             "description": METHODS.metadata(n)["description"],
             "citation": METHODS.metadata(n)["citation"]} for n in METHODS.list()]
    return _print(rows, args.json, "methods")


COMMANDS = [
    ("models", "list registered models", _add_json, run_models),
    ("datasets", "list registered data sets and their on-disk layout", _add_json, run_datasets),
    ("methods", "list pruning methods (static/dynamic) with their citation", _add_json,
     run_methods),
]
