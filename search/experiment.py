"""Experiment files: one TOML file that says what ``prunebench run`` does, checked before work.

An experiment names the workload (``model``, ``dataset``, optional ``data_dir`` and ``seed``),
one or more hardware ``profile``/``profiles``, a latency ``budget`` (``"1.8 ms"``, ``1.8`` or
``"0.8x dense"``: a fraction of the dense p50 the run measures once per profile), the dense
``[base]`` network (trained and cached like ``prunebench train``, or a ``checkpoint``), the
``[[arms]]`` and the ``[report]``:

- an arm of ``kind = "sweep"`` is ``prunebench baseline`` (a uniform sweep of a static method),
  ``kind = "search"`` is ``prunebench search`` (``space = "static" | "dynamic" | "hybrid"``);
  every other key of an arm is that command's option, spelled with ``_`` for ``-``
  (``finetune_epochs = 1`` is ``--finetune-epochs 1``; ``true`` is a bare flag, a list is
  comma-joined; ``option = ["inputs=1"]`` repeats ``--option``);
- an arm's optional ``[arms.prepare]`` table is ``prunebench finetune`` (targeted dropout or
  feature decay) run once on the base; the arm then prunes that checkpoint (cached by content);
- ``[report]`` keys are ``prunebench compare`` options (``formats``, ``widths``, ``style``, ...).

The experiment sets the workload, profile, budget, anchor, checkpoint and folders of every arm,
so those keys are refused inside an arm. Relative paths in the file (``data_dir``, a profile
``.toml``, ``[base] checkpoint``) are relative to the file's folder. :func:`load_experiment`
validates the whole file (each arm's options through its command's own parser) and raises one
:class:`ExperimentError` naming the file, the key and the fix.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prunebench.harness.errors import PrunebenchError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class ExperimentError(PrunebenchError):
    """An experiment file that cannot be run as written."""


TOP_KEYS = ("name", "description", "model", "dataset", "data_dir", "seed", "profile", "profiles",
            "budget", "base", "arms", "report")
BASE_KEYS = ("checkpoint", "recipe", "recipe_file", "epochs", "lr", "batch_size", "image_size")
ARM_KINDS = {"sweep": "baseline", "search": "search"}
# set by the experiment for every arm (the shared workload, frame and folders)
RESERVED = ("model", "dataset", "data_dir", "seed", "profile", "checkpoint", "weights", "out",
            "latency_budget_ms", "latency_anchor_ms", "dense", "resume", "json", "quiet",
            "storage", "study", "budget_ms", "runs")
_BUDGET = re.compile(r"^\s*(?P<value>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>ms|x\s*dense)?\s*$",
                     re.IGNORECASE)


@dataclass(frozen=True)
class Budget:
    """A latency budget: ``ms`` milliseconds, or ``fraction`` of the dense p50 (``ms is None``)."""

    ms: float | None = None
    fraction: float | None = None

    def resolve(self, dense_p50_ms: float) -> float:
        """The budget in ms, given the dense p50 measured on the profile."""
        return self.ms if self.ms is not None else round(self.fraction * dense_p50_ms, 4)

    def describe(self) -> str:
        return f"{self.ms:g} ms" if self.ms is not None else f"{self.fraction:g}x dense"


@dataclass(frozen=True)
class Arm:
    """One arm: its ``name`` (its folder), ``kind``, ``options`` (command flags) and the
    ``prepare`` options (``prunebench finetune`` flags; empty: prune the base directly)."""

    name: str
    kind: str
    options: dict[str, Any]
    prepare: dict[str, Any] = field(default_factory=dict)

    @property
    def command(self) -> str:
        return ARM_KINDS[self.kind]


@dataclass(frozen=True)
class Experiment:
    """A validated experiment file (see the module docstring); ``source`` is its text."""

    path: Path
    source: str
    name: str
    model: str
    dataset: str
    data_dir: str | None
    seed: int
    profiles: tuple[str, ...]
    budget: Budget
    base: dict[str, Any]
    arms: tuple[Arm, ...]
    report: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The resolved content (recorded in the run folder)."""
        return {"name": self.name, "model": self.model, "dataset": self.dataset,
                "data_dir": self.data_dir, "seed": self.seed, "profiles": list(self.profiles),
                "budget": self.budget.describe(), "base": dict(self.base),
                "arms": [{"name": a.name, "kind": a.kind, **a.options,
                          **({"prepare": dict(a.prepare)} if a.prepare else {})}
                         for a in self.arms],
                "report": dict(self.report)}


