"""A baseline sweep: one static method at several uniform ratios, each point measured.

A sweep writes one folder (``results/baseline-<model>-<dataset>-<method>-<timestamp>/`` unless
given another): ``config.json`` (resolved arguments, profile, recipe, environment),
``dense.json`` (the dense reference) and ``points.csv`` (the dense row, then one
``Measurement.to_row()`` per point with ``run_kind`` and ``label``), rewritten atomically after
every point. Accuracy is on the TEST split: a sweep is a report, not a tuning run. Sweeping into
an existing folder resumes it: finished points are skipped and ratios may be added; a row of
``points.csv`` that was not written whole is dropped with a warning and measured again, and an
unreadable ``config.json`` or ``dense.json`` is one line naming the file and the fix.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prunebench.harness.errors import PrunebenchError
from prunebench.harness.files import keep_copy
from prunebench.search.runs.files import check_out_dir, read_json, write_atomic, write_json

# arguments that may change between a sweep and its resumption
# not compared on resume: output, forcing, the points asked for, and where training runs (a sweep
# may resume on another machine; --amp and --channels-last still count)
VOLATILE_ARGS = ("quiet", "json", "force", "ratios", "_run", "train_device", "workers",
                 "train_runtime")
# a points.csv row without one of these was not written whole: its point is measured again
POINT_COLUMNS = ("run_kind", "label", "config", "macs", "params", "latency_p50_ms")


@dataclass(frozen=True, eq=False)
class SweepResult:
    """A finished sweep: its folder, the dense reference and every ``points.csv`` row."""

    run_dir: Path
    dense: Any  # prunebench.harness.measurement.Measurement
    rows: list[dict[str, Any]]


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


def sweep_points(method: str, ratios: Sequence[float],
                 options: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """(label, PruningConfig) per point to measure: one per ratio, or one point for a method
    that chooses its own amount (``target``/``budget`` in ``options``)."""
    from prunebench.harness.pruning import PruningConfig

    opts = dict(options)
    if ratios:
        return [(f"{method} r={r:g}", PruningConfig(method, global_ratio=r, options=opts))
                for r in ratios]
    if not (opts.get("target") or opts.get("budget")):
        raise PrunebenchError("give --ratios, e.g. --ratios 0.25,0.5,0.75 (or --target K=V for a "
                              "method that chooses its own amount)")
    spec = " ".join(f"{k}={opts[k]}" for k in ("target", "budget") if k in opts)
    return [(f"{method} {spec}", PruningConfig(method, options=opts))]


def default_sweep_dir(model: str, dataset: str, method: str) -> Path:
    """``results/baseline-<model>-<dataset>-<method>-<timestamp>``."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("results") / f"baseline-{model}-{dataset}-{method}-{stamp}"


def read_points(path: Path) -> list[dict[str, str]]:
    """Rows of an existing ``points.csv`` (as strings), or ``[]``.

    A row that is not whole (no line end, too few or too many fields, a required column
    (:data:`POINT_COLUMNS`) empty, or its JSON cut) is dropped, so that its point is measured
    again: the file is rewritten without it, one warning line names the file and the rows, and
    the original is kept beside it as ``points.csv.bak-<timestamp>``.
    """
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        text = f.read()
    records = list(csv.reader(io.StringIO(text)))
    if not records:
        return []
    header, rows, dropped = records[0], [], []
    for i, record in enumerate(records[1:], start=2):
        last = i == len(records)
        why = _incomplete(header, record, ends=not last or text.endswith(("\n", "\r")))
        if why is None:
            rows.append(dict(zip(header, record, strict=True)))
        else:
            label = record[header.index("label")] if "label" in header and len(record) > \
                header.index("label") else "?"
            dropped.append(f"row {i} ({label!r}: {why})")
    if dropped:
        copy = keep_copy(path)
        write_points(path, rows)  # warned once: the next resume finds a whole file
        print(f"prunebench: warning: {path}: dropped {len(dropped)} row(s) not written whole "
              f"(a crash mid-write?): {'; '.join(dropped)}; they are measured again, and the "
              f"original is kept as {copy.name}", file=sys.stderr)
    return rows


def _incomplete(header: list[str], record: list[str], *, ends: bool) -> str | None:
    """Why ``record`` of a ``points.csv`` is not a whole row (``None``: it is)."""
    if not ends:
        return "no line end"
    if len(record) != len(header):
        return f"{len(record)} of {len(header)} fields"
    row = dict(zip(header, record, strict=True))
    missing = [c for c in POINT_COLUMNS if not row.get(c)]
    if missing:
        return f"no {missing[0]}"
    for column in ("config", "environment"):
        if row.get(column):
            try:
                json.loads(row[column])
            except ValueError:
                return f"{column} is cut"
    return None


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


