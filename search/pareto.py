"""Non-dominated sets, hypervolumes and front-to-front comparisons (pure functions on DataFrames).

Nothing here draws or writes files (STYLE item 10, "compute, then draw"): ``plots.py`` and
``report.py`` only show what these functions return. Objectives are columns of the merged points
DataFrame (one ``Measurement.to_row()`` per row) with a direction; :data:`OBJECTIVES` holds the
short names the CLI accepts (``accuracy``, ``latency_p50``, ``energy``, ``macs``...).

Conventions:

- A point *dominates* another when it is at least as good in every objective and strictly better
  in one. Duplicates do not dominate each other, so all copies of a non-dominated point stay.
- Rows with a missing value (NaN) in any chosen objective are never on a front.
- Hypervolumes are computed after turning every objective into one to minimise. The reference
  point is shared by all compared runs (:func:`reference_point`), and :func:`hypervolume` can
  normalise each axis to [0, 1] between the best value seen and the reference, so that a
  hypervolume is a unitless fraction of the shared box and fronts can be compared.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from prunebench.harness.errors import PrunebenchError

MINIMIZE = "minimize"
MAXIMIZE = "maximize"


@dataclass(frozen=True)
class Objective:
    """One axis of a front: a points-table column, its direction and an axis label with unit."""

    column: str
    direction: str  # MINIMIZE or MAXIMIZE
    label: str

    @property
    def sign(self) -> float:
        """+1 for minimise, -1 for maximise (multiply to get a value to minimise)."""
        return 1.0 if self.direction == MINIMIZE else -1.0


OBJECTIVES: dict[str, Objective] = {
    "accuracy": Objective("accuracy_top1", MAXIMIZE, "top-1 accuracy"),
    "accuracy_top5": Objective("accuracy_top5", MAXIMIZE, "top-5 accuracy"),
    "latency_p50": Objective("latency_p50_ms", MINIMIZE, "latency p50 (ms per batch)"),
    "latency_p90": Objective("latency_p90_ms", MINIMIZE, "latency p90 (ms per batch)"),
    "latency_p99": Objective("latency_p99_ms", MINIMIZE, "latency p99 (ms per batch)"),
    "energy": Objective("energy_mj_per_inference", MINIMIZE, "energy (mJ per inference)"),
    "macs": Objective("macs", MINIMIZE, "MACs per input (effective, mean)"),
    "params": Objective("params", MINIMIZE, "parameters"),
    "memory": Objective("peak_memory_bytes", MINIMIZE, "peak memory (bytes)"),
    "size": Objective("model_size_bytes", MINIMIZE, "model size (bytes)"),
}


def parse_objectives(spec: str | Sequence[str]) -> list[Objective]:
    """Objectives from ``"accuracy,latency_p50"`` (short names, or ``COLUMN:min``/``:max``)."""
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if len(names) < 2:
        raise PrunebenchError(f"objectives {spec!r} name fewer than two objectives; give e.g. "
                              "--objectives accuracy,latency_p50")
    out = []
    for name in names:
        if name in OBJECTIVES:
            out.append(OBJECTIVES[name])
            continue
        column, _, way = name.partition(":")
        if way not in ("min", "max"):
            raise PrunebenchError(
                f"unknown objective {name!r}; use one of {sorted(OBJECTIVES)} or COLUMN:min / "
                "COLUMN:max")
        out.append(Objective(column, MINIMIZE if way == "min" else MAXIMIZE, column))
    if len({o.column for o in out}) != len(out):
        raise PrunebenchError(f"objectives {spec!r} name a column twice; name each once")
    return out


def _costs(df: pd.DataFrame, objectives: Sequence[Objective]) -> np.ndarray:
    """The objective values as an (n, d) float array to minimise (maximised columns negated)."""
    missing = [o.column for o in objectives if o.column not in df.columns]
    if missing:
        raise PrunebenchError(f"points have no column(s) {missing}; pick objectives among the "
                              f"measured ones: {sorted(OBJECTIVES)}")
    cols = [pd.to_numeric(df[o.column], errors="coerce").to_numpy(float) * o.sign
            for o in objectives]
    return np.column_stack(cols) if cols else np.empty((len(df), 0))


def non_dominated_mask(costs: np.ndarray) -> np.ndarray:
    """Boolean mask of the rows of ``costs`` (n, d; all minimised) that no other row dominates.

    Rows with a NaN are never non-dominated. Equal rows do not dominate each other.
    """
    costs = np.asarray(costs, dtype=float)
    valid = ~np.isnan(costs).any(axis=1)
    mask = np.zeros(len(costs), dtype=bool)
    pts = costs[valid]
    if len(pts):
        # i is dominated if some j is <= in all objectives and < in one (O(n^2 d); fronts are small)
        le = (pts[:, None, :] <= pts[None, :, :]).all(axis=2)  # le[j, i]: j weakly better than i
        lt = (pts[:, None, :] < pts[None, :, :]).any(axis=2)
        dominated = (le & lt).any(axis=0)
        mask[np.flatnonzero(valid)] = ~dominated
    return mask


def pareto_front(df: pd.DataFrame, objectives: Sequence[Objective]) -> pd.DataFrame:
    """The non-dominated rows of ``df``, sorted by the first objective (best first)."""
    front = df[non_dominated_mask(_costs(df, objectives))]
    first = objectives[0]
    return front.sort_values(first.column, ascending=first.direction == MINIMIZE, kind="stable")


def fronts_by(df: pd.DataFrame, objectives: Sequence[Objective],
              by: str = "series") -> dict[str, pd.DataFrame]:
    """One front per value of column ``by`` (in order of first appearance)."""
    return {str(k): pareto_front(g, objectives) for k, g in df.groupby(by, sort=False)}


def reference_point(frames: Sequence[pd.DataFrame], objectives: Sequence[Objective],
                    margin: float = 0.1) -> np.ndarray:
    """A reference point (in minimise form) shared by every compared run.

    Per objective: the worst value over all rows of all ``frames``, moved further out by
    ``margin`` times the range (worst - best) of that objective, so that the worst points still
    add volume. A zero range is padded by ``margin`` x |worst| (or ``margin`` if that is 0).
    Returned in minimise form (maximised objectives negated), as :func:`hypervolume` expects.
    """
    costs = np.vstack([_costs(f, objectives) for f in frames]) if frames else np.empty((0, 0))
    costs = costs[~np.isnan(costs).any(axis=1)] if costs.size else costs
    if not len(costs):
        raise PrunebenchError("no point has all objectives measured; check the runs' CSVs or pick "
                              "other --objectives")
    worst, best = costs.max(axis=0), costs.min(axis=0)
    span = worst - best
    pad = np.where(span > 0, span, np.where(worst != 0, np.abs(worst), 1.0)) * margin
    return worst + pad


def ideal_point(frames: Sequence[pd.DataFrame], objectives: Sequence[Objective]) -> np.ndarray:
    """The best value per objective over all rows (minimise form): the other corner of the box."""
    costs = np.vstack([_costs(f, objectives) for f in frames])
    return np.nanmin(costs, axis=0)


def hypervolume(df: pd.DataFrame, objectives: Sequence[Objective], reference: np.ndarray,
                ideal: np.ndarray | None = None) -> float:
    """Volume of objective space dominated by the rows of ``df`` and bounded by ``reference``.

    ``reference`` (and ``ideal``) are in minimise form (see :func:`reference_point`). With
    ``ideal``, each axis is first scaled so ideal -> 0 and reference -> 1: the result is then the
    unitless fraction of the shared box. Without it the unit is the product of the objectives'
    units. Rows with NaN or not strictly better than the reference in every objective add nothing.
    """
    ref = np.asarray(reference, dtype=float)
    pts = _costs(df, objectives)
    if ideal is not None:
        scale = ref - np.asarray(ideal, dtype=float)
        scale[scale <= 0] = 1.0
        pts, ref = (pts - ideal) / scale, np.ones_like(ref)
    pts = pts[~np.isnan(pts).any(axis=1)]
    pts = pts[(pts < ref).all(axis=1)]
    if not len(pts):
        return 0.0
    pts = pts[non_dominated_mask(pts)]
    return float(_hv(np.unique(pts, axis=0), ref))


def _hv(pts: np.ndarray, ref: np.ndarray) -> float:
    """Exact hypervolume of non-dominated, strictly-inside points (minimise)."""
    if pts.shape[1] == 1:
        return float(ref[0] - pts[:, 0].min())
    if pts.shape[1] == 2:
        return _hv_2d(pts, ref)
    try:  # Optuna's exact WFG / 3-D implementation (private module; present in optuna 5)
        from optuna._hypervolume import compute_hypervolume
    except ImportError:  # pragma: no cover - depends on the installed optuna
        return hv_slicing(pts, ref)
    return float(compute_hypervolume(pts, ref, assume_pareto=True))


def _hv_2d(pts: np.ndarray, ref: np.ndarray) -> float:
    """Exact 2-D sweep: sort by x, add the rectangle each point adds below the previous y."""
    pts = pts[np.argsort(pts[:, 0], kind="stable")]
    total, prev_y = 0.0, ref[1]
    for x, y in pts:
        if y < prev_y:
            total += (ref[0] - x) * (prev_y - y)
            prev_y = y
    return total


def hv_slicing(pts: np.ndarray, ref: np.ndarray) -> float:
    """Exact hypervolume in any dimension by slicing along the last objective (small sets).

    Between consecutive values of the last objective, the dominated region's cross-section is the
    (d-1)-dimensional hypervolume of the points already passed. O(n^2) calls of one lower
    dimension: fine for fronts of tens of points; kept as the fallback to Optuna's WFG.
    """
    pts = np.asarray(pts, dtype=float)
    if pts.shape[1] == 2:
        return _hv_2d(pts, ref)
    pts = pts[np.argsort(pts[:, -1], kind="stable")]
    total = 0.0
    for i in range(len(pts)):
        upper = pts[i + 1, -1] if i + 1 < len(pts) else ref[-1]
        if upper > pts[i, -1]:
            head = pts[: i + 1, :-1]
            total += hv_slicing(head[non_dominated_mask(head)], ref[:-1]) * (upper - pts[i, -1])
    return total


ACCURACY = OBJECTIVES["accuracy"]
LATENCY = OBJECTIVES["latency_p50"]


def _best_row(df: pd.DataFrame, first: Objective, then: Objective) -> pd.Series | None:
    """The row best in ``first``, ties broken by ``then``, then by original order."""
    if df.empty:
        return None
    key = pd.DataFrame({"a": _costs(df, [first])[:, 0], "b": _costs(df, [then])[:, 0],
                        "i": np.arange(len(df))})
    return df.iloc[int(key.sort_values(["a", "b", "i"]).iloc[0]["i"])]


def _valid(df: pd.DataFrame, objectives: Sequence[Objective]) -> pd.DataFrame:
    return df[~np.isnan(_costs(df, objectives)).any(axis=1)]


def best_under_budget(df: pd.DataFrame, budget: float, *, cost: Objective = LATENCY,
                      quality: Objective = ACCURACY) -> pd.Series | None:
    """The best-``quality`` row whose ``cost`` is within ``budget`` (same unit as the column).

    "Within" means <= for a minimised cost (>= for a maximised one). Ties go to the cheaper row.
    ``None`` when no measured row fits.
    """
    rows = _valid(df, [cost, quality])
    fits = _costs(rows, [cost])[:, 0] <= budget * cost.sign
    return _best_row(rows[fits], quality, cost)


def compare_fronts(base: pd.DataFrame, other: pd.DataFrame, *, cost: Objective = LATENCY,
                   quality: Objective = ACCURACY) -> pd.DataFrame:
    """How ``other`` (e.g. the dynamic front) fares against each point of ``base`` (static).

    One row per row of ``base`` (same index) with:

    - ``dominated``: some point of ``other`` is at least as good in both objectives and strictly
      better in one;
    - ``cost_saved``: ``base``'s cost minus the lowest cost ``other`` reaches at equal-or-better
      quality (positive: ``other`` is cheaper; NaN: ``other`` never reaches that quality);
    - ``cost_saved_rel``: ``cost_saved`` as a fraction of ``base``'s cost;
    - ``quality_gained``: the best quality ``other`` reaches at equal-or-lower cost minus
      ``base``'s (positive: ``other`` is better; NaN: ``other`` is never that cheap).

    Values are in the columns' own units; positive always means ``other`` is better.
    """
    b = _costs(base, [cost, quality])
    o = _costs(_valid(other, [cost, quality]), [cost, quality])
    rows = []
    for bc, bq in b:
        weak = (o[:, 0] <= bc) & (o[:, 1] <= bq)
        strict = (o[:, 0] < bc) | (o[:, 1] < bq)
        at_quality = o[o[:, 1] <= bq, 0]
        at_cost = o[o[:, 0] <= bc, 1]
        saved = bc - at_quality.min() if len(at_quality) else np.nan
        rows.append({"dominated": bool((weak & strict).any()), "cost_saved": saved,
                     "cost_saved_rel": saved / abs(bc) if bc else np.nan,
                     # quality is in minimise form: gained = base - best other
                     "quality_gained": bq - at_cost.min() if len(at_cost) else np.nan})
    cols = ["dominated", "cost_saved", "cost_saved_rel", "quality_gained"]
    return pd.DataFrame(rows, index=base.index, columns=cols)


def attainment_surfaces(runs: Sequence[pd.DataFrame], cost: Objective, quality: Objective,
                        grid: np.ndarray) -> np.ndarray:
    """Empirical attainment surfaces of ``runs`` (one points table per seed) in two objectives.

    Row ``k - 1`` of the returned ``(len(runs), len(grid))`` array is the k-th surface at each
    ``grid`` value of ``cost``: the best ``quality`` that at least k of the runs reach at a cost
    no worse than it (NaN where fewer than k runs are that cheap). Row 0 is the best run's
    surface, the last row the worst run's, row ``ceil(n / 2) - 1`` the median attainment
    (Fonseca & Fleming 1996; López-Ibáñez, Paquete & Stützle 2010). Values in the columns' units.
    """
    grid = np.asarray(grid, dtype=float)
    best = np.full((len(runs), len(grid)), np.inf)  # minimise form
    for i, run in enumerate(runs):
        pts = _costs(_valid(run, [cost, quality]), [cost, quality])
        for c, q in pts:
            reach = grid * cost.sign >= c
            best[i, reach] = np.minimum(best[i, reach], q)
    surfaces = np.sort(best, axis=0) * quality.sign
    surfaces[~np.isfinite(surfaces)] = np.nan
    return surfaces
