"""Benchmark (issues #7, #23): the budgeted search against a uniform sweep, random sampling and
its own warm start, over seeds, at two latency budgets, for the static and the dynamic space.

On digits with ResNet-20 (the DEFAULT_RECIPE base model from the checkpoint cache) and the
``cpu-1t`` profile, every arm evaluates configurations through the same objective
(``search.objective.SearchObjective``: validation accuracy, measured p50) in one latency frame
(``--latency-frame anchored``: the dense p50 timed once, strictly; every point's p50 is that
anchor divided by its speedup over dense from interleaved rounds). Budgets: 0.5x and 0.7x the
dense p50 (``BUDGET_FRACTIONS``) for the static space; the dynamic space is judged on effective
MACs at 0.5x and 0.7x the dense MACs (``COSTS``: AntiDote's exact rule runs no faster than dense
on this CPU, so no dynamic point meets a latency budget below dense). Arms:

- ``search``: ``prunebench search``'s own run with its defaults (multivariate TPE, the uniform
  warm start of ``search.warm`` aimed at the budget, the budget projection of
  ``search.latency_model``, the sensitivity-shaped proposals of ``search.sensitivity``, the
  10% latency margin; its trials timed ``settled``, each trial's timing stopped once its p50
  is known to lie on one side of the budget over the margin: ``--trial-timing auto`` with a
  latency budget since run 25, until run 24 timed in full), one run per seed and budget. Its
  budget hit rate is judged on the shared re-timing pass below: of every trial the search
  called feasible (its p50 with the margin within the budget), the share whose re-timed p50
  is within the budget (for the counted MACs budget, whose count the search's own is, the
  share whose MACs are). The search's own
  re-measurement of its front is not run here (``remeasure_max=0``): it re-built and re-timed
  up to 6 points per search that the pass times again anyway, and the best points' test
  accuracy is rebuilt below (until run 22 the hit rate was that re-measurement's: 2x the
  profile's samples, up to 6 front points);
- ``warm_start_only``: the search run's warm-start (uniform-line) trials alone, in the same box:
  what the per-layer proposals add over riding the uniform line;
- ``uniform_l1`` (static) / ``uniform_keep`` (dynamic, reported under the ``uniform_l1`` key of
  its block): one ratio (keep) for every layer, evenly spaced over the space's range. It does not
  depend on the budget: it is judged against each. Static trials fine-tune, and each seed
  fine-tunes every static arm with its own recipe seed (``Recipe.seed`` = the seed; the splits
  and the base model stay fixed), so a seed replicates the fine-tune's luck as well as the
  sampler's and the static line runs once per seed (until run 22 every seed fine-tuned with
  recipe seed 0, so all three seeds were judged against one draw of the line: the block's
  ``finetune_seeded`` says which); dynamic trials do not train, so the dynamic line runs once;
- ``random``: per-layer values drawn by Optuna's RandomSampler, no warm start, no projection;
  one run per seed, judged against each budget.

The uniform and random arms' trials are timed light (``--trial-timing light``: a quarter of the
profile's timing): neither reads its latencies (the line is enqueued, random sampling ignores
values) and the comparison reads the shared pass's, so their full timing bought nothing (until
run 22 they were timed in full).

The arms run one after another and this machine's speed drifts over that time (in run 8 of
docs/benchmarks.md one network read 2.04 ms in one arm and 1.75 ms in another), so
afterwards every configuration of every arm is timed again in one shuffled pass (``_retime``),
and the comparison uses those latencies with each trial's own validation
accuracy. Per seed and budget the hypervolume (accuracy vs latency, normalised to the box of all
arms' in-budget points) is computed over the points within the budget; the best feasible test
accuracy is the test-split accuracy of each arm's in-budget point of best validation accuracy
(the cheapest of equals: the one its front keeps), rebuilt (fine-tuned alike) and evaluated
once. Every static trial fine-tunes for two epochs
(``FINETUNE_EPOCHS``; see ``benchmarks/finetune_smoothness.py`` for why two). The dynamic space
(AntiDote, ``inputs=1`` so block-input gates are searched, the keep rule searched too) is
AntiDote's test-time pruning: its network is trained once per run for the exact rule
(``DYNAMIC_FINETUNE``: ``prunebench finetune`` with targeted dropout on the block inputs, from
the static arms' base) and every dynamic arm searches that one network's keeps and rule without
further training.

The last line printed is one JSON object: ``static`` and ``dynamic``, each per budget
(``"0.5"``, ``"0.7"``) with ``hypervolume`` and ``best_feasible_test_accuracy`` (per arm
``{median, min, max, per_seed}``), ``budget_hit_rate`` (pooled over seeds, and per seed),
``trials_per_minute`` (the search's, median over seeds), ``latency_model_error_median`` (median
over seeds of each search's median |predicted / measured - 1|), ``search_minus_uniform`` (per
seed) and ``seeds``. Results under ``results/bench-search/``. Knobs for a smoke run only
(environment): ``PRUNEBENCH_BENCH_TRIALS`` (20 per arm), ``PRUNEBENCH_BENCH_SEEDS`` (0,1,2),
``PRUNEBENCH_BENCH_FT_EPOCHS`` (2), ``PRUNEBENCH_BENCH_SPACES`` (static,dynamic),
``PRUNEBENCH_BENCH_MODEL``, ``PRUNEBENCH_BENCH_PROFILE``, ``PRUNEBENCH_BENCH_CHECKPOINT``,
``PRUNEBENCH_BENCH_DYNAMIC_CHECKPOINT`` (the dynamic arms' network instead of training one);
and ``PRUNEBENCH_BENCH_REUSE=DIR``: copy the uniform and random arms of an earlier run in DIR
(their trials do not depend on that run's measurements; they are re-timed in this run's pass)
and the dynamic network they ran on, so a change to the search is judged without running the
unchanged arms again. The dynamic block's ``network`` says how its network was made and its
dense validation and test accuracy. No dynamic objective or budget reads a latency, so every
dynamic arm's trials are timed light (``prunebench search``'s ``--trial-timing auto``: a quarter
of the profile's timing; the searches' fronts are re-measured in full).

Every arm's points (re-timed) are kept in ``<space>/points/*.csv``, and ``attainment.png`` (.svg,
.pdf) shows per space and budget each arm's empirical attainment surfaces over the seeds
(median line, best-to-worst band) on its points within the budget; ``bench_search.py
--plot-only [OUT]`` redraws it from a finished run's files, and ``bench_search.py --judge-only
OUT [NETWORK.pt]`` judges its points again by this file's current rules (``OUT/rejudged.json``;
the test accuracies are rebuilt, nothing else is run).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd

N_TRIALS = int(os.environ.get("PRUNEBENCH_BENCH_TRIALS", "20"))
FINETUNE_EPOCHS = int(os.environ.get("PRUNEBENCH_BENCH_FT_EPOCHS", "2"))
SEEDS = [int(s) for s in os.environ.get("PRUNEBENCH_BENCH_SEEDS", "0,1,2").split(",")]
SPACES = os.environ.get("PRUNEBENCH_BENCH_SPACES", "static,dynamic").split(",")
MODEL = os.environ.get("PRUNEBENCH_BENCH_MODEL", "resnet20")
PROFILE = os.environ.get("PRUNEBENCH_BENCH_PROFILE", "cpu-1t")
CHECKPOINT = os.environ.get("PRUNEBENCH_BENCH_CHECKPOINT")  # default: the cached base model
BUDGET_FRACTIONS = (0.5, 0.7)  # latency budget = this x the dense network's p50
OUT = Path(os.environ.get("PRUNEBENCH_BENCH_OUT", "results/bench-search"))
# a finished run's folder: its uniform and random arms are copied instead of run again
REUSE = Path(os.environ["PRUNEBENCH_BENCH_REUSE"]) if os.environ.get("PRUNEBENCH_BENCH_REUSE") \
    else None
ARMS = ("search", "warm_start_only", "uniform_l1", "random")
# space -> (budget key, Measurement column, objective): AntiDote's exact rule is no faster than
# dense on this CPU (docs/benchmarks.md: 0.78-0.87x eager), so no dynamic point meets a latency
# budget below dense; the dynamic space is judged on effective MACs (counted exactly)
COSTS = {"static": ("latency_ms", "latency_p50_ms", "latency_p50"),
         "dynamic": ("macs", "macs", "macs")}


# AntiDote's training phase for the dynamic space, once per run (``prunebench finetune``):
# targeted dropout with each block's input channels targeted too, the recipe that keeps the exact
# rule with ``inputs=1`` within 0.5 points of dense at 37% and 49% fewer MACs on digits
# (docs/benchmarks.md, "Exact AntiDote with the block inputs gated"); the dense base's own
# gates, never trained for, fall to chance at these keeps. The dynamic arms search the test-time
# keeps and rule of this network, as AntiDote prunes at test time.
DYNAMIC_FINETUNE = ("--method", "antidote", "--targeted-dropout",
                    "gamma=0.75,alpha=1,sample=1,inputs=1", "--epochs", "20", "--lr", "0.05",
                    "--kd", "0.7")
DYNAMIC_CHECKPOINT = os.environ.get("PRUNEBENCH_BENCH_DYNAMIC_CHECKPOINT")
DYNAMIC_BASE = "dynamic/antidote-inputs-td.pt"  # under OUT (and REUSE)

# arms whose trials never read their own latencies: timed light (the shared pass judges them)
UNREAD_TIMING = "light"


def _space(kind: str, checkpoint: str | None = None):
    """The space ``prunebench search`` builds with its defaults: the dynamic keeps from the
    network's trained floor up (``search_settings.keep_floor``: 0.25 for ``DYNAMIC_FINETUNE``'s
    gamma=0.75)."""
    from prunebench.search.runs.search_settings import keep_floor
    from prunebench.search.space import SpaceSpec

    if kind == "static":
        return SpaceSpec(kind="static", static_methods=("l1",), finetune_epochs=FINETUNE_EPOCHS)
    return SpaceSpec(kind="dynamic", dynamic_method="antidote", dynamic_options={"inputs": 1},
                     searched_options={"rule": {"choices": ["ratio", "threshold"]}},
                     keep_min=keep_floor(checkpoint, SpaceSpec.keep_step))


def _dynamic_checkpoint() -> tuple[str, dict]:
    """The dynamic arms' network: ``PRUNEBENCH_BENCH_DYNAMIC_CHECKPOINT``, else the one of the
    ``REUSE`` run (its reused arms were measured on it), else ``DYNAMIC_FINETUNE`` applied to
    the static arms' base, saved as ``OUT/DYNAMIC_BASE``; with how it was made."""
    from prunebench.search.cli import main as cli

    if DYNAMIC_CHECKPOINT:
        return DYNAMIC_CHECKPOINT, {"given": DYNAMIC_CHECKPOINT}
    path = OUT / DYNAMIC_BASE
    path.parent.mkdir(parents=True, exist_ok=True)
    if REUSE is not None and (REUSE / DYNAMIC_BASE).is_file():
        shutil.copy(REUSE / DYNAMIC_BASE, path)
        return str(path), {"reused_from": str(REUSE / DYNAMIC_BASE)}
    argv = ["finetune", "--model", MODEL, "--dataset", "digits", *DYNAMIC_FINETUNE,
            "--out", str(path), "--json"]
    if CHECKPOINT:
        argv += ["--checkpoint", CHECKPOINT]
    start = time.perf_counter()
    if cli(argv) != 0:
        raise SystemExit(f"bench_search: prunebench {' '.join(argv)} failed")
    return str(path), {"finetune": " ".join(argv[1:]),
                       "finetune_s": round(time.perf_counter() - start, 1)}


