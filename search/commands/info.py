"""``prunebench models`` / ``datasets`` / ``methods``: list what is registered."""

from __future__ import annotations

import argparse
import json


def _add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def _print(rows: list[dict], as_json: bool, key: str, indent: str = "") -> int:
    if as_json:
        print(json.dumps({key: rows}))
        return 0
    if not rows:
        return 0
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    print(indent + "  ".join(c.ljust(widths[c]) for c in cols).rstrip())
    for r in rows:
        print(indent + "  ".join(str(r[c]).ljust(widths[c]) for c in cols).rstrip())
    return 0


def run_models(args: argparse.Namespace) -> int:
    """List registered models (every torchvision classifier as ``tv_<name>``, and entry points
    of the group ``prunebench.models``) with their nominal input size and family."""
    from prunebench.harness.models import MODELS

    rows = [{"name": n, "input_size": "x".join(map(str, MODELS.metadata(n).get("input_size")
                                                  or ("-",))),
             "family": MODELS.metadata(n)["family"],
             "description": MODELS.metadata(n)["description"]} for n in MODELS.list()]
    return _print(rows, args.json, "models")


def run_datasets(args: argparse.Namespace) -> int:
    """List registered data sets with their layout."""
    from prunebench.harness.datasets import DATASETS

    rows = [{"name": n, **{k: v for k, v in DATASETS.metadata(n).items()}}
            for n in DATASETS.list()]
    return _print(rows, args.json, "datasets")


def _add_methods(p: argparse.ArgumentParser) -> None:
    _add_json(p)
    p.add_argument("--options", action="store_true",
                   help="list each method's options (type, default, range; --json always does)")


def run_methods(args: argparse.Namespace) -> int:
    """List registered pruning methods with kind and citation (and their options)."""
    from prunebench.harness.pruning import METHODS

    rows = [{"name": n, "kind": METHODS.metadata(n)["kind"],
             "description": METHODS.metadata(n)["description"],
             "citation": METHODS.metadata(n)["citation"]} for n in METHODS.list()]
    if args.json:
        for row in rows:
            row["options"] = METHODS.get(row["name"]).options.describe()
        return _print(rows, True, "methods")
    if not args.options:
        return _print(rows, False, "methods")
    for i, row in enumerate(rows):
        print(f"{'' if i == 0 else chr(10)}{row['name']} ({row['kind']}): {row['description']}")
        options = METHODS.get(row["name"]).options.describe()
        if not options:
            print("  (no options)")
            continue
        table = [{"option": o["name"], "type": o["type"],
                  "default": "-" if o["default"] is None else _text(o["default"]),
                  "range": o["range"] or "-", "help": o["help"]} for o in options]
        _print(table, False, "options", indent="  ")
    return 0


def _text(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


COMMANDS = [
    ("models", "list registered models", _add_json, run_models),
    ("datasets", "list registered data sets and their on-disk layout", _add_json, run_datasets),
    ("methods", "list pruning methods (static/dynamic) with their citation; --options lists "
     "each method's options", _add_methods, run_methods),
]