def parse_budget(value: Any, where: str = "budget") -> Budget:
    """``"1.8 ms"``, ``1.8`` (ms) or ``"0.8x dense"``; anything else is an ExperimentError."""
    if isinstance(value, bool):
        match = None
    elif isinstance(value, int | float):
        match = _BUDGET.match(f"{value}ms") if math.isfinite(value) else None
    else:
        match = _BUDGET.match(str(value))
    number = float(match["value"]) if match else 0.0
    if not match or number <= 0:
        raise ExperimentError(f"{where} = {value!r} is not a latency budget; write e.g. "
                              "budget = \"1.8 ms\" or budget = \"0.8x dense\"")
    if match["unit"] and match["unit"].lower().startswith("x"):
        if number > 4:
            raise ExperimentError(f"{where} = {value!r}: a fraction of dense above 4 meets "
                                  "no pruning question; write e.g. \"0.8x dense\"")
        return Budget(fraction=number)
    return Budget(ms=number)


def load_experiment(path: str | Path) -> Experiment:
    """Read and validate ``path``; every error names the file and the key."""
    path = Path(path)
    try:
        source = path.read_text()
    except FileNotFoundError:
        raise ExperimentError(f"experiment file {path} does not exist; give the path of a "
                              "TOML file such as experiments/demo.toml") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ExperimentError(f"cannot read experiment file {path}: {exc}") from None
    try:
        data = tomllib.loads(source)
    except tomllib.TOMLDecodeError as exc:
        raise ExperimentError(f"{path} is not valid TOML: {exc}") from None
    return _validate(path, source, data)


