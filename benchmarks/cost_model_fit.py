"""Benchmark (issue #23): how well the search's latency model predicts what its trials measure.

Reads a finished ``bench_search.py`` run (default ``results/bench-search``; a folder with
``static/search-*/``) and, for every search in it, replays the study's cost-model fits on its
own measurements (each trial's ``config`` and its measured ``latency_p50_ms``, the dense network
from ``dense.json``) for two models of ``search.latency_model.fit_cost_model``:

- ``mac_line``: the features without :data:`~prunebench.search.latency_model.ACTIVATIONS`, which
  is the model before the activation term (``a + c * MACs``, per-layer ridge corrections from
  :data:`~prunebench.search.latency_model.MIN_PER_LAYER_POINTS` points);
- ``macs_and_activations``: the model as it is now (``a + c * MACs + e * act``, the same ridge).

Two replays per search, on every trial that is not a warm-start (uniform-line) trial:

- ``after_warm_start``: fitted on the warm-start trials and the dense network alone (what the
  study knows when the sensitivity proposals are projected), predicting every later trial;
- ``sequential``: each trial predicted by the fit on the dense network and every earlier trial
  (what a running study does).

The error is ``predicted / measured - 1`` (a negative bias: under-predicted, a proposal lands
above its aim). No timing happens here: the measurements are the run's own. The last line is
one JSON object: per replay and model ``{median_abs, max_abs, median}`` pooled over searches,
the same per search under ``per_search``, and ``n_predicted``.

    .venv/bin/python benchmarks/cost_model_fit.py [RUN_DIR]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

MODELS = ("mac_line", "macs_and_activations")


def _view(features: dict[str, float], model: str) -> dict[str, float]:
    """``features`` as ``model`` sees them (the MAC line: without the activation term)."""
    from prunebench.search.latency_model import ACTIVATIONS

    if model == "mac_line":
        return {k: v for k, v in features.items() if k != ACTIVATIONS}
    return features


def _spread(errors: list[float]) -> dict[str, float | None]:
    if not errors:
        return {"median_abs": None, "max_abs": None, "median": None}
    e = np.asarray(errors)
    return {"median_abs": round(float(np.median(np.abs(e))), 4),
            "max_abs": round(float(np.max(np.abs(e))), 4),
            "median": round(float(np.median(e)), 4)}


def replay(folder: Path, table: Any) -> dict[str, dict[str, list[float]]]:
    """Relative errors per replay and model for the search in ``folder``."""
    from prunebench.harness.pruning import DENSE, PruningConfig
    from prunebench.search.latency_model import fit_cost_model

    trials = pd.read_csv(folder / "trials.csv")
    trials = trials[(trials["state"] == "COMPLETE") & trials["latency_p50_ms"].notna()]
    trials = trials.sort_values("trial_number").reset_index(drop=True)
    dense_y = float(json.loads((folder / "dense.json").read_text())["latency_p50_ms"])
    warm = trials["prunebench_warm_start_t"].notna().to_numpy()
    y = trials["latency_p50_ms"].astype(float).to_numpy()
    out: dict[str, dict[str, list[float]]] = {"after_warm_start": {}, "sequential": {}}
    full_dense = table.features(DENSE)
    full = [table.features(PruningConfig.from_json(c)) for c in trials["config"]]
    for model in MODELS:
        dense, feats = _view(full_dense, model), [_view(f, model) for f in full]
        known = [(dense, dense_y)] + [(feats[i], y[i]) for i in range(len(y)) if warm[i]]
        fit = fit_cost_model("latency_p50_ms", known, table.names)
        out["after_warm_start"][model] = [fit.predict_features(feats[i]) / y[i] - 1
                                          for i in range(len(y)) if not warm[i]]
        seq = []
        for i in range(len(y)):
            if warm[i]:
                continue
            fit = fit_cost_model("latency_p50_ms", [(dense, dense_y)] + [
                (feats[j], y[j]) for j in range(i)], table.names)
            seq.append(fit.predict_features(feats[i]) / y[i] - 1)
        out["sequential"][model] = seq
    return out


def main(argv: list[str]) -> int:
    from prunebench.search.objective import SearchObjective, SearchSpec

    run = Path(argv[0]) if argv else Path("results/bench-search")
    folders = sorted(p for p in (run / "static").glob("search-*") if (p / "trials.csv").is_file())
    if not folders:
        print(f"error: no static/search-*/trials.csv under {run}; pass a finished "
              "bench_search.py run folder", file=sys.stderr)
        return 2
    spec = SearchSpec.from_dict(json.loads((folders[0] / "config.json").read_text())["spec"])
    table = SearchObjective(spec, progress=False).costs
    per_search, pooled = {}, {r: {m: [] for m in MODELS} for r in ("after_warm_start",
                                                                  "sequential")}
    for folder in folders:
        errors = replay(folder, table)
        per_search[folder.name] = {r: {m: _spread(e) for m, e in by.items()}
                                   for r, by in errors.items()}
        for r, by in errors.items():
            for m, e in by.items():
                pooled[r][m].extend(e)
        print(folder.name, {r: {m: v["median_abs"] for m, v in by.items()}
                            for r, by in per_search[folder.name].items()})
    result = {r: {m: _spread(e) for m, e in by.items()} for r, by in pooled.items()}
    result.update(per_search=per_search, run=str(run),
                  n_predicted=len(pooled["sequential"]["mac_line"]))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