def _reused(name: str, space) -> dict | None:
    """Arm ``name``'s finished folder from ``REUSE`` copied into ``OUT``, or None. Only arms
    whose trials do not depend on the run's measurements are reused (the uniform line is
    enqueued, random sampling is seeded and unprojected), and only when they searched this
    run's keep range (their lowest keep is ``space.keep_min``); every point is timed again in
    the shared re-timing pass, so a reused arm is judged in this run's latency frame."""
    if REUSE is None or not (REUSE / name / "trials.csv").is_file():
        return None
    frame = pd.read_csv(REUSE / name / "trials.csv")
    done = frame[frame["state"] == "COMPLETE"].reset_index(drop=True)
    if len(done) < N_TRIALS:
        return None
    if space.kind == "dynamic":
        lowest = min(min(json.loads(c)["keep"].values()) for c in done["config"])
        if abs(lowest - space.keep_min) > 1e-6:
            print(f"not reusing {name}: its lowest keep {lowest:g} is not this run's keep "
                  f"floor {space.keep_min:g}")
            return None
    shutil.copytree(REUSE / name, OUT / name)
    minutes = frame["duration_s"].astype(float).sum() / 60
    print(f"reused {name} from {REUSE / name}")
    return {"summary": {"trials_per_minute": len(frame) / minutes, "reused_from": str(REUSE)},
            "frame": done}


