"""``prunebench recipes``: list the shipped training recipes (or show one in full)."""

from __future__ import annotations

import argparse
import json

NAME = "recipes"
HELP = ("list the training recipes shipped with prunebench (use one with --recipe NAME, or your "
        "own TOML file with --recipe-file PATH)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``prunebench recipes``."""
    p.add_argument("name", nargs="?", default=None,
                   help="a recipe name or TOML file: print all its fields")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def run(args: argparse.Namespace) -> int:
    """List the recipes, or every field of one."""
    from prunebench.harness.augment import describe as augmentation
    from prunebench.harness.recipes import RECIPES, describe, load_recipe

    if args.name is not None:
        recipe = load_recipe(args.name)
        row = {**recipe.to_dict(), "key": recipe.key, "augmentation": augmentation(recipe)}
        if args.json:
            print(json.dumps({"recipe": row}))
            return 0
        width = max(len(k) for k in row)
        for key, value in row.items():
            print(f"{key.ljust(width)}  {value}")
        return 0
    rows = [describe(n) for n in RECIPES.list()]
    if args.json:
        print(json.dumps({"recipes": rows}))
        return 0
    cols = ("name", "epochs", "batch_size", "lr", "schedule", "key", "description")
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols).rstrip())
    for r in rows:
        print("  ".join(str(r[c]).ljust(widths[c]) for c in cols).rstrip())
    return 0
