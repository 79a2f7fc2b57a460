"""Replay a recorded point: rebuild a search trial or sweep point from its run folder.

Every trial of ``prunebench search`` (``trials.csv``) and every point of ``prunebench baseline``
(``points.csv``) records the one :class:`PruningConfig` that built it, and the run's
``config.json`` records the workload (model, data set, checkpoint, seed, training recipe) and the
profile. :func:`recorded_point` reads both; :func:`replay` rebuilds the network through
:mod:`harness.pruning.pipeline` and measures it, so any number in a plot can be traced to how it
was made: the same MACs always, and with the same seed and thread count the same accuracy.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prunebench.harness.errors import PrunebenchError
from prunebench.harness.evaluate import Workload
from prunebench.harness.pruning import PruningConfig
from prunebench.harness.pruning.pipeline import method_kind
from prunebench.search.runs.files import read_json

# recorded columns shown beside the replayed ones
COMPARED = ("macs", "params", "accuracy_top1", "latency_p50_ms")


@dataclass(frozen=True)
class RecordedPoint:
    """One recorded trial or sweep point: what built it and what was measured then."""

    run_dir: Path
    command: str  # "search" or "baseline"
    label: str  # "trial 3" or "l1 r=0.5"
    config: PruningConfig
    workload: Workload
    profile: str
    split: str  # the split its accuracy was measured on
    recorded: dict[str, Any]  # the recorded row (numbers parsed)


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise PrunebenchError(f"{path} is missing; the run has not finished writing its table "
                              "(resume it first)")
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def upgrade_config(data: dict[str, Any]) -> PruningConfig:
    """A recorded config as a :class:`PruningConfig`, including records written before the
    pipeline fields existed (a dynamic or hybrid trial then kept its fine-tune epochs and its
    static method inside ``options``, which the dynamic methods do not take)."""
    data = dict(data)
    options = dict(data.get("options") or {})
    static_method = options.pop("static_method", None)
    if static_method is not None and "static_method" not in data:
        data["static_method"] = static_method
        data["static_options"] = {k: options.pop(k) for k in ("round_to",) if k in options}
    if static_method is not None or method_kind(data.get("method", "dense")) == "dynamic":
        epochs = options.pop("finetune_epochs", 0)
        if epochs and not data.get("finetune_epochs"):
            data["finetune_epochs"] = int(epochs)
    data["options"] = options
    return PruningConfig.from_dict(data)


def _number(text: str) -> Any:
    if text in ("", None):
        return None
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text and "e" not in text else value


def recorded_point(run_dir: str | Path, *, trial: int | None = None,
                   point: str | None = None) -> RecordedPoint:
    """The recorded trial ``trial`` of a search run, or sweep point ``point`` of a baseline."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise PrunebenchError(f"--from {run_dir} is not a folder; give a run folder such as "
                              "results/search-...")
    if (trial is None) == (point is None):
        raise PrunebenchError("--from needs exactly one of --trial N (a search run) or "
                              "--point LABEL (a baseline sweep)")
    if not (run_dir / "config.json").is_file():
        raise PrunebenchError(f"{run_dir / 'config.json'} is missing; --from takes a run folder "
                              "written by `prunebench search` or `prunebench baseline`")
    config = read_json(run_dir / "config.json", "the run folder is damaged; re-run it")
    command = config.get("command", "search" if "spec" in config else "baseline")
    if command == "search":
        if trial is None:
            raise PrunebenchError(f"{run_dir} is a search run; pick a trial with --trial N "
                                  "(trial numbers: its trials.csv)")
        return _search_point(run_dir, config, trial)
    if command == "baseline":
        if point is None:
            raise PrunebenchError(f"{run_dir} is a baseline sweep; pick a point with --point "
                                  "LABEL (labels: its points.csv)")
        return _baseline_point(run_dir, config, point)
    raise PrunebenchError(f"{run_dir}/config.json was written by {command!r}; --from takes "
                          "search and baseline runs")


