"""``prunebench search``: Optuna search for pruning configurations under hardware budgets.

Writes ``results/<run>/``: ``config.json`` (resolved arguments, profile, environment),
``dense.json`` (the dense reference, measured once per run; in a new study of the default
``anchored`` latency frame it is timed strictly and its p50 becomes the study's anchor, stored in
the study), the study storage (a journal file
unless ``--storage`` names another), ``trials.csv`` (one row per trial), ``remeasured.csv`` (the
front and near-budget trials re-timed with more samples and evaluated on the test split),
``front.csv`` (the re-measured feasible front) and ``summary.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from prunebench.harness.errors import PrunebenchError

NAME = "search"
HELP = "search pruning configurations with Optuna under latency/energy/MACs/params budgets"
DEFAULT_WARM_START = 8  # uniform configs a new study starts with (search.warm: aim, then fill)
DEFAULT_LATENCY_MARGIN = 0.1  # see --latency-margin
_BUDGET_FLAGS = {"latency_ms": "latency_budget_ms", "energy_mj": "energy_budget_mj",
                 "macs": "macs_budget", "params": "params_budget"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``prunebench search``."""
    p.add_argument("--model", required=True, help="registered model (see `prunebench models`)")
    p.add_argument("--dataset", required=True, help="registered data set")
    p.add_argument("--data-dir", help="where the data set lives on disk")
    p.add_argument("--checkpoint", help="trained checkpoint to prune (default: cached base model)")
    p.add_argument("--space", default="static", help="static | dynamic | hybrid")
    p.add_argument("--method", help="static method(s), comma-separated (several: searched as "
                   "'criterion'), and for dynamic/hybrid one dynamic method, e.g. l1,antidote")
    p.add_argument("--exec", dest="exec_mode", help="dynamic execution mode (masked, gathered, "
                   "fast)")
    p.add_argument("--profile", default="cpu-1t", help="hardware profile name or TOML path")
    p.add_argument("--latency-budget-ms", type=float, help="p50 latency budget (ms per batch)")
    p.add_argument("--energy-budget-mj", type=float, help="energy budget (mJ per inference)")
    p.add_argument("--macs-budget", type=float, help="(effective) MACs budget per input")
    p.add_argument("--params-budget", type=float, help="parameter-count budget")
    p.add_argument("--latency-frame", default="anchored", metavar="anchored|direct",
                   help="anchored (default): each latency is the dense p50 timed once when the "
                   "study starts, divided by the speedup over dense timed in interleaved rounds, "
                   "so a shared machine's drift between trials cancels; direct: each network's "
                   "own p50")
    p.add_argument("--latency-margin", type=float, default=DEFAULT_LATENCY_MARGIN,
                   metavar="FRACTION",
                   help="a trial meets --latency-budget-ms only if its p50 x (1 + FRACTION) "
                   f"does (default {DEFAULT_LATENCY_MARGIN}: re-timing the same network on a "
                   "shared machine moves its p50 by 10-25%%; 0 keeps only the p50's own "
                   "confidence interval)")
    p.add_argument("--latency-anchor-ms", type=float, metavar="MS",
                   help="anchored frame of a new study: use this dense p50 (e.g. from a sweep's "
                   "dense.json, so several searches share one frame) instead of timing one")
    p.add_argument("--trials", type=int, help="trials to run now (default 40 without --timeout)")
    p.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    p.add_argument("--sampler", default="tpe", help="tpe | nsga2 | gp | random")
    p.add_argument("--seed", type=int, default=0, help="seed for sampler, splits and training")
    p.add_argument("--objectives", default="accuracy,latency_p50", help="comma-separated, from "
                   "accuracy, latency_p50, latency_p90, energy, macs, params")
    p.add_argument("--finetune-epochs", type=int, default=0, help="fine-tune epochs per trial")
    p.add_argument("--search-finetune", action="store_true",
                   help="search the fine-tune epochs in 0..--finetune-epochs")
    p.add_argument("--max-ratio", type=float, default=0.8, help="largest per-layer ratio")
    p.add_argument("--ratio-step", type=float, default=0.05, help="ratio grid step")
    p.add_argument("--keep-min", type=float, default=0.2, help="smallest dynamic keep-ratio")
    p.add_argument("--round-to", type=int, help="keep channel counts multiples of this")
    p.add_argument("--storage", help="Optuna storage URL (sqlite:///x.db, postgresql://...) or "
                   "journal file path (default: the run folder's study.journal)")
    p.add_argument("--study", help="study name (default: the run folder's name)")
    p.add_argument("--resume", action="store_true", help="add trials to an existing study "
                   "(an existing study of the same name is always resumed)")
    p.add_argument("--warm-start", type=int, default=DEFAULT_WARM_START,
                   help="start a new study with N uniform configurations: with a budget, the "
                   "first find the budget's edge on the uniform line and the rest spread over "
                   "its feasible stretch; without, spread over the whole line (counted in "
                   "--trials; default %(default)s; 0: off)")
    p.add_argument("--remeasure-max", type=int, default=20, help="configs re-measured at most")
    p.add_argument("--out", help="run folder (default results/search-<model>-...-<hash>)")
    p.add_argument("--force", action="store_true",
                   help="measure even if the profile does not match this machine (recorded)")
    p.add_argument("--json", action="store_true", help="print one JSON summary on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _methods(args: argparse.Namespace) -> tuple[tuple[str, ...], str | None]:
    """(static methods, dynamic method) from ``--method`` (defaults: l1, antidote)."""
    from prunebench.harness.pruning import METHODS

    names = [n.strip() for n in (args.method or "").split(",") if n.strip()]
    static = tuple(n for n in names if n in METHODS and METHODS.metadata(n)["kind"] == "static")
    dynamic = [n for n in names if n in METHODS and METHODS.metadata(n)["kind"] == "dynamic"]
    unknown = [n for n in names if n not in static and n not in dynamic]
    if unknown:
        choices = [n for n in METHODS.list() if METHODS.metadata(n)["kind"] != "dense"]
        raise PrunebenchError(f"unknown pruning method {unknown[0]!r}; choose among "
                              f"{', '.join(choices)}")
    if len(dynamic) > 1:
        raise PrunebenchError(f"give one dynamic method, not {','.join(dynamic)}")
    if args.space != "dynamic" and not static:
        static = ("l1",)
    dyn = dynamic[0] if dynamic else ("antidote" if args.space != "static" else None)
    if args.space == "static" and dynamic:
        raise PrunebenchError(f"method {dynamic[0]!r} is dynamic; use --space dynamic or hybrid")
    if args.space == "dynamic" and static:
        raise PrunebenchError(f"method {static[0]!r} is static; use --space static or hybrid")
    return static, dyn


def build_spec(args: argparse.Namespace) -> Any:
    """The validated :class:`~prunebench.search.objective.SearchSpec` of the command line."""
    from prunebench.search.objective import SearchSpec
    from prunebench.search.space import SPACES, SpaceSpec

    if args.space not in SPACES:
        raise PrunebenchError(f"unknown search space {args.space!r}; choose one of "
                              f"{', '.join(SPACES)}")
    static, dyn = _methods(args)
    if args.exec_mode and args.space == "static":
        raise PrunebenchError(f"--exec {args.exec_mode} applies to dynamic gating; use --space "
                              "dynamic or hybrid, or drop --exec")
    space = SpaceSpec(kind=args.space, static_methods=static, dynamic_method=dyn,
                      exec_mode=args.exec_mode, max_ratio=args.max_ratio,
                      ratio_step=args.ratio_step, keep_min=args.keep_min,
                      finetune_epochs=args.finetune_epochs, search_finetune=args.search_finetune,
                      round_to=args.round_to)
    budgets = {k: getattr(args, flag) for k, flag in _BUDGET_FLAGS.items()
               if getattr(args, flag) is not None}
    objectives = tuple(o.strip() for o in args.objectives.split(",") if o.strip())
    return SearchSpec(model=args.model, dataset=args.dataset, space=space, profile=args.profile,
                      data_dir=args.data_dir, checkpoint=args.checkpoint, objectives=objectives,
                      budgets=budgets, seed=args.seed, force=args.force,
                      latency_frame=args.latency_frame, latency_margin=args.latency_margin)


def default_run_dir(spec: Any) -> Path:
    """``results/search-<model>-<dataset>-<space>-<profile>-<hash of the spec>``."""
    digest = hashlib.sha256(json.dumps({**spec.to_dict(), "force": False},
                                       sort_keys=True).encode()).hexdigest()[:6]
    profile = Path(spec.profile).stem
    return Path("results") / f"search-{spec.model}-{spec.dataset}-{spec.space.kind}-{profile}-" \
                             f"{digest}"


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and a rename (never half-written)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_csv(path: Path, frame: pd.DataFrame) -> None:
    """Atomic CSV write."""
    write_atomic(path, frame.to_csv(index=False))


def run(args: argparse.Namespace) -> int:
    """Run (or resume) a search and write its run folder; returns the exit code."""
    import optuna

    from prunebench.search.study import SAMPLERS

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the progress bar reports trials
    if args.sampler not in SAMPLERS:
        raise PrunebenchError(f"unknown sampler {args.sampler!r}; choose one of "
                              f"{', '.join(SAMPLERS)}")
    for flag in ("trials", "timeout", "remeasure_max", "warm_start"):
        value = getattr(args, flag)
        if value is not None and value < 0:
            raise PrunebenchError(f"--{flag.replace('_', '-')} {value!r} is negative")
    spec = build_spec(args)
    anchor = given_anchor(args, spec)
    if args.trials is None and args.timeout is None:
        args.trials = 40
    run_dir = Path(args.out) if args.out else default_run_dir(spec)
    result = SearchRun(spec, run_dir, args=_resolved(args), sampler=args.sampler,
                       storage=args.storage, study_name=args.study or run_dir.name,
                       resume=args.resume, progress=not args.quiet,
                       warm_start=args.warm_start, latency_anchor_ms=anchor).execute(
        n_trials=args.trials, timeout=args.timeout, remeasure_max=args.remeasure_max)
    _print(result, args.json)
    result.raise_if_unmet()
    return 130 if result.interrupted else 0


def given_anchor(args: argparse.Namespace, spec: Any) -> float | None:
    """``--latency-anchor-ms``, checked: a positive dense p50, in the anchored frame."""
    anchor = args.latency_anchor_ms
    if anchor is not None and (spec.latency_frame != "anchored" or not anchor > 0):
        raise PrunebenchError(f"--latency-anchor-ms {anchor!r} needs a positive dense p50 and "
                              "the anchored latency frame; drop it or --latency-frame direct")
    return anchor


def _resolved(args: argparse.Namespace) -> dict[str, Any]:
    out = {k: v for k, v in vars(args).items() if not k.startswith("_")}
    if out.get("storage"):  # never write a database password into config.json
        out["storage"] = _redact(out["storage"])
    return out


def _print(result: Any, as_json: bool) -> None:
    summary = result.summary
    if as_json:
        print(json.dumps(summary, sort_keys=True, default=str))
        return
    c = summary["counts"]
    lines = [f"run folder: {summary['run_dir']}  (study {summary['study']!r})",
             f"trials: {c['total']} ({c['complete']} complete, {c['fail']} failed, "
             f"{c['pruned']} pruned, {c['feasible']} feasible); this run: "
             f"{summary['trials_this_run']} at {summary['trials_per_minute']:.2f} trials/min",
             f"best feasible: {summary['best']}",
             f"front: {summary['front_size']} configs re-measured feasible"
             + (f"; budget hit rate {summary['budget_hit_rate']:.0%} of "
                f"{summary['n_reported_feasible']}" if summary["budget_hit_rate"] is not None
                else "")]
    print("\n".join(lines), file=sys.stdout)



class SearchRun:
    """One invocation: open/resume the study, measure dense, run trials, re-measure, write."""

    def __init__(self, spec: Any, run_dir: Path, *, args: dict[str, Any], sampler: str = "tpe",
                 storage: str | None = None, study_name: str | None = None,
                 resume: bool = False, progress: bool = True, objective: Any = None,
                 warm_start: int = 0, latency_anchor_ms: float | None = None) -> None:
        self.spec, self.run_dir, self.args = spec, Path(run_dir), args
        self.objective = objective  # a SearchObjective to reuse (benchmarks), else built
        self.sampler, self.storage = sampler, storage
        self.study_name = study_name or self.run_dir.name
        self.resume, self.progress, self.warm_start = resume, progress, warm_start
        self.latency_anchor_ms = latency_anchor_ms  # a given frame for a new study
        self.summary: dict[str, Any] = {}
        self.interrupted = False
        self._unmet: str | None = None

    def execute(self, *, n_trials: int | None, timeout: float | None,
                remeasure_max: int = 20) -> SearchRun:
        """Do the whole run; the run folder is written even when trials fail or are stopped."""
        import optuna

        from prunebench.search.objective import ANCHOR_ATTR, SearchObjective, measurement_row
        from prunebench.search.study import (
            create_or_load_study,
            make_pruner,
            make_sampler,
            open_storage,
            run_trials,
            storage_url,
        )

        self.run_dir.mkdir(parents=True, exist_ok=True)
        url = storage_url(self.storage, self.run_dir)
        storage = open_storage(url)
        exists = self.study_name in optuna.get_all_study_names(storage)
        if self.resume and not exists:
            raise PrunebenchError(f"--resume: no study {self.study_name!r} in {_redact(url)}; "
                                  "drop --resume to start one or give the right --study/--out")
        objective = self.objective or SearchObjective(self.spec, progress=self.progress)
        stored = optuna.load_study(study_name=self.study_name, storage=storage) if exists \
            else None
        if self.latency_anchor_ms is not None:
            had = stored.user_attrs.get(ANCHOR_ATTR) if stored is not None else None
            if had is not None and not math.isclose(had, self.latency_anchor_ms):
                raise PrunebenchError(
                    f"study {self.study_name!r} times in the frame of a {had:.4g} ms dense "
                    f"anchor, not {self.latency_anchor_ms:.4g} ms; drop --latency-anchor-ms "
                    "to resume it")
            objective.latency_anchor_ms = self.latency_anchor_ms
        dense, anchor = objective.dense_reference(
            stored.user_attrs.get(ANCHOR_ATTR) if stored is not None else None)
        objective.values(measurement_row(dense))  # every objective measurable, before trials
        pruner = make_pruner(len(self.spec.objectives), self.spec.space.finetune_epochs)
        # a resumed run must not replay the first run's random draws: offset the seed
        done = len(stored.trials) if stored is not None else 0
        sampler = make_sampler(self.sampler, self.spec.seed + done)
        study, _ = create_or_load_study(storage, self.study_name, self.spec, sampler, pruner)
        if anchor is not None:  # a new study: later runs and workers time in this frame
            study.set_user_attr(ANCHOR_ATTR, anchor)
        if n_trials is not None:
            from prunebench.search.workers import BUDGET_ATTR

            # Workers joining this study (`prunebench worker`) stop at the same total.
            study.set_user_attr(BUDGET_ATTR, done + int(n_trials))
        callbacks = []
        if self.warm_start and not study.trials:
            from prunebench.search.warm import BudgetLineStart

            # the dense network's worst budget violation: t = 0 of the uniform line
            violation = max(objective.constraints(measurement_row(dense)).values()
                            ) if self.spec.budgets else None
            warm = BudgetLineStart(objective.space, self.warm_start, violation)
            warm.start(study)
            callbacks.append(warm.callback)
        write_atomic(self.run_dir / "dense.json", json.dumps(dense.to_dict(), indent=1,
                                                              sort_keys=True))
        self._write_config(url, objective, dense)
        loop = run_trials(study, objective, n_trials=n_trials, timeout=timeout,
                          objectives=self.spec.objectives, progress=self.progress,
                          callbacks=callbacks)
        self.interrupted = loop.interrupted
        self._finish(study, objective, loop, url, remeasure_max)
        return self

    def _write_config(self, url: str, objective: Any, dense: Any) -> None:
        profile = dataclasses.asdict(objective.profile)
        config = {"command": "search", "args": self.args, "spec": self.spec.to_dict(),
                  "space": objective.space.describe(), "profile": profile,
                  "storage": _redact(url), "study": self.study_name,
                  "latency_budget_ms": self.spec.budgets.get("latency_ms"),
                  "environment": dense.environment}
        write_atomic(self.run_dir / "config.json",
                     json.dumps(config, indent=1, sort_keys=True, default=str))

    def _finish(self, study: Any, objective: Any, loop: Any, url: str,
                remeasure_max: int) -> None:
        from prunebench.search.study import (
            best_feasible,
            describe_trial,
            feasible_front,
            remeasure,
            trial_summary,
            trials_frame,
        )

        trials = trials_frame(study, self.spec.objectives)
        write_csv(self.run_dir / "trials.csv", trials)
        hit_rate, n_reported = None, 0
        if loop.interrupted:  # no re-timing after Ctrl-C: the front is the search's own numbers
            rows = trials[trials.get("feasible", pd.Series(dtype=bool)) == True]  # noqa: E712
            front = feasible_front(rows.assign(remeasured=False,
                                               val_accuracy_top1=rows.get("accuracy_top1")),
                                   self.spec) if not rows.empty else rows
        else:
            re = remeasure(study, objective, limit=remeasure_max, progress=self.progress)
            write_csv(self.run_dir / "remeasured.csv", re.rows)
            front, hit_rate, n_reported = re.front, re.hit_rate, re.n_reported_feasible
        if front.columns.empty:  # keep a header so readers see an empty front, not no file
            front = pd.DataFrame(columns=["trial_number", "label", "run_kind", "feasible"])
        write_csv(self.run_dir / "front.csv", front)
        counts = trial_summary(study)
        self.summary = {
            "run_dir": str(self.run_dir), "study": self.study_name, "storage": _redact(url),
            "counts": counts, "trials_this_run": loop.trials,
            "trials_per_minute": loop.trials_per_minute, "interrupted": loop.interrupted,
            "best": describe_trial(best_feasible(study, self.spec.objectives),
                                   self.spec.objectives),
            "front_size": len(front), "budget_hit_rate": hit_rate,
            "n_reported_feasible": n_reported, "budgets": self.spec.budgets}
        self._unmet = _unmet_message(study, trials, self.spec, counts)
        self.summary["error"] = self._unmet
        write_atomic(self.run_dir / "summary.json",
                     json.dumps(self.summary, indent=1, sort_keys=True, default=str))

    def raise_if_unmet(self) -> None:
        """Raise the impossible-budget / all-failed message (exit 2) after the folder is written."""
        if self._unmet:
            raise PrunebenchError(self._unmet)


def _unmet_message(study: Any, trials: pd.DataFrame, spec: Any,
                   counts: dict[str, int]) -> str | None:
    from prunebench.search.objective import BUDGETS

    if counts["total"] and not counts["complete"] and counts["fail"]:
        failed = trials[trials["state"] == "FAIL"]
        reasons = failed["fail_reason"].dropna() if "fail_reason" in failed else pd.Series()
        first = reasons.iloc[0] if len(reasons) else "no reason recorded"
        return f"all {counts['fail']} trials failed; first reason: {first}"
    if not spec.budgets or not counts["complete"] or counts["feasible"]:
        return None
    done = trials[trials["state"] == "COMPLETE"]
    parts = []
    for key, budget in spec.budgets.items():
        column, unit = BUDGETS[key]
        values = pd.to_numeric(done[column], errors="coerce")
        best = values.min()
        trial = int(done.loc[values.idxmin(), "trial_number"])
        parts.append(f"{key.split('_')[0]} budget {budget:g} {unit} but the lowest seen was "
                     f"{best:.4g} {unit} (trial {trial})")
    return (f"no configuration met the budget in {counts['complete']} trials: "
            f"{'; '.join(parts)}; raise the budget or allow more pruning (--max-ratio)")


def _redact(url: str) -> str:
    if url.startswith("journal:") or "://" not in url:  # a file path holds no secret
        return url
    from prunebench.search.distributed import redact

    return redact(url)