def _validate(path: Path, source: str, data: Mapping[str, Any]) -> Experiment:
    def fail(message: str) -> ExperimentError:
        return ExperimentError(f"{path}: {message}")

    _known(data, TOP_KEYS, "top-level key", fail)
    for key in ("model", "dataset"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise fail(f"{key} is missing; name the registered {key}, e.g. "
                       f"{key} = \"{'resnet20' if key == 'model' else 'digits'}\"")
    _registered(data["model"], data["dataset"], fail)
    profiles = _profiles(data, fail, path.parent)
    if "budget" not in data:
        raise fail("budget is missing; write e.g. budget = \"0.8x dense\" or \"1.8 ms\"")
    budget = parse_budget(data["budget"], f"{path}: budget")
    seed = data.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise fail(f"seed = {seed!r} must be a whole number >= 0, e.g. seed = 0")
    base = _table(data, "base", fail)
    _known(base, BASE_KEYS, "[base] key", fail)
    stub = {"model": data["model"], "dataset": data["dataset"]}
    arms = _arms(data.get("arms"), fail, stub)
    report = _table(data, "report", fail)
    _check_options("compare", report, "[report]", fail, reserved=("budget_ms", "out", "json"),
                   stub=stub)
    name = data.get("name", path.stem)
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise fail(f"name = {name!r} must be a folder name (letters, digits, . _ -)")
    data_dir = data.get("data_dir")
    if data_dir is not None:
        if not isinstance(data_dir, str):
            raise fail(f"data_dir = {data_dir!r} must be a folder path")
        data_dir = _beside(data_dir, path.parent)
    if isinstance(base.get("checkpoint"), str):
        base["checkpoint"] = _beside(base["checkpoint"], path.parent)
    return Experiment(path=path, source=source, name=name, model=data["model"],
                      dataset=data["dataset"], data_dir=data_dir, seed=seed,
                      profiles=profiles, budget=budget, base=base, arms=arms, report=report)


def _known(table: Mapping[str, Any], known: tuple[str, ...], what: str,
           fail: Callable[[str], ExperimentError]) -> None:
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise fail(f"unknown {what} {', '.join(map(repr, unknown))}; known: {', '.join(known)}")


def _table(data: Mapping[str, Any], key: str, fail: Callable[[str], ExperimentError]
           ) -> dict[str, Any]:
    table = data.get(key, {})
    if not isinstance(table, dict):
        raise fail(f"{key} must be a table ([{key}]), not {table!r}")
    return dict(table)


def _registered(model: str, dataset: str, fail: Callable[[str], ExperimentError]) -> None:
    from prunebench.harness.datasets import DATASETS
    from prunebench.harness.models import MODELS

    for registry, value, key in ((MODELS, model, "model"), (DATASETS, dataset, "dataset")):
        try:
            registry.get(value)
        except PrunebenchError as exc:
            raise fail(f"{key} = {value!r}: {exc}") from None


def _beside(value: str, base: Path) -> str:
    """A relative path in the file is relative to the file's folder."""
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def _profiles(data: Mapping[str, Any], fail: Callable[[str], ExperimentError], base: Path
              ) -> tuple[str, ...]:
    from prunebench.harness.profiles import load_profile

    if "profile" in data and "profiles" in data:
        raise fail("give profile or profiles, not both")
    value = data.get("profiles", [data.get("profile", "cpu-1t")])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise fail(f"profiles = {value!r} must be a list of profile names, e.g. [\"cpu-1t\"]")
    if len(set(value)) != len(value):
        raise fail(f"profiles = {value!r} names a profile twice")
    value = [_beside(v, base) if v.endswith(".toml") else v for v in value]
    for name in value:
        try:
            load_profile(name)
        except PrunebenchError as exc:
            raise fail(f"profile {name!r}: {exc}") from None
    return tuple(value)


def _arms(value: Any, fail: Callable[[str], ExperimentError], stub: Mapping[str, str]
          ) -> tuple[Arm, ...]:
    if not isinstance(value, list) or not value:
        raise fail("no [[arms]]; add at least one, e.g. [[arms]] name = \"l1\" kind = \"sweep\"")
    arms: list[Arm] = []
    for i, raw in enumerate(value, 1):
        if not isinstance(raw, dict):
            raise fail(f"arm {i} must be a table ([[arms]]), not {raw!r}")
        options = dict(raw)
        name, kind = options.pop("name", None), options.pop("kind", None)
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name) \
                or name in ("report", "dense"):
            raise fail(f"arm {i}: name = {name!r} must be a folder name (letters, digits, "
                       ". _ -) other than 'report' and 'dense'")
        if name in {a.name for a in arms}:
            raise fail(f"arm {name!r} is named twice; give each arm its own name")
        if kind not in ARM_KINDS:
            raise fail(f"arm {name!r}: kind = {kind!r} is not an arm kind; use one of "
                       f"{', '.join(map(repr, ARM_KINDS))}")
        prepare = options.pop("prepare", {})
        if not isinstance(prepare, dict):
            raise fail(f"arm {name!r}: prepare must be a table ([arms.prepare])")
        _check_options(ARM_KINDS[kind], options, f"arm {name!r}", fail, reserved=RESERVED,
                       stub=stub)
        if prepare:
            _check_options("finetune", prepare, f"arm {name!r} [prepare]", fail,
                           reserved=RESERVED, stub=stub)
        arms.append(Arm(name, kind, options, prepare))
    return tuple(arms)


