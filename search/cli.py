"""The ``prunebench`` command: a table of small subcommands, each returning an exit code.

Each subcommand lives in a module of ``prunebench.search.commands`` exposing ``NAME``, ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int``. A :class:`PrunebenchError` becomes one line on
stderr and exit code 2; Ctrl-C becomes exit code 130 after the command has saved its work.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from prunebench.search.commands.calling import call

# One line per subcommand module (order is the order in --help).
COMMAND_MODULES = (
    "prunebench.search.commands.run",
    "prunebench.search.commands.info",
    "prunebench.search.commands.baseline",
    "prunebench.search.commands.profiles",
    "prunebench.search.commands.measure",
    "prunebench.search.commands.train",
    "prunebench.search.commands.recipes",
    "prunebench.search.commands.finetune",
    "prunebench.search.commands.compare",
    "prunebench.search.commands.search",
    "prunebench.search.commands.worker",
    "prunebench.search.commands.study",
)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("prunebench")
    except PackageNotFoundError:  # running from a source tree without install
        return "0+unknown"


class _Parser(argparse.ArgumentParser):
    """argparse that exits with code 2 and a one-line message (argparse already uses 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    """The full parser with every registered subcommand."""
    parser = _Parser(
        prog="prunebench",
        description="Prune CNNs statically and dynamically, measure real latency/energy/FLOPs/"
        "memory/accuracy on hardware profiles, search with Optuna, and publish Pareto fronts.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"prunebench {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for mod_name in COMMAND_MODULES:
        mod = importlib.import_module(mod_name)
        for name, help_, add_arguments, run in getattr(mod, "COMMANDS", None) or [
            (mod.NAME, mod.HELP, mod.add_arguments, mod.run)
        ]:
            p = sub.add_parser(name, help=help_, description=help_)
            add_arguments(p)
            p.set_defaults(_run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    return call(args._run, args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