def _run(name: str, spec, ctx: dict, sampler: str, warm_start: int) -> dict:
    """One search run in ``OUT/<name>`` without the re-measurement of its front (the shared
    pass re-times every point); returns its summary and completed trials."""
    from prunebench.search.objective import SearchObjective
    from prunebench.search.runs.search_run import SearchRun
    from prunebench.search.runs.search_settings import DEFAULT_SENSITIVITY

    if sampler == "random" and (reused := _reused(name, spec.space)) is not None:
        return reused
    objective = SearchObjective(spec, prepared=ctx["prepared"], profile=ctx["profile"])
    objective.latency_anchor_ms = ctx["anchor"]
    run = SearchRun(spec, OUT / name, args={"bench": name}, sampler=sampler,
                    study_name=name.replace("/", "-"), progress=True, objective=objective,
                    warm_start=warm_start,
                    sensitivity=DEFAULT_SENSITIVITY if warm_start else 0)
    run.execute(n_trials=N_TRIALS, timeout=None, remeasure_max=0)
    frame = run.trials[run.trials["state"] == "COMPLETE"].reset_index(drop=True)
    return {"summary": run.summary, "frame": frame}


def _uniform(kind: str, spec, ctx: dict, name: str) -> dict:
    """The uniform line as enqueued trials: ratios over [0, max_ratio] (static) or keeps over
    [1, keep_min] (dynamic), on a fine grid (0.01), the searched options at their defaults as
    the search's warm start sets them (the keep rule ``ratio``)."""
    from prunebench.search.objective import SearchObjective
    from prunebench.search.space import option_defaults, uniform_params
    from prunebench.search.storage import open_storage
    from prunebench.search.study import create_or_load_study, run_trials, trials_frame

    if (reused := _reused(name, spec.space)) is not None:
        return reused
    space = dataclasses.replace(spec.space, ratio_step=0.01, keep_step=0.01)
    uspec = dataclasses.replace(spec, space=space, budget_projection=False,
                                trial_timing=UNREAD_TIMING)
    objective = SearchObjective(uspec, prepared=ctx["prepared"], profile=ctx["profile"])
    objective.latency_anchor_ms = ctx["anchor"]
    folder = OUT / name
    folder.mkdir(parents=True, exist_ok=True)
    storage = open_storage(f"journal:{folder / 'study.journal'}")
    study, _ = create_or_load_study(storage, "uniform", uspec,
                                    optuna.samplers.RandomSampler(seed=0))
    extra = option_defaults(objective.space).items()
    for t in np.linspace(0.0, 1.0, N_TRIALS):
        ratio = round(float(t) * space.max_ratio, 2)
        keep = round(1.0 - float(t) * (1.0 - space.keep_min), 2)
        study.enqueue_trial(uniform_params(objective.space, ratio, keep, extra))
    loop = run_trials(study, objective, n_trials=N_TRIALS, timeout=None,
                      objectives=uspec.objectives, progress=True)
    frame = trials_frame(study, uspec.objectives)
    frame.to_csv(folder / "trials.csv", index=False)
    return {"summary": {"trials_per_minute": loop.trials_per_minute},
            "frame": frame[frame["state"] == "COMPLETE"].reset_index(drop=True)}


