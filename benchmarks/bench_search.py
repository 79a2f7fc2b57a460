"""Benchmark (issue #7): budgeted Optuna search vs a uniform L1 sweep vs random sampling.

On digits with ResNet-20 (the DEFAULT_RECIPE base model from the checkpoint cache) and the
``cpu-1t`` profile, each arm evaluates the same number of static L1 configurations through the
same objective (``search.objective.SearchObjective``, validation accuracy, measured p50). All
arms share one latency frame (``--latency-frame anchored``): the dense p50 is timed once with the
strict re-measurement settings, and every point's p50 is that anchor divided by its speedup over
dense from interleaved rounds, so the shared machine's drift between arms and trials cancels:

- ``search``: ``prunebench search``'s own run with its defaults (multivariate TPE, per-group
  ratios, up to 8 warm-start trials on the uniform line that find the budget's edge and then
  spread over the line's feasible stretch (``prunebench.search.warm``), latency budget as an Optuna
  constraint met with the default 10% latency margin), followed by its strict re-measurement of
  the feasible front and near-budget trials;
- ``uniform_l1``: one ratio for every group, evenly spaced over ``[0, max_ratio]``;
- ``random``: per-group ratios drawn by Optuna's RandomSampler.

The arms run one after another, and a shared machine's speed drifts by tens of percent over
the quarter of an hour they take (in run 6 of the README's table the most pruned uniform
network read 1.80 ms in the search's arm and 1.19 ms in the sweep's). So after the arms, every
configuration of every arm is timed again in one pass, the arms' points shuffled together
(``_retime``; ``retimed.csv`` per arm), and the comparison uses those latencies with each
trial's own accuracy; ``hypervolume_as_searched`` and ``feasible_as_searched`` keep the figures
from the arms' own timings.

Hypervolume (accuracy vs latency p50, normalised to the shared box between the best values seen
and a shared reference point) is computed over the points within the latency budget, the region
a budgeted search is asked to cover; ``hypervolume_all`` uses every point, and
``hypervolume_search_parts`` splits the search's in-budget volume into its warm-start (uniform
line) trials alone and its sampler (per-layer) trials alone, in the same box. The budget hit rate is
the share of configurations the search reported feasible whose re-measured p50 (4x the samples)
still meets the budget. Every trial of every arm fine-tunes its cut network for two epochs at
the recipe's learning rate (``FINETUNE_EPOCHS``, LR rewinding) before the validation accuracy is
taken, so the accuracy axis means what a user's search would report. Two, not one: after one
epoch (33 SGD steps) the accuracy along the uniform line falls by up to 8.9 points between
neighbouring ratios, so a comparison of 20 points per arm measured the fine-tune's luck more
than the configurations (``benchmarks/finetune_smoothness.py`` measures this). No arguments;
results under ``results/bench-search/``; the last line printed is one JSON object.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd

# Overridable for a quick smoke run only; the benchmark's numbers use the defaults.
N_TRIALS = int(os.environ.get("PRUNEBENCH_BENCH_TRIALS", "20"))
FINETUNE_EPOCHS = int(os.environ.get("PRUNEBENCH_BENCH_FT_EPOCHS", "2"))
MODEL = os.environ.get("PRUNEBENCH_BENCH_MODEL", "resnet20")
PROFILE = os.environ.get("PRUNEBENCH_BENCH_PROFILE", "cpu-1t")
CHECKPOINT = os.environ.get("PRUNEBENCH_BENCH_CHECKPOINT")  # default: the cached base model
BUDGET_FRACTION = 0.6  # latency budget = this x the dense network's p50
OUT = Path(os.environ.get("PRUNEBENCH_BENCH_OUT", "results/bench-search"))


def _arm(name: str, spec, objective, sampler: str, remeasure_max: int,
         warm_start: int = 0) -> dict:
    from prunebench.search.runs.search_run import SearchRun

    run = SearchRun(spec, OUT / name, args={"bench": name}, sampler=sampler, study_name=name,
                    progress=True, objective=objective, warm_start=warm_start)
    run.execute(n_trials=N_TRIALS, timeout=None, remeasure_max=remeasure_max)
    return run.summary


def _uniform(spec, prepared, profile, anchor: float) -> dict:
    """The uniform sweep as enqueued trials of a study with a fine ratio grid (0.01)."""
    from prunebench.search.objective import SearchObjective
    from prunebench.search.space import uniform_params
    from prunebench.search.storage import open_storage
    from prunebench.search.study import create_or_load_study, run_trials, trials_frame

    uspec = dataclasses.replace(spec, space=dataclasses.replace(spec.space, ratio_step=0.01))
    objective = SearchObjective(uspec, prepared=prepared, profile=profile)
    objective.latency_anchor_ms = anchor
    (OUT / "uniform_l1").mkdir(parents=True, exist_ok=True)
    storage = open_storage(f"journal:{OUT / 'uniform_l1' / 'study.journal'}")
    study, _ = create_or_load_study(storage, "uniform_l1", uspec,
                                    optuna.samplers.RandomSampler(seed=0))
    for r in np.linspace(0.0, spec.space.max_ratio, N_TRIALS):
        study.enqueue_trial(uniform_params(objective.space, round(float(r), 2)))
    loop = run_trials(study, objective, n_trials=N_TRIALS, timeout=None,
                      objectives=uspec.objectives, progress=True)
    frame = trials_frame(study, uspec.objectives)
    frame.to_csv(OUT / "uniform_l1" / "trials.csv", index=False)
    return {"trials_per_minute": loop.trials_per_minute}


def _points(name: str) -> pd.DataFrame:
    frame = pd.read_csv(OUT / name / "trials.csv")
    return frame[frame["state"] == "COMPLETE"]


def _retime(frames: dict[str, pd.DataFrame], objective, prepared, profile) -> dict[str, list]:
    """Every arm's configurations timed again in one pass, in a shuffled shared order.

    The arms run one after another, and this machine's speed drifts by tens of percent over the
    quarter of an hour they take; within one pass, with the arms' points interleaved, the drift
    falls on all arms alike. One configuration in several arms (the most pruned uniform point)
    is timed once. Returns each arm's re-timed p50s in the frame's row order.
    """
    from tqdm import tqdm

    from prunebench.harness.evaluate import build_pruned
    from prunebench.search.storage import open_storage

    jobs, configs = [], {}
    for name, frame in frames.items():
        storage = open_storage(f"journal:{OUT / name / 'study.journal'}")
        trials = {t.number: t.params for t in
                  optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)}
        for i, number in enumerate(frame["trial_number"]):
            cfg = objective.space.config(trials[int(number)])
            configs[cfg.record.key] = cfg
            jobs.append((name, i, cfg.record.key))
    keys = sorted(configs)
    np.random.default_rng(0).shuffle(keys)
    p50 = {}
    for key in tqdm(keys, desc="re-time all arms", unit="config"):
        cfg = configs[key]
        model = build_pruned(prepared, cfg.static, profile=profile, progress=False)
        p50[key] = objective.measure(cfg.record, model).latency_p50_ms
    out: dict[str, list] = {name: [None] * len(frame) for name, frame in frames.items()}
    for name, i, key in jobs:
        out[name][i] = p50[key]
    return out


def main() -> int:
    """Run the three arms and print the comparison; the last line is one JSON object."""
    from prunebench.harness.evaluate import Workload, prepare
    from prunebench.harness.profiles import load_profile
    from prunebench.search.objective import SearchObjective, SearchSpec
    from prunebench.search.pareto import OBJECTIVES, hypervolume, ideal_point, reference_point
    from prunebench.search.space import SpaceSpec

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    start = time.perf_counter()
    profile = load_profile(PROFILE)
    prepared = prepare(Workload(model=MODEL, dataset="digits", checkpoint=CHECKPOINT),
                       progress=True)
    base = SearchSpec(model=MODEL, dataset="digits", profile=PROFILE, checkpoint=CHECKPOINT,
                      space=SpaceSpec(kind="static", static_methods=("l1",),
                                      finetune_epochs=FINETUNE_EPOCHS))
    probe = SearchObjective(base, prepared=prepared, profile=profile)
    from prunebench.harness.pruning import DENSE
    from prunebench.search.objective import strict_profile

    # one latency frame for all three arms: the dense p50 timed once, strictly; every point is
    # this anchor / its speedup over dense from interleaved rounds (see --latency-frame)
    dense = probe.measure(DENSE, prepared.base_model, profile=strict_profile(profile))
    anchor = dense.latency_p50_ms
    budget = round(BUDGET_FRACTION * anchor, 4)
    from prunebench.search.runs.search_settings import DEFAULT_LATENCY_MARGIN, DEFAULT_WARM_START

    spec = dataclasses.replace(base, budgets={"latency_ms": budget},
                               latency_margin=DEFAULT_LATENCY_MARGIN)
    objective = SearchObjective(spec, prepared=prepared, profile=profile)
    objective.latency_anchor_ms = anchor

    search = _arm("search", spec, objective, "tpe", remeasure_max=12,
                  warm_start=DEFAULT_WARM_START)  # as `prunebench search` runs by default
    rand = _arm("random", spec, objective, "random", remeasure_max=0)
    uniform = _uniform(spec, prepared, profile, anchor)

    objs = [OBJECTIVES["accuracy"], OBJECTIVES["latency_p50"]]
    searched = {n: _points(n) for n in ("search", "uniform_l1", "random")}
    # the comparison's latencies: one interleaved pass over all arms (see _retime); each
    # point keeps the accuracy its own trial measured
    retimed = _retime(searched, objective, prepared, profile)
    frames = {n: f.assign(searched_latency_p50_ms=f["latency_p50_ms"], latency_p50_ms=retimed[n])
              for n, f in searched.items()}
    for n, f in frames.items():
        f.to_csv(OUT / n / "retimed.csv", index=False)
    under = {n: f[f["latency_p50_ms"] <= budget] for n, f in frames.items()}
    hv, hv_all, hv_searched = {}, {}, {}
    as_searched = {n: f[f["latency_p50_ms"] <= budget] for n, f in searched.items()}
    for table, out in ((under, hv), (frames, hv_all), (as_searched, hv_searched)):
        nonempty = [f for f in table.values() if len(f)]
        if not nonempty:
            out.update({n: 0.0 for n in table})
            continue
        ref, ideal = reference_point(nonempty, objs), ideal_point(nonempty, objs)
        out.update({n: round(hypervolume(f, objs, ref, ideal), 4) if len(f) else 0.0
                    for n, f in table.items()})
    # what the search's uniform-line warm start and its per-layer sampler trials each reach
    box = [f for f in under.values() if len(f)]
    warm_col = under["search"].get("prunebench_warm_start_t")
    parts = {}
    if box and warm_col is not None:
        ref, ideal = reference_point(box, objs), ideal_point(box, objs)
        is_warm = warm_col.notna()
        for part, rows in (("warm_start", under["search"][is_warm]),
                           ("sampler", under["search"][~is_warm])):
            parts[part] = round(hypervolume(rows, objs, ref, ideal), 4) if len(rows) else 0.0
    result = {
        "hypervolume": hv, "hypervolume_all": hv_all, "hypervolume_search_parts": parts,
        "hypervolume_as_searched": hv_searched,
        "trials_per_minute": round(search["trials_per_minute"], 2),
        "budget_hit_rate": search["budget_hit_rate"],
        "n_reported_feasible": search["n_reported_feasible"],
        "model": MODEL, "profile": PROFILE, "trials_per_arm": N_TRIALS,
        "finetune_epochs_per_trial": FINETUNE_EPOCHS, "budget_ms": budget,
        "dense_latency_p50_ms": dense.latency_p50_ms, "latency_frame": "anchored",
        "latency_margin": spec.latency_margin,
        "dense_val_accuracy": dense.accuracy_top1,
        "feasible": {n: int(len(f)) for n, f in under.items()},
        "feasible_as_searched": {n: int(len(f)) for n, f in as_searched.items()},
        "best_feasible_val_accuracy": {n: float(f["accuracy_top1"].max()) if len(f) else None
                                       for n, f in under.items()},
        "trials_per_minute_by_arm": {"search": search["trials_per_minute"],
                                     "random": rand["trials_per_minute"],
                                     "uniform_l1": uniform["trials_per_minute"]},
        "load_avg_1m": os.getloadavg()[0], "wall_s": round(time.perf_counter() - start, 1),
    }
    (OUT / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
