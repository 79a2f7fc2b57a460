"""Read run folders (or DataFrames) into one merged points table, and check they share axes.

A run folder (``results/<run>/``, see ``docs/CONTRACTS.md``) holds ``config.json``, ``points.csv``
(baselines) or ``trials.csv`` (searches), and ``dense.json``. :func:`load_run` reads one;
:func:`storage_run` reads a study straight from its storage (many workers, no run folder), and
:func:`run_from_frame` wraps points that come from elsewhere (a notebook), so every consumer
(``report``, ``compare``) works from :class:`RunData` only.

:func:`merge_runs` adds the columns the analysis groups by: ``run``, ``series`` (one colour and
marker in plots: ``dense``, ``l1 uniform``, ``l1 search``, ``attention search``...), ``kind``
(``dense``/``static``/``dynamic``/``hybrid``, from each row's pruning config) and
``macs`` (per input: effective mean MACs for dynamic rows, else static MACs).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from prunebench.harness.errors import PrunebenchError

if TYPE_CHECKING:
    import optuna

POINT_FILES = ("points.csv", "trials.csv", "remeasured.csv")
BUDGET_KEYS = ("budget_ms", "latency_budget_ms")


@dataclass
class RunData:
    """One run's points (one ``Measurement.to_row()`` per row, dense reference included)."""

    name: str
    points: pd.DataFrame
    config: dict[str, Any] = field(default_factory=dict)
    dense: dict[str, Any] | None = None
    path: Path | None = None
    excluded: int = 0  # trials left out because they did not complete (failed, pruned)

    @property
    def budgets_ms(self) -> list[float]:
        """Latency budgets (ms) the run was configured with, if its config names any."""
        out: list[float] = []
        for key in BUDGET_KEYS:
            value = self.config.get(key)
            values = value if isinstance(value, list) else [value]
            out += [float(v) for v in values if isinstance(v, int | float) and v > 0]
        return out


def run_from_frame(name: str, points: pd.DataFrame, *, config: dict[str, Any] | None = None,
                   dense: dict[str, Any] | None = None) -> RunData:
    """A run from an in-memory points table (the plug-in point for storages and notebooks)."""
    points = points.copy()
    if "run_kind" not in points.columns:
        points["run_kind"] = "search"
    if dense is not None and not (points["run_kind"] == "dense").any():
        row = {k: (json.dumps(v, sort_keys=True) if isinstance(v, dict) else v)
               for k, v in dense.items() if k != "latency_samples_ms"}
        row.update(run_kind="dense", label="dense")
        points = pd.concat([pd.DataFrame([row]), points], ignore_index=True)
    if "label" not in points.columns:
        points["label"] = [f"point {i}" for i in range(len(points))]
    done = points["state"].isna() | (points["state"] == "COMPLETE") if "state" in points else True
    kept = points[done].reset_index(drop=True) if "state" in points else points
    return RunData(name=name, points=kept, config=dict(config or {}), dense=dense,
                   excluded=len(points) - len(kept))


def load_run(path: str | Path) -> RunData:
    """Read a run folder; a missing folder or points file is an error naming the path."""
    path = Path(path)
    if not path.is_dir():
        raise PrunebenchError(f"run folder {str(path)!r} does not exist; pass a folder written by "
                              "`prunebench baseline` or `prunebench search` (see results/)")
    files = [path / f for f in POINT_FILES if (path / f).is_file()]
    if not files:
        raise PrunebenchError(f"run folder {str(path)!r} has no points.csv, trials.csv or "
                              "remeasured.csv; is it a complete run folder?")
    try:
        points = pd.concat([_read_points(f) for f in files], ignore_index=True)
        config = _read_json(path / "config.json")
        dense = _read_json(path / "dense.json") or None
    except (ValueError, pd.errors.ParserError) as exc:
        raise PrunebenchError(f"cannot read run folder {str(path)!r}: {exc}; re-run or remove "
                              "the broken file") from exc
    run = run_from_frame(path.name, points, config=config, dense=dense)
    run.path = path
    return run