def _retime(frames: list[pd.DataFrame], ctx: dict) -> list[list[float]]:
    """Every configuration of ``frames`` timed again in one pass, in a shuffled shared order
    (one configuration in several arms is timed once); the re-timed p50s in row order."""
    from tqdm import tqdm

    from prunebench.harness.evaluate import build_pruned
    from prunebench.harness.pruning import PruningConfig

    configs = {}
    for frame in frames:
        for text in frame["config"]:
            cfg = PruningConfig.from_json(text)
            # latency does not depend on the fine-tuned weights of a cut; a gated network's
            # decisions do, so dynamic configs (no fine-tuning here) are rebuilt as they ran
            configs[cfg.key] = dataclasses.replace(cfg, finetune_epochs=0)
    keys = sorted(configs)
    np.random.default_rng(0).shuffle(keys)
    objective = ctx["probe"]
    p50 = {}
    for key in tqdm(keys, desc="re-time all arms", unit="config"):
        model = build_pruned(ctx["prepared"], configs[key], profile=ctx["profile"],
                             progress=False)
        p50[key] = objective.measure(configs[key], model).latency_p50_ms
    return [[p50[PruningConfig.from_json(t).key] for t in frame["config"]] for frame in frames]


def _best_row(frame: pd.DataFrame, column: str) -> pd.Series:
    """The in-budget point a user would take: best validation accuracy, the cheapest of equals
    (the one the front keeps: a dearer tie is dominated). Until run 20 the first of equals in
    row order was taken (docs/benchmarks.md, run 20: that order decided its 0.7x verdict)."""
    acc = frame["accuracy_top1"].astype(float)
    ties = frame[acc == acc.max()]
    return ties.loc[ties[column].astype(float).idxmin()]