def _search_point(run_dir: Path, config: dict[str, Any], trial: int) -> RecordedPoint:
    spec = config["spec"]
    rows = _rows(run_dir / "trials.csv")
    row = next((r for r in rows if r.get("trial_number") == str(trial)), None)
    if row is None:
        numbers = ", ".join(r["trial_number"] for r in rows[:12])
        raise PrunebenchError(f"trial {trial} is not in {run_dir}/trials.csv; its trials: "
                              f"{numbers or '(none)'}")
    if not row.get("config"):
        raise PrunebenchError(f"trial {trial} of {run_dir} recorded no configuration (state "
                              f"{row.get('state')}); pick a completed trial")
    from prunebench.search.objective import SearchSpec

    workload = Workload(model=spec["model"], dataset=spec.get("dataset"),
                        data_dir=spec.get("data_dir"), checkpoint=spec.get("checkpoint"),
                        seed=int(spec.get("seed", 0)), image_size=spec.get("image_size"),
                        recipe=SearchSpec.from_dict(spec).training_recipe())
    return RecordedPoint(run_dir, "search", f"trial {trial}",
                         upgrade_config(json.loads(row["config"])), workload, spec["profile"],
                         row.get("accuracy_split") or "val", _parsed(row))


def _baseline_point(run_dir: Path, config: dict[str, Any], label: str) -> RecordedPoint:
    from prunebench.harness.train import Recipe

    args = config["args"]
    rows = _rows(run_dir / "points.csv")  # read only: replay never rewrites a run folder
    row = next((r for r in rows if r.get("label") == label), None)
    if row is None:
        labels = ", ".join(repr(r["label"]) for r in rows[:12])
        raise PrunebenchError(f"point {label!r} is not in {run_dir}/points.csv; its points: "
                              f"{labels or '(none)'}")
    recipe = Recipe(**config["recipe"]) if "recipe" in config else None
    workload = Workload(model=args["model"], dataset=args.get("dataset"),
                        data_dir=args.get("data_dir"), checkpoint=args.get("checkpoint"),
                        seed=int(args.get("seed", 0)), image_size=args.get("image_size"),
                        **({"recipe": recipe} if recipe is not None else {}))
    return RecordedPoint(run_dir, "baseline", label, upgrade_config(json.loads(row["config"])),
                         workload, args.get("profile", "cpu-1t"),
                         row.get("accuracy_split") or config.get("accuracy_split", "test"),
                         _parsed(row))


def _parsed(row: dict[str, str]) -> dict[str, Any]:
    return {k: _number(v) for k, v in row.items() if k in COMPARED or k == "accuracy_split"}


def replay(point: RecordedPoint, *, profile: str | None = None, split: str | None = None,
           force: bool = False, speedup_vs_dense: bool = False, progress: bool = True) -> Any:
    """Rebuild ``point``'s network from its config and measure it; returns the Measurement."""
    from prunebench.harness.evaluate import evaluate, prepare
    from prunebench.harness.profiles import check_usable, load_profile

    prof = load_profile(profile or point.profile)
    check_usable(prof, force=force)  # fail before any training
    prepared = prepare(point.workload, progress=progress)
    return evaluate(prepared, point.config, prof, split=split or point.split, force=force,
                    speedup_vs_dense=speedup_vs_dense, progress=progress)


def comparison(point: RecordedPoint, m: Any) -> dict[str, dict[str, Any]]:
    """``{column: {"recorded": x, "replayed": y, "same": bool}}`` for MACs, params, accuracy
    and latency (latency is expected to move with the machine; the others are not)."""
    out = {}
    for key in COMPARED:
        old, new = point.recorded.get(key), getattr(m, key)
        same = None
        if old is not None and new is not None:
            same = math.isclose(float(old), float(new), rel_tol=1e-9, abs_tol=1e-12)
        out[key] = {"recorded": old, "replayed": new, "same": same}
    return out