def check_resume(run_dir: Path, args: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``config.json`` of a sweep already in ``run_dir`` (``None``: a new folder); a sweep
    with other arguments there is refused, naming the first that differs."""
    path = run_dir / "config.json"
    if not path.is_file():
        return None
    old = read_json(path, "delete it to resume with the arguments given now (points.csv is "
                     "kept), or use another --out")
    if not isinstance(old, dict) or not isinstance(old.get("args", {}), dict):
        raise PrunebenchError(f"{path} is not a sweep's config.json (no args); delete it to "
                              "resume with the arguments given now, or use another --out")
    old_args = {k: v for k, v in old.get("args", {}).items() if k not in VOLATILE_ARGS}
    new_args = {k: v for k, v in args.items() if k not in VOLATILE_ARGS}
    diff = sorted(k for k in set(old_args) | set(new_args) if old_args.get(k) != new_args.get(k))
    if diff:
        raise PrunebenchError(f"--out {run_dir} holds a run with different arguments ({diff[0]}: "
                              f"{old_args.get(diff[0])!r}); use another --out or the same "
                              "arguments to resume")
    return old


def run_sweep(run_dir: Path, points: list[tuple[str, Any]], *, workload: Any, profile: Any,
              args: Mapping[str, Any], force: bool = False, progress: bool = True,
              dense: Any = None) -> SweepResult:
    """Measure the dense network and every point not measured yet; write the folder after each.

    ``workload`` is a ``harness.evaluate.Workload`` (its recipe is recorded), ``profile`` a loaded
    and usable hardware profile, ``args`` the resolved arguments recorded in ``config.json`` (a
    folder holding a sweep with other arguments is refused; ``args["ratios"]`` accumulates the
    ratios of every invocation). ``dense``: a dense Measurement taken elsewhere (``--dense``),
    used as this sweep's dense point and anchor when the folder has none yet.
    """
    from tqdm import tqdm

    from prunebench.harness.evaluate import evaluate, prepare

    args = dict(args)
    check_out_dir(run_dir)  # a file or a read-only folder is named before dense is measured
    old = check_resume(run_dir, args)
    run_dir.mkdir(parents=True, exist_ok=True)
    if old is not None:  # keep ratios a previous invocation asked for
        done_ratios = parse_ratios(old["args"].get("ratios"))
        args["ratios"] = ",".join(f"{r:g}" for r in dict.fromkeys(
            done_ratios + parse_ratios(args.get("ratios"))))
    rows = read_points(run_dir / "points.csv")
    stored = _stored_dense(run_dir)  # checked before the (possibly long) preparation
    if stored is None and dense is not None:  # a given dense point: this run's frame too
        write_json(run_dir / "dense.json", dense.to_dict())
        stored = dense
    prepared = prepare(workload, progress=progress)
    dense, rows = _dense(run_dir, rows, stored, prepared, profile, force=force,
                         progress=progress)
    config = {"command": "baseline", "args": args, "profile": dataclasses.asdict(profile),
              "recipe": workload.recipe.to_dict(), "accuracy_split": "test",
              "environment": dense.environment}
    write_json(run_dir / "config.json", config)
    done = {r["label"] for r in rows}
    todo = [(label, cfg) for label, cfg in points if label not in done]
    for label, cfg in tqdm(todo, desc="baseline", disable=not progress, file=sys.stderr):
        # in the run's dense frame: p50 = the dense point's p50 / the interleaved speedup, so a
        # busy machine's slow minutes cannot put a pruned point behind its own dense point
        m = evaluate(prepared, cfg, profile, split="test", force=force,
                     latency_anchor_ms=dense.latency_p50_ms, progress=progress)
        rows.append({"run_kind": "baseline", "label": label, **m.to_row()})
        write_points(run_dir / "points.csv", rows)
    return SweepResult(run_dir, dense, rows)


def read_measurement(path: Path, fix: str, what: str = "") -> Any:
    """The Measurement in JSON file ``path``; unreadable or not one: one line ending in ``fix``
    (``what``, e.g. ``"--dense "``, prefixes the path in the message)."""
    from prunebench.harness.measurement import Measurement

    try:
        return Measurement.from_dict(read_json(path, fix))
    except (TypeError, AttributeError, KeyError):
        raise PrunebenchError(f"{what}{path} is not a Measurement; {fix}") from None


def _stored_dense(run_dir: Path) -> Any:
    """The dense reference in ``run_dir/dense.json`` (``None``: no such file)."""
    path = run_dir / "dense.json"
    if not path.is_file():
        return None
    return read_measurement(path, "delete it to measure the dense reference again, or use "
                                  "another --out")


def _dense(run_dir: Path, rows: list[dict[str, Any]], dense: Any, prepared: Any, profile: Any,
           *, force: bool, progress: bool) -> tuple[Any, list[dict[str, Any]]]:
    """The sweep's dense reference: ``dense`` when resuming (its ``points.csv`` row rebuilt
    from it if that row was lost), else measured now and written."""
    from prunebench.harness.evaluate import evaluate
    from prunebench.harness.pruning import DENSE

    if dense is not None and any(r["label"] == "dense" for r in rows):
        return dense, rows
    if dense is None:
        dense = evaluate(prepared, DENSE, profile, split="test", force=force, progress=progress)
        write_json(run_dir / "dense.json", dense.to_dict())
    rows = [r for r in rows if r["label"] != "dense"]
    rows.insert(0, {"run_kind": "dense", "label": "dense", **dense.to_row()})
    write_points(run_dir / "points.csv", rows)
    return dense, rows