def _test_accuracy(frame: pd.DataFrame, column: str, ctx: dict, cache: dict) -> float | None:
    """Test accuracy of the in-budget row of best validation accuracy (:func:`_best_row`),
    rebuilt as it ran (fine-tuned with ``ctx``'s recipe seed)."""
    from prunebench.harness.evaluate import build_pruned
    from prunebench.harness.measure.accuracy import accuracy
    from prunebench.harness.pruning import PruningConfig

    if frame.empty:
        return None
    text = _best_row(frame, column)["config"]
    key = (ctx["prepared"].workload.recipe.seed, text)
    if key not in cache:
        model = build_pruned(ctx["prepared"], PruningConfig.from_json(text),
                             profile=ctx["profile"], progress=False)
        cache[key] = float(accuracy(model, ctx["prepared"].splits.test).top1)
    return cache[key]


def _spread(values: list[float | None]) -> dict[str, Any]:
    got = [v for v in values if v is not None]
    if not got:
        return {"median": None, "min": None, "max": None, "per_seed": values}
    return {"median": round(statistics.median(got), 4), "min": round(min(got), 4),
            "max": round(max(got), 4), "per_seed": values}


def _in_budget(frame: pd.DataFrame, column: str, budget: float) -> pd.DataFrame:
    return frame[frame[column].astype(float) <= budget]


def _hits(frame: pd.DataFrame, column: str, budget: float) -> tuple[int, int]:
    """Of a search's trials it called feasible, how many are within ``budget`` by ``column``
    (the re-timed p50 for a latency budget), and how many it called feasible."""
    reported = frame[frame["feasible"] == True]  # noqa: E712 (NaN: a trial without budgets)
    return int((reported[column].astype(float) <= budget).sum()), len(reported)


def _warm_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """A search run's warm-start (uniform-line) trials."""
    if "prunebench_warm_start_t" not in frame:
        return frame.iloc[0:0]
    return frame[frame["prunebench_warm_start_t"].notna()]


def _volumes(under: dict[str, pd.DataFrame], kind: str,
             extra: dict[str, pd.DataFrame] | None = None) -> dict[str, float]:
    """Hypervolume (validation top-1 vs the space's cost) of each in-budget frame of ``under``,
    normalised to the box of all of them, and of each ``extra`` frame in that same box (it
    does not widen it); an empty frame has 0."""
    from prunebench.search.pareto import OBJECTIVES, hypervolume, ideal_point, reference_point

    objs = [OBJECTIVES["accuracy"], OBJECTIVES[COSTS[kind][2]]]
    frames = {**under, **(extra or {})}
    nonempty = [f for f in under.values() if len(f)]
    if not nonempty:
        return dict.fromkeys(frames, 0.0)
    ref, ideal = reference_point(nonempty, objs), ideal_point(nonempty, objs)
    return {n: round(hypervolume(f, objs, ref, ideal), 4) if len(f) else 0.0
            for n, f in frames.items()}


def _judge(runs: dict, budget: float, ctx: dict, cache: dict, kind: str) -> dict:
    """Hypervolume and best feasible test accuracy per arm of one seed at one budget."""
    column = COSTS[kind][1]
    under = {name: _in_budget(f, column, budget) for name, f in runs.items()}
    under["warm_start_only"] = _warm_rows(under["search"])
    hv = _volumes({n: under[n] for n in ARMS}, kind)
    return {"hypervolume": hv,
            "test": {n: _test_accuracy(under[n], column, ctx, cache) for n in ARMS},
            "feasible": {n: int(len(under[n])) for n in ARMS}}


def _judged(frames: dict, budget: float, ctxs: dict, cache: dict, kind: str) -> dict:
    """The judged part of one budget's block: per arm over the seeds of ``frames`` (seed ->
    the ``search``, ``uniform_l1`` and ``random`` points), hypervolume and best feasible test
    accuracy (rebuilt in ``ctxs[seed]``), the search's margin over the line per seed, and the
    in-budget point counts."""
    per_seed = {s: _judge(runs, budget, ctxs[s], cache, kind) for s, runs in frames.items()}
    seeds = list(frames)
    return {
        "hypervolume": {n: _spread([per_seed[s]["hypervolume"][n] for s in seeds])
                        for n in ARMS},
        "best_feasible_test_accuracy": {n: _spread([per_seed[s]["test"][n] for s in seeds])
                                        for n in ARMS},
        "search_minus_uniform": [round(per_seed[s]["hypervolume"]["search"]
                                       - per_seed[s]["hypervolume"]["uniform_l1"], 4)
                                 for s in seeds],
        "feasible": {n: [per_seed[s]["feasible"][n] for s in seeds] for n in ARMS}}


