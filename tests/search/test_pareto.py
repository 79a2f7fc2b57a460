"""Exact tests of fronts, hypervolumes, lookups and front-to-front dominance."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from prunebench.harness.errors import PrunebenchError
from prunebench.search import pareto
from prunebench.search.pareto import ACCURACY, LATENCY, MAXIMIZE, MINIMIZE, OBJECTIVES, Objective

ACC_LAT = [ACCURACY, LATENCY]


def _frame(points: list[tuple[float, float]]) -> pd.DataFrame:
    """(accuracy, latency_ms) pairs with a label per row."""
    return pd.DataFrame({"accuracy_top1": [p[0] for p in points],
                         "latency_p50_ms": [p[1] for p in points],
                         "label": [f"p{i}" for i in range(len(points))]})


def test_front_mixed_directions_known_set() -> None:
    df = _frame([(0.90, 10.0), (0.85, 5.0), (0.80, 6.0), (0.92, 20.0), (0.70, 2.0), (0.85, 7.0)])
    front = pareto.pareto_front(df, ACC_LAT)
    # sorted by the first objective (accuracy, maximised): best first
    assert list(front["label"]) == ["p3", "p0", "p1", "p4"]


def test_front_ties_and_duplicates_kept_nan_dropped() -> None:
    df = _frame([(0.9, 5.0), (0.9, 5.0), (0.9, 6.0), (0.8, 5.0), (float("nan"), 1.0),
                 (0.95, float("nan"))])
    front = pareto.pareto_front(df, ACC_LAT)
    assert sorted(front["label"]) == ["p0", "p1"]  # equal points do not dominate each other


def test_non_dominated_mask_three_objectives() -> None:
    costs = np.array([[1, 2, 3], [2, 1, 3], [1, 2, 4], [3, 3, 3], [0, 5, 5]], dtype=float)
    assert list(pareto.non_dominated_mask(costs)) == [True, True, False, False, True]


def test_parse_objectives_and_errors() -> None:
    objs = pareto.parse_objectives("accuracy, latency_p50,peak_memory_bytes:min")
    assert [o.column for o in objs] == ["accuracy_top1", "latency_p50_ms", "peak_memory_bytes"]
    assert [o.direction for o in objs] == [MAXIMIZE, MINIMIZE, MINIMIZE]
    for bad in ("accuracy", "accuracy,speed", "accuracy,accuracy"):
        with pytest.raises(PrunebenchError):
            pareto.parse_objectives(bad)
    with pytest.raises(PrunebenchError, match="no column"):
        pareto.pareto_front(_frame([(0.5, 1.0)]), [ACCURACY, pareto.OBJECTIVES["energy"]])


def test_hypervolume_2d_exact_with_max_objective() -> None:
    df = _frame([(0.9, 10.0), (0.8, 4.0), (0.5, 1.0), (0.4, 8.0)])  # last one dominated
    ref = np.array([-0.0, 12.0])  # accuracy 0 (negated), 12 ms
    # staircase: 0.9*(12-10) + 0.8*(10-4) + 0.5*(4-1) = 1.8 + 4.8 + 1.5
    assert pareto.hypervolume(df, ACC_LAT, ref) == pytest.approx(8.1)
    # points outside the reference box add nothing
    assert pareto.hypervolume(df, ACC_LAT, np.array([-0.95, 12.0])) == 0.0


def test_hypervolume_normalised_is_fraction_of_box() -> None:
    df = _frame([(1.0, 0.0)])
    ref = np.array([-0.0, 10.0])
    ideal = pareto.ideal_point([df], ACC_LAT)
    assert pareto.hypervolume(df, ACC_LAT, ref, ideal=ideal) == pytest.approx(1.0)
    half = _frame([(0.5, 0.0), (1.0, 5.0)])
    ideal = np.array([-1.0, 0.0])
    assert pareto.hypervolume(half, ACC_LAT, ref, ideal=ideal) == pytest.approx(0.75)


def test_reference_point_shared_and_padded() -> None:
    a = _frame([(0.9, 10.0), (0.7, 2.0)])
    b = _frame([(0.6, 4.0), (0.95, 30.0)])
    ref = pareto.reference_point([a, b], ACC_LAT, margin=0.1)
    # worst accuracy 0.6 (range 0.35) -> -(0.6 - 0.035); worst latency 30 (range 28) -> 32.8
    assert ref == pytest.approx([-0.565, 32.8])
    flat = pareto.reference_point([_frame([(0.5, 3.0)])], ACC_LAT, margin=0.1)
    assert flat == pytest.approx([-0.45, 3.3])
    with pytest.raises(PrunebenchError):
        pareto.reference_point([_frame([(float("nan"), 1.0)])], ACC_LAT)


def _grid_count(pts: np.ndarray, ref: np.ndarray) -> int:
    """Brute force: unit cells [c, c+1)^d below ref dominated by some point (integer coords)."""
    count = 0
    for cell in itertools.product(*(range(int(r)) for r in ref)):
        if any((p <= np.array(cell)).all() for p in pts):
            count += 1
    return count


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_hypervolume_3d_matches_grid_count(seed: int) -> None:
    rng = np.random.default_rng(seed)
    pts = rng.integers(0, 7, size=(9, 3)).astype(float)
    ref = np.array([7.0, 7.0, 7.0])
    cols = [Objective(c, MINIMIZE, c) for c in "xyz"]
    df = pd.DataFrame(pts, columns=list("xyz"))
    expected = _grid_count(pts, ref)
    assert pareto.hypervolume(df, cols, ref) == pytest.approx(expected)
    front = pts[pareto.non_dominated_mask(pts)]
    assert pareto.hv_slicing(np.unique(front, axis=0), ref) == pytest.approx(expected)


def test_hypervolume_4d_slicing_matches_optuna() -> None:
    rng = np.random.default_rng(7)
    pts = rng.integers(0, 5, size=(8, 4)).astype(float)
    ref = np.full(4, 5.0)
    front = np.unique(pts[pareto.non_dominated_mask(pts)], axis=0)
    cols = [Objective(c, MINIMIZE, c) for c in "abcd"]
    via_optuna = pareto.hypervolume(pd.DataFrame(pts, columns=list("abcd")), cols, ref)
    assert pareto.hv_slicing(front, ref) == pytest.approx(via_optuna)
    assert via_optuna == pytest.approx(_grid_count(pts, ref))


def test_best_under_budget() -> None:
    df = _frame([(0.90, 10.0), (0.85, 5.0), (0.85, 4.0), (0.70, 2.0), (float("nan"), 0.1)])
    assert pareto.best_under_budget(df, 5.0)["label"] == "p2"  # tie on accuracy -> faster
    assert pareto.best_under_budget(df, 10.0)["label"] == "p0"
    assert pareto.best_under_budget(df, 1.0) is None


def test_compare_fronts_savings_and_gains() -> None:
    static = _frame([(0.90, 10.0), (0.85, 6.0), (0.60, 1.0)])
    dynamic = _frame([(0.91, 8.0), (0.86, 7.0), (0.80, 3.0)])
    cmp = pareto.compare_fronts(static, dynamic)
    assert list(cmp["dominated"]) == [True, False, False]
    # static 0.90@10: dynamic reaches >=0.90 at 8 ms (saves 2 ms, 20%); at <=10 ms best is 0.91
    assert cmp.loc[0, "cost_saved"] == pytest.approx(2.0)
    assert cmp.loc[0, "cost_saved_rel"] == pytest.approx(0.2)
    assert cmp.loc[0, "quality_gained"] == pytest.approx(0.01)
    # static 0.85@6: dynamic needs 7 ms for >=0.85 (negative saving); at <=6 ms has 0.80
    assert cmp.loc[1, "cost_saved"] == pytest.approx(-1.0)
    assert cmp.loc[1, "quality_gained"] == pytest.approx(-0.05)
    # static 0.60@1: dynamic is never that fast -> no accuracy comparison possible
    assert np.isnan(cmp.loc[2, "quality_gained"])
    assert cmp.loc[2, "cost_saved"] == pytest.approx(-2.0)


def test_compare_fronts_equal_points_not_dominated() -> None:
    same = _frame([(0.9, 5.0)])
    cmp = pareto.compare_fronts(same, same.copy())
    assert not cmp.loc[0, "dominated"]
    assert cmp.loc[0, "cost_saved"] == 0.0


def test_attainment_surfaces_on_known_runs() -> None:
    # three seeds' points (latency ms, accuracy): the k-th surface at x is the k-th best of the
    # seeds' best accuracies at latency <= x
    runs = [pd.DataFrame({"latency_p50_ms": lat, "accuracy_top1": acc})
            for lat, acc in (([1.0, 2.0], [0.5, 0.9]), ([1.5], [0.7]), ([3.0], [0.95]))]
    grid = np.array([0.5, 1.0, 1.5, 2.0, 3.0])
    surf = pareto.attainment_surfaces(runs, OBJECTIVES["latency_p50"], OBJECTIVES["accuracy"],
                                      grid)
    nan = np.nan
    np.testing.assert_allclose(surf, [[nan, 0.5, 0.7, 0.9, 0.95],
                                      [nan, nan, 0.5, 0.7, 0.9],
                                      [nan, nan, nan, nan, 0.7]])