class _Raising(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise ExperimentError(message)


# the subcommands an experiment runs, and the module of each
COMMAND_MODULES = {"train": "prunebench.search.commands.train",
                   "baseline": "prunebench.search.commands.baseline",
                   "finetune": "prunebench.search.commands.finetune",
                   "search": "prunebench.search.commands.search",
                   "compare": "prunebench.search.commands.compare"}


def _command(command: str) -> tuple[Callable[[argparse.ArgumentParser], None], Any]:
    """(``add_arguments``, ``run``) of one subcommand an experiment runs."""
    import importlib

    mod = importlib.import_module(COMMAND_MODULES[command])
    for name, _help, add_arguments, run in getattr(mod, "COMMANDS", None) or [
            (mod.NAME, mod.HELP, mod.add_arguments, mod.run)]:
        if name == command:
            return add_arguments, run
    raise KeyError(command)


def command_parser(command: str) -> argparse.ArgumentParser:
    """The parser of one ``prunebench`` subcommand, raising instead of exiting."""
    add_arguments, _run = _command(command)
    parser = _Raising(prog=f"prunebench {command}", add_help=False)
    add_arguments(parser)
    return parser


def run_command(argv: list[str]) -> int:
    """``prunebench ARGV`` for a subcommand an experiment runs; returns its exit code."""
    from prunebench.search.commands.calling import call

    _add, run = _command(argv[0])
    try:
        args = command_parser(argv[0]).parse_args(argv[1:])
    except ExperimentError as exc:
        print(f"prunebench {argv[0]}: error: {exc}", file=sys.stderr)
        return 2
    return call(run, args)


def flags(options: Mapping[str, Any]) -> list[str]:
    """Command-line flags of TOML options: ``a_b = 1`` -> ``--a-b 1``, ``true`` -> a bare flag,
    ``false`` -> nothing, a list -> comma-joined (``option``: one ``--option`` per item)."""
    argv: list[str] = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is False:
            continue
        elif key == "option" and isinstance(value, list):
            for item in value:
                argv += [flag, str(item)]
        elif isinstance(value, list):
            argv += [flag, ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)]
        else:
            argv += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    return argv


def _check_options(command: str, options: Mapping[str, Any], where: str,
                   fail: Callable[[str], ExperimentError], *, reserved: tuple[str, ...],
                   stub: Mapping[str, str]) -> None:
    """Every key is an option of ``command`` and its value parses there (``stub``: the values
    the experiment gives the reserved options the command requires)."""
    parser = command_parser(command)
    known = {s[2:].replace("-", "_"): a for a in parser._actions for s in a.option_strings
             if s.startswith("--") and s != "--help"}
    for key, value in options.items():
        if key in reserved:
            raise fail(f"{where}: {key!r} is set by the experiment for every arm; remove it "
                       "from the arm (set model, dataset, data_dir, seed, profile(s) and budget "
                       "at the top, the base network in [base])")
        if key not in known:
            raise fail(f"{where}: unknown key {key!r}; `prunebench {command} --help` lists "
                       f"the options (write them with _ for -: e.g. finetune_epochs = 1)")
        if isinstance(value, dict):
            raise fail(f"{where}: {key} = {value!r} must be a value, not a table")
        takes_value = known[key].nargs != 0
        if isinstance(value, bool) and takes_value:
            raise fail(f"{where}: {key} = {value!r}: --{key.replace('_', '-')} takes a value, "
                       "not true/false")
        if not isinstance(value, bool) and not takes_value:
            raise fail(f"{where}: {key} = {value!r} is a switch; write {key} = true")
    given = []
    for action in parser._actions:
        if not (action.required and action.option_strings):
            continue
        key = action.option_strings[0][2:].replace("-", "_")
        if key in stub:
            given += [action.option_strings[0], stub[key]]
        elif key not in options:
            raise fail(f"{where}: {key} is missing; `prunebench {command} --help` says what "
                       "it takes")
    try:
        parser.parse_args([*given, *flags(options)] if command != "compare"
                          else ["run", *flags(options)])
    except ExperimentError as exc:
        raise fail(f"{where}: {exc}") from None