def _point_frames(folder: Path, f: str, seeds: list[int]) -> dict[int, dict[str, pd.DataFrame]]:
    """A finished run's points of one budget ``f`` (``"0.5"``) from ``<space>/points``:
    seed -> the ``search``, ``uniform_l1`` (``uniform_l1-s<seed>.csv`` where the line ran per
    seed, else the one ``uniform_l1.csv``) and ``random`` tables."""
    def line(s: int) -> pd.DataFrame:
        per_seed = folder / f"uniform_l1-s{s}.csv"
        return pd.read_csv(per_seed if per_seed.is_file() else folder / "uniform_l1.csv")

    return {s: {"search": pd.read_csv(folder / f"search-b{f}-s{s}.csv"), "uniform_l1": line(s),
                "random": pd.read_csv(folder / f"random-s{s}.csv")} for s in seeds}


def _seeded(ctx: dict, seed: int) -> dict:
    """``ctx`` with its workload fine-tuning under recipe seed ``seed`` (same splits and base)."""
    prepared = ctx["prepared"]
    workload = dataclasses.replace(prepared.workload,
                                   recipe=prepared.workload.recipe.with_(seed=seed))
    return {**ctx, "prepared": dataclasses.replace(prepared, workload=workload)}


def judge_again(out: Path, network: str | None = None) -> dict:
    """A finished run's ``result.json`` with every budget's judged part (:func:`_judged`)
    computed again from its ``points/`` tables by this file's rules (no trial is run again; a
    best point's test accuracy is rebuilt). ``network``: the dynamic arms' checkpoint when
    ``out`` does not hold it (``DYNAMIC_BASE``). Written to ``out/rejudged.json``."""
    from prunebench.harness.evaluate import Workload, prepare
    from prunebench.harness.profiles import load_profile

    result = json.loads((out / "result.json").read_text())
    profile = load_profile(result.get("profile", PROFILE))
    for kind in (k for k in COSTS if k in result):
        checkpoint = CHECKPOINT
        if kind == "dynamic":
            checkpoint = network or str(out / DYNAMIC_BASE)
            if not Path(checkpoint).is_file():
                raise SystemExit(f"bench_search: {checkpoint} is not there; give the dynamic "
                                 "arms' network: --judge-only DIR NETWORK.pt")
        ctx = {"prepared": prepare(Workload(model=result.get("model", MODEL), dataset="digits",
                                            checkpoint=checkpoint), progress=True),
               "profile": profile}
        cache: dict[tuple[int, str], float] = {}
        for f in (k for k in result[kind] if k in map(str, BUDGET_FRACTIONS)):
            block = result[kind][f]
            frames = _point_frames(out / kind / "points", f, block["seeds"])
            ctxs = {s: _seeded(ctx, s) if block.get("finetune_seeded") else ctx
                    for s in block["seeds"]}
            block.update(_judged(frames, float(block["budget"]), ctxs, cache, kind))
    result["rejudged"] = {"by": "bench_search.py --judge-only", "best_row": "cheapest of the "
                          "most accurate in-budget points (_best_row)"}
    (out / "rejudged.json").write_text(json.dumps(result, indent=1))
    return result