def study_points(study: optuna.Study) -> pd.DataFrame:
    """One row per complete trial: the stored Measurement row plus trial and worker columns.

    The columns follow ``docs/CONTRACTS.md`` (``run_kind = "search"``, ``label = "trial N"``,
    ``trial_number``), plus ``feasible`` (every constraint <= 0), ``worker_id`` and
    ``cache_hit``, so a study in a storage reads like a run folder.
    """
    from optuna.trial import TrialState

    rows = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        row = {k: v for k, v in t.user_attrs.items() if not k.startswith("val_accuracy_epoch_")}
        row.update(run_kind="search", label=f"trial {t.number}", trial_number=t.number,
                   feasible=all(v <= 0.0 for v in t.constraints.values()))
        row.setdefault("cache_hit", False)
        rows.append(row)
    return pd.DataFrame(rows)


def storage_run(url: str, study_name: str) -> RunData:
    """A run read from study ``study_name`` in the database at ``url`` (``prunebench report``)."""
    from prunebench.search.storage import load_study, open_storage, redact

    study = load_study(open_storage(url, database_only=True), study_name)
    frame = study_points(study)
    if frame.empty:
        raise PrunebenchError(f"study {study_name!r} has no complete trials yet; run workers "
                              "first (`prunebench worker --storage URL --study NAME`)")
    config = {"storage": redact(url), "study": study_name, **study.user_attrs}
    return run_from_frame(study_name, frame, config=config)


def _read_points(path: Path) -> pd.DataFrame:
    """A points file; an empty one (a search that re-measured nothing) is no rows."""
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def row_kind(config_json: Any) -> str:
    """``dense``/``static``/``dynamic``/``hybrid`` from a row's pruning-config JSON."""
    try:
        cfg = json.loads(config_json) if isinstance(config_json, str) else dict(config_json or {})
    except (TypeError, ValueError):
        return "unknown"
    static = bool(cfg.get("ratios") or cfg.get("global_ratio"))
    dynamic = bool(cfg.get("keep") or cfg.get("global_keep") is not None)
    if static and dynamic:
        return "hybrid"
    return "static" if static else "dynamic" if dynamic else "dense"


def _series_name(rows: pd.DataFrame, run_kind: str) -> str:
    """A short legend name for the rows of one run and one ``run_kind``."""
    if run_kind == "dense":
        return "dense"
    method = str(rows["method"].mode().iloc[0]) if rows["method"].notna().any() else "?"
    if run_kind != "baseline":
        return f"{method} {run_kind}"
    cfgs = [json.loads(c) if isinstance(c, str) else {} for c in rows["config"]]
    if any(c.get("ratios") or c.get("keep") for c in cfgs):
        return f"{method} sweep"
    glob = any(c.get("options", {}).get("allocation") == "global" for c in cfgs)
    return f"{method} {'global' if glob else 'uniform'}"


def merge_runs(runs: list[RunData]) -> pd.DataFrame:
    """All runs' points in one table with ``run``, ``series``, ``kind`` (and numeric ``macs``)."""
    if not runs:
        raise PrunebenchError("no run given; pass at least one run folder")
    names = [r.name for r in runs]
    frames, owner = [], {}
    for run in runs:
        pts = run.points.copy()
        pts["run"] = run.name
        pts["kind"] = [row_kind(c) for c in pts.get("config", [None] * len(pts))]
        pts["series"] = ""
        for rk, rows in pts.groupby("run_kind", sort=False):
            series = _series_name(rows, str(rk))
            # two runs yielding the same series name (e.g. two l1 searches) stay apart
            if series != "dense" and owner.setdefault(series, run.name) != run.name:
                series = f"{series} [{run.name}]"
            pts.loc[rows.index, "series"] = series
        frames.append(pts)
    if len(set(names)) != len(names):
        raise PrunebenchError(f"runs {names} share a name; give each run folder its own name")
    merged = pd.concat(frames, ignore_index=True)
    for col in ("accuracy_top1", "latency_p50_ms", "latency_p90_ms", "energy_mj_per_inference",
                "macs"):
        if col not in merged.columns:
            merged[col] = np.nan
    if "energy_method" not in merged.columns:
        merged["energy_method"] = "none"
    # rows measured before engines existed ran unfolded PyTorch eager: not the same as "eager"
    engine = merged["engine"] if "engine" in merged.columns else pd.Series(index=merged.index,
                                                                            dtype=object)
    merged["engine"] = engine.fillna("eager (unfolded, before engines)")
    # one MACs column: a dynamic row's ``macs`` is already its effective mean per input
    merged["macs"] = pd.to_numeric(merged["macs"], errors="coerce")
    return merged