def _bench_space(kind: str, ctx: dict) -> dict:
    """Every arm of one space over the seeds and budgets; the report block of that space."""
    from prunebench.harness.evaluate import Workload, prepare
    from prunebench.search.objective import SearchSpec
    from prunebench.search.runs.search_settings import DEFAULT_LATENCY_MARGIN, DEFAULT_WARM_START

    key, column, objective = COSTS[kind]
    checkpoint, made = CHECKPOINT, None
    if kind == "dynamic":  # the network trained for the dynamic method (same architecture)
        checkpoint, made = _dynamic_checkpoint()
        ctx = {**ctx, "prepared": prepare(Workload(model=MODEL, dataset="digits",
                                                   checkpoint=checkpoint), progress=True)}
    dense = ctx["anchor"] if key == "latency_ms" else float(ctx["prepared"].dense_macs)
    budgets = {f: round(f * dense, 4) for f in BUDGET_FRACTIONS}
    base = SearchSpec(model=MODEL, dataset="digits", profile=PROFILE, checkpoint=checkpoint,
                      space=_space(kind, checkpoint), latency_margin=DEFAULT_LATENCY_MARGIN,
                      objectives=("accuracy", objective), budgets={key: max(budgets.values())})
    # static trials fine-tune: each seed with its own recipe seed (the line too); dynamic
    # trials do not train, so one line serves every seed
    seeded = kind == "static" and FINETUNE_EPOCHS > 0
    ctxs = {s: _seeded(ctx, s) if seeded else ctx for s in SEEDS}
    specs = {s: dataclasses.replace(base, recipe=ctxs[s]["prepared"].workload.recipe.to_dict())
             if seeded else base for s in SEEDS}
    if seeded:
        uniforms = {s: _uniform(kind, specs[s], ctxs[s], f"{kind}/uniform-s{s}") for s in SEEDS}
        lines = list(uniforms.values())
    else:
        lines = [_uniform(kind, base, ctx, f"{kind}/uniform")]
        uniforms = dict.fromkeys(SEEDS, lines[0])
    randoms, searches = {}, {}
    for seed in SEEDS:
        spec = dataclasses.replace(specs[seed], seed=seed, budget_projection=False,
                                   trial_timing=UNREAD_TIMING)
        randoms[seed] = _run(f"{kind}/random-s{seed}", spec, ctxs[seed], "random", 0)
        for f, b in budgets.items():
            spec = dataclasses.replace(specs[seed], seed=seed, budgets={key: b})
            searches[seed, f] = _run(f"{kind}/search-b{f}-s{seed}", spec, ctxs[seed], "tpe",
                                     DEFAULT_WARM_START)
    if key == "latency_ms":  # MACs are counted, not timed: nothing to re-time
        runs = [*lines, *randoms.values(), *searches.values()]
        for run, p50 in zip(runs, _retime([r["frame"] for r in runs], ctx), strict=True):
            run["frame"] = run["frame"].assign(
                searched_latency_p50_ms=run["frame"]["latency_p50_ms"], latency_p50_ms=p50)
    points = OUT / kind / "points"
    points.mkdir(parents=True, exist_ok=True)
    for seed, line in uniforms.items():
        line["frame"].to_csv(points / (f"uniform_l1-s{seed}.csv" if seeded
                                       else "uniform_l1.csv"), index=False)
    for seed, run in randoms.items():
        run["frame"].to_csv(points / f"random-s{seed}.csv", index=False)
    for (seed, f), run in searches.items():
        run["frame"].to_csv(points / f"search-b{f}-s{seed}.csv", index=False)
    cache: dict[tuple[int, str], float] = {}
    out: dict[str, Any] = {}
    for f, b in budgets.items():
        frames = {s: {"search": searches[s, f]["frame"], "uniform_l1": uniforms[s]["frame"],
                      "random": randoms[s]["frame"]} for s in SEEDS}
        sums = [searches[s, f]["summary"] for s in SEEDS]
        hits = [_hits(searches[s, f]["frame"], column, b) for s in SEEDS]
        pooled, total = sum(h for h, _ in hits), sum(n for _, n in hits)
        errors = [x.get("latency_model_error_median") for x in sums]
        cost_errors = [(x.get("cost_model_error_median") or {}).get(column) for x in sums]
        out[str(f)] = {
            "budget": b, "budget_key": key, "seeds": SEEDS,
            "finetune_seeded": seeded,
            **_judged(frames, b, ctxs, cache, kind),
            "budget_hit_rate": round(pooled / total, 4) if total else None,
            "budget_hit_rate_per_seed": [round(h / n, 4) if n else None for h, n in hits],
            "budget_hit_rate_n": [n for _, n in hits],
            "trials_per_minute": round(statistics.median(x["trials_per_minute"] for x in sums),
                                       2),
            "latency_model_error_median": _spread(errors)["median"],
            "cost_model_error_median": _spread(cost_errors)["median"],
        }
    out["uniform_trials_per_minute"] = round(statistics.median(
        u["summary"]["trials_per_minute"] for u in lines), 2)
    if made is not None:
        from prunebench.harness.measure.accuracy import accuracy

        base_model = ctx["prepared"].base_model
        out["network"] = {**made, "dense_val_accuracy": accuracy(
            base_model, ctx["prepared"].splits.val).top1, "dense_test_accuracy": accuracy(
            base_model, ctx["prepared"].splits.test).top1}
    return out


def draw_attainment(out: Path = OUT) -> Path:
    """``out/attainment.png`` (and .svg, .pdf) from a finished run's ``points/`` tables and
    ``result.json``: per space and budget, each arm's empirical attainment surfaces over the
    seeds, drawn on the points within the budget (the ones its hypervolume counts)."""
    from prunebench.search.pareto import OBJECTIVES
    from prunebench.search.plots import AttainmentPanel
    from prunebench.search.plots import draw_attainment as draw

    result = json.loads((out / "result.json").read_text())
    panels = []
    for kind in (k for k in COSTS if k in result):
        _, column, objective = COSTS[kind]
        for f in (k for k in result[kind] if k in map(str, BUDGET_FRACTIONS)):
            block = result[kind][f]
            budget = float(block["budget"])
            frames = _point_frames(out / kind / "points", f, block["seeds"]).values()
            runs = {"search": [x["search"] for x in frames],
                    "warm_start_only": [_warm_rows(x["search"]) for x in frames],
                    "uniform_l1": [x["uniform_l1"] for x in frames],
                    "random": [x["random"] for x in frames]}
            runs = {n: [_in_budget(x, column, budget) for x in rs] for n, rs in runs.items()}
            shown = (f"{budget:.3g} ms" if column == "latency_p50_ms"
                     else f"{budget / 1e6:.1f}M MACs")
            panels.append(AttainmentPanel(f"{kind}, budget {f}x dense ({shown})",
                                          OBJECTIVES[objective], OBJECTIVES["accuracy"], runs,
                                          budget=budget))
    labels = {"uniform_l1": "uniform line", "warm_start_only": "warm start only"}
    return draw(panels, out / "attainment", labels=labels)[0]


def main() -> int:
    """Run every arm of every space; the last line printed is one JSON object."""
    import sys

    if sys.argv[1:2] == ["--plot-only"]:  # redraw a finished run's figure
        print(draw_attainment(Path(sys.argv[2]) if len(sys.argv) > 2 else OUT))
        return 0
    if sys.argv[1:2] == ["--judge-only"]:  # judge a finished run's points again
        if len(sys.argv) not in (3, 4) or not (Path(sys.argv[2]) / "result.json").is_file():
            print("usage: bench_search.py --judge-only RUN_DIR [DYNAMIC_NETWORK.pt] (RUN_DIR "
                  "holds a finished run's result.json)", file=sys.stderr)
            return 2
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        print(json.dumps(judge_again(Path(sys.argv[2]),
                                     sys.argv[3] if len(sys.argv) > 3 else None)))
        return 0
    from prunebench.harness.evaluate import Workload, prepare
    from prunebench.harness.profiles import load_profile
    from prunebench.harness.pruning import DENSE
    from prunebench.search.objective import SearchObjective, SearchSpec, strict_profile

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    start = time.perf_counter()
    profile = load_profile(PROFILE)
    prepared = prepare(Workload(model=MODEL, dataset="digits", checkpoint=CHECKPOINT),
                       progress=True)
    probe = SearchObjective(SearchSpec(model=MODEL, dataset="digits", profile=PROFILE,
                                       checkpoint=CHECKPOINT, space=_space("static")),
                            prepared=prepared, profile=profile)
    # one latency frame for every arm of both spaces: the dense p50 timed once, strictly
    dense = probe.measure(DENSE, prepared.base_model, profile=strict_profile(profile))
    probe.latency_anchor_ms = dense.latency_p50_ms
    ctx = {"prepared": prepared, "profile": profile, "anchor": dense.latency_p50_ms,
           "probe": probe}
    result: dict[str, Any] = {kind: _bench_space(kind, ctx) for kind in SPACES}
    result.update({"model": MODEL, "profile": PROFILE, "trials_per_arm": N_TRIALS,
                   "finetune_epochs_per_static_trial": FINETUNE_EPOCHS,
                   "budget_fractions": list(BUDGET_FRACTIONS),
                   "dense_latency_p50_ms": dense.latency_p50_ms,
                   "dense_val_accuracy": dense.accuracy_top1, "latency_frame": "anchored",
                   "load_avg_1m": os.getloadavg()[0],
                   "wall_s": round(time.perf_counter() - start, 1)})
    (OUT / "result.json").write_text(json.dumps(result, indent=1))
    print(f"attainment surfaces: {draw_attainment(OUT)}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