def distinct(df: pd.DataFrame, column: str) -> str:
    """The distinct values of ``column`` in ``df`` joined by commas (``n/a`` when none)."""
    vals = sorted({str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)
                   for v in df[column].dropna().unique()}) if column in df else []
    return ", ".join(vals) if vals else "n/a"


def select_split(merged: pd.DataFrame, split: str = "auto", *,
                 allow_mixed: bool = False) -> tuple[pd.DataFrame, str]:
    """Keep the rows whose accuracy was measured on one data split; returns (rows, note).

    Searches score trials on ``val`` and re-measure their front on ``test``; baselines report
    ``test``. Accuracies from different splits must not share an axis. ``auto`` takes the only
    split there is, else ``test`` when every run with accuracies has test rows, else refuses.
    Rows without an accuracy are kept. With ``allow_mixed`` and ``auto``, every split is kept.
    """
    col = merged["accuracy_split"] if "accuracy_split" in merged else pd.Series(
        np.nan, index=merged.index)
    has_acc = pd.to_numeric(merged["accuracy_top1"], errors="coerce").notna()
    per_run = _spread(merged.assign(accuracy_split=col), has_acc, "accuracy_split")
    splits = sorted({v for vs in per_run.values() for v in vs})
    if split == "auto":
        if len(splits) <= 1:
            return merged, f"accuracy on the {splits[0] if splits else 'n/a'} split"
        if allow_mixed:
            return merged, f"accuracy on MIXED splits ({', '.join(splits)}), --allow-mixed"
        if not all("test" in vs for vs in per_run.values()):
            where = "; ".join(f"{r}: {', '.join(v)}" for r, v in per_run.items())
            raise PrunebenchError(f"accuracies from different splits ({where}) cannot share one "
                                  "axis; pass --split test or --split val (or --allow-mixed)")
        split = "test"
    keep = ~has_acc | (col == split)
    dropped = int((~keep).sum())
    if not (has_acc & keep).any():
        raise PrunebenchError(f"no point has an accuracy on the {split!r} split (splits here: "
                              f"{splits}); pass --split with one of them")
    note = f"accuracy on the {split} split"
    if dropped:
        others = ", ".join(s for s in splits if s != split)
        note += (f"; {dropped} point(s) measured on {others} are left out (a search scores "
                 "trials on val and re-measures its front on test)")
    return merged[keep], note


def _spread(merged: pd.DataFrame, mask: pd.Series, column: str) -> dict[str, list[str]]:
    """Distinct values of ``column`` per run among rows where ``mask`` holds."""
    rows = merged[mask & merged[column].notna()] if column in merged.columns else merged[:0]
    return {str(r): sorted(map(str, g[column].unique())) for r, g in rows.groupby("run")}


def check_comparable(merged: pd.DataFrame, *, allow_mixed: bool = False) -> list[str]:
    """Refuse latencies from different profiles/engines/fingerprints/batch sizes, or energies from
    different energy methods, on one axis; with ``allow_mixed``, return the same findings as
    warnings for the report instead."""
    has_lat = pd.to_numeric(merged["latency_p50_ms"], errors="coerce").notna()
    has_energy = pd.to_numeric(merged["energy_mj_per_inference"], errors="coerce").notna()
    checks = [("latencies", "profile", has_lat), ("latencies", "engine", has_lat),
              ("latencies", "fingerprint", has_lat),
              ("latencies", "batch_size", has_lat),
              ("energies", "energy_method", has_energy & (merged["energy_method"] != "none"))]
    found = []
    for what, column, mask in checks:
        per_run = _spread(merged, mask, column)
        values = sorted({v for vs in per_run.values() for v in vs})
        if len(values) > 1:
            where = "; ".join(f"{r}: {', '.join(v)}" for r, v in per_run.items())
            found.append(f"{what} from different {column} values ({where}) cannot share one axis")
    if found and not allow_mixed:
        raise PrunebenchError(f"{found[0]}; compare runs measured the same way, or pass "
                              "--allow-mixed to plot them together anyway (marked as mixed)")
    return found
