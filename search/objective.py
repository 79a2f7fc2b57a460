"""The search objective: trial -> pruned network -> ``harness.evaluate`` -> objective values.

:class:`SearchSpec` is everything a trial needs, as plain JSON (saved in the study's user attrs),
so that any worker can rebuild the same :class:`SearchObjective` from the storage alone. Each
trial stores every Measurement field as a user attr, reports intermediate validation accuracy
while fine-tuning (single-objective studies let Optuna's pruner stop hopeless trials), and sets
one constraint per budget with ``trial.set_constraint`` (value <= 0 is feasible).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna
from torch import nn

from prunebench.harness.errors import PrunebenchError
from prunebench.harness.measure.latency import Settle
from prunebench.harness.measurement import Measurement
from prunebench.harness.profiles import HardwareProfile
from prunebench.harness.pruning import DENSE, PruningConfig
from prunebench.search.latency_model import (
    ACCURACY,
    BUDGETS,
    COSTS,
    GAP_AIM_ATTR,
    LEVEL,
    LEVEL_DISTRIBUTION,
    BudgetProjection,
    CostModel,
    CostTable,
    ProjectingSampler,
    fit_cost_model,
    refit_models,
    stored_models,
    threshold_possible,
)
from prunebench.search.space import SearchSpace, SpaceSpec, TrialConfig

SPEC_ATTR = "prunebench_spec"
# The dense p50 (ms) that anchors an "anchored" study's latency frame; set once per study.
ANCHOR_ATTR = "prunebench_latency_anchor_ms"
# per trial: the fine-tune epochs its accuracy was measured after (its fidelity)
FIDELITY_ATTR = "fidelity_epochs"
# per trial: "full", "settled" or "light", how its latency was timed (SearchSpec.trial_timing;
# "settled": stopped early once its side of the latency budget was known)
TIMING_ATTR = "trial_timing"
LATENCY_FRAMES = ("anchored", "direct")
# how a trial's latency is timed (SearchSpec.trial_timing): "full", the profile's settings;
# "light", LIGHT_TIMING_FACTOR x its samples and time (light_profile); "settled", the profile's
# settings, stopped early once the p50 is known, at the light CI (or the margin if smaller), to
# lie on one side of the latency budget with its margin (trial_settle); "auto", light exactly
# when no objective or budget reads a latency (a MACs-budgeted search: the timing decides
# nothing), settled with a latency budget and a margin, else full. The front's re-measurement is
# timed strictly in every case.
TRIAL_TIMINGS = ("auto", "full", "light", "settled")
LIGHT_TIMING_FACTOR = 0.25
LATENCY_OBJECTIVES = ("latency_p50", "latency_p90")  # objectives read off the timing
LATENCY_BUDGETS = ("latency_ms",)  # budgets read off the timing (energy has its own window)
# Objectives a search can optimise: short name -> (row column, direction).
SEARCH_OBJECTIVES: dict[str, tuple[str, str]] = {
    "accuracy": (ACCURACY, "maximize"),
    "latency_p50": ("latency_p50_ms", "minimize"),
    "latency_p90": ("latency_p90_ms", "minimize"),
    "energy": ("energy_mj_per_inference", "minimize"),
    "macs": ("macs", "minimize"),
    "params": ("params", "minimize"),
}
# Budgets (CLI key -> (row column, unit)): BUDGETS, defined with the cost models in
# search.latency_model and imported above, so both read one table.


@dataclass(frozen=True)
class SearchSpec:
    """What a search evaluates; JSON round-trippable and stored with the study."""

    model: str
    dataset: str
    space: SpaceSpec
    profile: str
    data_dir: str | None = None
    checkpoint: str | None = None
    objectives: tuple[str, ...] = ("accuracy", "latency_p50")
    budgets: dict[str, float] = field(default_factory=dict)
    seed: int = 0
    force: bool = False
    # "anchored": every latency is the study's dense anchor / the speedup over dense timed in
    # interleaved rounds (drift on a shared machine cancels); "direct": the network's own p50
    latency_frame: str = "anchored"
    # a trial meets a latency budget only if p50 x (1 + this) does (at least the p50's own CI):
    # re-measurements on a shared machine differ by more than one measurement's CI
    latency_margin: float = 0.0
    # the training recipe's content (Recipe.to_dict(); None: the default recipe) and the side
    # imagefolder data is loaded at (None: the checkpoint's, else 32)
    recipe: dict[str, Any] | None = None
    image_size: int | None = None
    # scale each sampled allocation so the study's cost models predict it meets the budgets
    # (search.latency_model); off: the sampler's proposals are evaluated as drawn
    budget_projection: bool = True
    # the Optuna pruner over fine-tune epochs (PRUNERS below; "auto": median pruning of
    # single-objective studies with fine-tuning, as before pruners could be chosen)
    pruner: str = "auto"
    # TRIAL_TIMINGS: how each trial is timed (the front's re-measurement is strict regardless)
    trial_timing: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "objectives", tuple(self.objectives))
        if not (isinstance(self.latency_margin, int | float) and 0 <= self.latency_margin < 1):
            raise PrunebenchError(f"latency margin {self.latency_margin!r} must be in [0, 1), "
                                  "e.g. 0.1 for 10%")
        if self.latency_frame not in LATENCY_FRAMES:
            raise PrunebenchError(f"unknown latency frame {self.latency_frame!r}; choose among "
                                  f"{', '.join(LATENCY_FRAMES)}")
        for name in self.objectives:
            if name not in SEARCH_OBJECTIVES:
                raise PrunebenchError(f"unknown objective {name!r}; choose among "
                                      f"{', '.join(SEARCH_OBJECTIVES)}")
        if not self.objectives or len(set(self.objectives)) != len(self.objectives):
            raise PrunebenchError(f"objectives {','.join(self.objectives)!r} must name each "
                                  "objective once, e.g. accuracy,latency_p50")
        check_pruner(self.pruner, len(self.objectives), self.space.finetune_epochs)
        if self.trial_timing not in TRIAL_TIMINGS:
            raise PrunebenchError(f"unknown trial timing {self.trial_timing!r}; choose one of "
                                  f"{', '.join(TRIAL_TIMINGS)}")
        for key, value in self.budgets.items():
            if key not in BUDGETS:
                raise PrunebenchError(f"unknown budget {key!r}; choose among {', '.join(BUDGETS)}")
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise PrunebenchError(f"budget {key}={value!r} must be a positive number")
        if self.trial_timing == "settled" and not self.settles:
            raise PrunebenchError("trial timing 'settled' needs a latency budget "
                                  "(--latency-budget-ms) and a latency margin above 0 (e.g. "
                                  "--latency-margin 0.1); choose full or light")

    @property
    def latency_judged(self) -> bool:
        """Whether an objective or a budget reads a trial's latency."""
        return any(o in LATENCY_OBJECTIVES for o in self.objectives) \
            or any(k in LATENCY_BUDGETS for k in self.budgets)

    @property
    def settles(self) -> bool:
        """Whether a trial's timing can settle its side of a latency budget (one is set, with
        a margin above 0: the feasibility rule the settled CI is judged by)."""
        return any(k in LATENCY_BUDGETS for k in self.budgets) and self.latency_margin > 0

    @property
    def timing_mode(self) -> str:
        """How trials are timed: ``"light"``, ``"settled"`` or ``"full"`` (``trial_timing``,
        ``"auto"`` resolved)."""
        if self.trial_timing != "auto":
            return self.trial_timing
        if not self.latency_judged:
            return "light"
        return "settled" if self.settles else "full"

    @property
    def light_timing(self) -> bool:
        """Whether trials are timed with :func:`light_profile` (``trial_timing``)."""
        return self.timing_mode == "light"

    @property
    def directions(self) -> list[str]:
        """Optuna study directions, one per objective."""
        return [SEARCH_OBJECTIVES[o][1] for o in self.objectives]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (stored as the study user attr ``prunebench_spec``)."""
        out = dataclasses.asdict(self)
        out["space"] = self.space.to_dict()
        out["objectives"] = list(self.objectives)
        for key in ("recipe", "image_size"):  # absent when unset: older specs read the same
            if out[key] is None:
                del out[key]
        if not self.budget_projection:  # studies made before it existed read the same
            del out["budget_projection"]
        if self.pruner == "auto":
            del out["pruner"]
        if self.trial_timing == "auto":
            del out["trial_timing"]
        return out

    def training_recipe(self, runtime: Any = None) -> Any:
        """The :class:`~prunebench.harness.train.Recipe` of this spec, on ``runtime`` (a
        :class:`~prunebench.harness.devices.TrainRuntime`; ``None``: the CPU)."""
        from prunebench.harness.devices import CPU_RUNTIME
        from prunebench.harness.train import DEFAULT_RECIPE, Recipe

        recipe = Recipe(**self.recipe) if self.recipe is not None else DEFAULT_RECIPE
        return recipe.with_(runtime=runtime or CPU_RUNTIME)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchSpec:
        """Inverse of :meth:`to_dict`."""
        # studies stored before latency frames existed were timed directly, and before the
        # projection existed (or with it off) proposals were evaluated as drawn; a spec
        # without trial_timing is "auto" (not stored, so that a run folder's name is kept)
        return cls(**{"latency_frame": "direct", "budget_projection": False, **data,
                      "space": SpaceSpec.from_dict(data["space"]),
                      "objectives": tuple(data["objectives"]),
                      "budgets": dict(data.get("budgets") or {})})


PRUNERS = ("auto", "none", "median", "sha", "hyperband")


def check_pruner(name: str, n_objectives: int, finetune_epochs: int) -> None:
    """A one-line :class:`PrunebenchError` when pruner ``name`` is unknown or cannot work here."""
    if name not in PRUNERS:
        raise PrunebenchError(f"unknown pruner {name!r}; choose one of {', '.join(PRUNERS)}")
    if name in ("auto", "none"):
        return
    if n_objectives != 1:
        raise PrunebenchError(f"--pruner {name} needs a single objective (Optuna's pruners "
                              "cannot rank multi-objective trials); use --objectives accuracy "
                              "(budgets stay constraints) or --pruner none")
    if finetune_epochs < 1:
        raise PrunebenchError(f"--pruner {name} stops trials between fine-tune epochs; give "
                              "--finetune-epochs 2 or more, or --pruner none")


def strict_profile(profile: HardwareProfile, factor: float = 4.0) -> HardwareProfile:
    """``profile`` with ``factor`` x more samples and time and a ``factor`` x tighter CI target.

    The timing of the dense anchor and of every re-measurement of a search's front.
    """
    t = profile.timing
    timing = dataclasses.replace(
        t, warmup_iters=int(t.warmup_iters * 2), min_samples=int(t.min_samples * factor),
        min_time_s=t.min_time_s * factor, max_time_s=t.max_time_s * factor,
        target_rel_ci=t.target_rel_ci / factor)
    return dataclasses.replace(profile, timing=timing)


def light_profile(profile: HardwareProfile,
                  factor: float = LIGHT_TIMING_FACTOR) -> HardwareProfile:
    """``profile`` with ``factor`` (< 1) x its samples (at least 10) and time and a CI target
    ``1 / factor`` x wider: the timing of a trial whose latency no objective or budget reads
    (``SearchSpec.light_timing``); every other measurement keeps the profile's own."""
    t = profile.timing
    timing = dataclasses.replace(
        t, min_samples=max(10, int(t.min_samples * factor)), min_time_s=t.min_time_s * factor,
        max_time_s=t.max_time_s * factor, target_rel_ci=t.target_rel_ci / factor)
    return dataclasses.replace(profile, timing=timing)


def trial_settle(spec: SearchSpec, profile: HardwareProfile) -> Settle | None:
    """The :class:`~prunebench.harness.measure.latency.Settle` a ``"settled"`` trial is timed
    with: the latency budget over ``1 + latency_margin`` (where the feasibility rule of
    :func:`constraint_values` draws its line), at the light timing's CI (``1 /
    LIGHT_TIMING_FACTOR`` x the profile's target) or the margin, whichever is smaller, so that
    the settled CI never outweighs the margin in that rule. ``None`` for other timings."""
    if spec.timing_mode != "settled":
        return None
    budget = min(float(v) for k, v in spec.budgets.items() if k in LATENCY_BUDGETS)
    margin = float(spec.latency_margin)
    return Settle(budget / (1.0 + margin),
                  min(profile.timing.target_rel_ci / LIGHT_TIMING_FACTOR, margin))


def measurement_row(m: Measurement) -> dict[str, Any]:
    """``m.to_row()`` plus ``latency_p50_ms_raw`` (the direct p50 before the latency frame)."""
    row = m.to_row()
    row["latency_p50_ms_raw"] = m.environment.get("latency_raw_p50_ms", m.latency_p50_ms)
    return row


def constraint_values(row: Mapping[str, Any], budgets: Mapping[str, float], *,
                      noise_margin: bool = True, latency_margin: float = 0.0
                      ) -> dict[str, float]:
    """Relative budget violation per budget: ``value / budget - 1`` (<= 0 is feasible).

    Relative, so that samplers weigh a 10 % overshoot in milliseconds and in MACs alike. The
    latency budget is checked against ``p50 x (1 + m)`` with ``m`` the larger of the p50's
    confidence-interval half-width (``latency_ci_rel``, capped at 25 %) and ``latency_margin``:
    a configuration is only called feasible when timing noise is unlikely to push it over the
    budget on re-measurement. ``noise_margin=False`` checks the p50 itself (as the
    re-measurement does).
    """
    out = {}
    for key, budget in budgets.items():
        column, _ = BUDGETS[key]
        value = row.get(column)
        if value is None:
            raise PrunebenchError(f"budget {key} needs {column}, which this profile did not "
                                  "measure; drop the budget or use a profile that measures it")
        value = float(value)
        if key == "latency_ms" and noise_margin:
            ci = row.get("latency_ci_rel")
            ci = min(float(ci), 0.25) if ci is not None and math.isfinite(ci) else 0.0
            value *= 1.0 + max(ci, float(latency_margin))
        out[key] = value / float(budget) - 1.0
    return out


class SearchObjective:
    """Callable objective for ``study.optimize``; built once per process from a spec.

    ``prepared`` (a ``harness.evaluate.PreparedWorkload``) and ``profile`` are loaded from the
    spec when not given. ``timing_lock`` is held around timing only (multi-worker searches).
    """

    def __init__(self, spec: SearchSpec, *, prepared: Any = None, profile: Any = None,
                 timing_lock: Any = None, progress: bool = False,
                 train_runtime: Any = None) -> None:
        from prunebench.harness.evaluate import Workload, prepare, prune_context
        from prunebench.harness.profiles import check_usable, load_profile

        self.spec = spec
        self.profile = profile if profile is not None else load_profile(spec.profile)
        check_usable(self.profile, force=spec.force)
        if spec.space.dynamic_method is not None and spec.space.kind != "static":
            from prunebench.harness.engines import check_dynamic_support

            check_dynamic_support(self.profile, spec.space.dynamic_method)  # before training
        self.prepared = prepared if prepared is not None else prepare(
            Workload(model=spec.model, dataset=spec.dataset, data_dir=spec.data_dir,
                     checkpoint=spec.checkpoint, seed=spec.seed, image_size=spec.image_size,
                     recipe=spec.training_recipe(train_runtime)), progress=progress)
        self.space = SearchSpace.build(spec.space, self.prepared.base_model,
                                       self.prepared.example_input,
                                       prune_context(self.prepared, progress=False))
        # what a trial is timed with (the dense reference and re-measurements name their own)
        self.trial_profile = light_profile(self.profile) if spec.light_timing else self.profile
        self.trial_settle = trial_settle(spec, self.profile)
        self.timing_lock = timing_lock
        self.progress = progress
        self.latency_anchor_ms: float | None = None  # set by dense_reference (anchored frame)
        self.dense_row: dict[str, Any] | None = None  # set by dense_reference
        self.costs: CostTable | None = None  # when there are budgets
        self.projection: BudgetProjection | None = None  # when the spec asks for one
        if spec.budgets and self.space.param_names():
            # a threshold keep's share is read from real inputs (64 of the validation split)
            calibration = self.prepared.eval_inputs(64)[0] \
                if threshold_possible(self.space) else None
            self.costs = CostTable(self.space, self.prepared.base_model,
                                   self.prepared.example_input, calibration)
            if spec.budget_projection:
                self.projection = BudgetProjection(self.space, self.costs, spec.budgets,
                                                   spec.latency_margin)

    @classmethod
    def from_study(cls, study: optuna.Study, **kwargs: Any) -> SearchObjective:
        """Rebuild the objective of ``study`` from its stored spec (no other input needed)."""
        data = study.user_attrs.get(SPEC_ATTR)
        if data is None:
            raise PrunebenchError(f"study {study.study_name!r} was not made by `prunebench "
                                  "search` (no stored spec); pick another --study")
        return cls(SearchSpec.from_dict(data), **kwargs)

    # ------------------------------------------------------------------ one trial
    def __call__(self, trial: optuna.Trial) -> tuple[float, ...]:
        """Evaluate one trial; a failure is recorded in ``fail_reason`` and re-raised.

        With a budget projection, the study's sampler is first wrapped in a
        :class:`~prunebench.search.latency_model.ProjectingSampler` (once per study object:
        the trial's proposal is drawn lazily, at its first ``suggest``). With budgets, each
        cost model's prediction is stored as ``predicted_<column>`` and, once measured, its
        relative error as ``model_error_<column>``; the models are then refitted and stored.
        """
        try:
            models = self._propose(trial)
            chosen = self.space.suggest(trial)
            trial.set_user_attr("config", chosen.record.to_json())
            predicted = self._predict(chosen.record, models)
            for column, value in predicted.items():
                trial.set_user_attr(f"predicted_{column}", value)
            model = self.build(chosen, trial=trial)
            m = self.measure(chosen.record, model, split="val", profile=self.trial_profile,
                             settle=self.trial_settle)
            trial.set_user_attr(TIMING_ATTR, "light" if self.spec.light_timing else
                                "settled" if m.environment.get("latency_settled") else "full")
        except optuna.TrialPruned:
            raise
        except Exception as exc:
            trial.set_user_attr("fail_reason", f"{type(exc).__name__}: {exc}"[:2000])
            raise
        row = measurement_row(m)
        for key, value in row.items():
            trial.set_user_attr(key, value)
        for key, value in self.constraints(row).items():
            trial.set_constraint(key, value)
        self._learn(trial, chosen.record, row, predicted)
        return self.values(row)

    # ------------------------------------------------------------------ cost models
    def _propose(self, trial: optuna.Trial) -> dict[str, Any]:
        """Install the projection on the study's sampler; returns the models in use."""
        if self.costs is None:
            return {}
        study = trial.study
        if self.projection is not None and self.budget_binds():
            if not isinstance(study.sampler, ProjectingSampler):
                study.sampler = ProjectingSampler(study.sampler, self.projection, self.models)
            d = LEVEL_DISTRIBUTION
            trial.suggest_float(LEVEL, d.low, d.high, step=d.step)
            gap = study.sampler.aims.pop(trial.number, None)
            if gap is not None:
                trial.set_user_attr(GAP_AIM_ATTR, {"key": gap.key, "low": gap.gap.low,
                                                   "high": gap.gap.high, "cost": gap.cost,
                                                   "start": gap.gap.start})
        return self.models(study)

    def models(self, study: optuna.Study) -> dict[str, CostModel]:
        """The cost models of ``study``'s budgets: those stored in it, else (no measurement
        yet) the MAC-proportional line through the dense network; counted ones always."""
        stored = stored_models(study)
        dense = self._dense_point() or {}
        out = {}
        for key in self.spec.budgets:
            column, kind = COSTS[key]
            if kind == "counted":
                out[key] = CostModel(column, "counted")
            elif key in stored:
                out[key] = stored[key]
            elif dense.get(column) is not None:
                prior = fit_cost_model(column, [(self.costs.features(DENSE), dense[column])],
                                       self.costs.names)
                if prior is not None:
                    out[key] = prior
        return out

    def budget_binds(self) -> bool:
        """Whether the dense network misses a budget (with the latency margin); unknown (no
        dense measurement in this process) counts as binding. A study whose dense network
        meets every budget is searched without projection: there is nothing to land in."""
        dense = self._dense_point()
        if dense is None:
            return True
        for key, budget in self.spec.budgets.items():
            value = dense.get(COSTS[key][0])
            margin = self.spec.latency_margin if key == "latency_ms" else 0.0
            if value is None or float(value) * (1.0 + margin) > budget:
                return True
        return False

    def _dense_point(self) -> dict[str, Any] | None:
        """The dense network's measured row, or its anchored latency alone (a worker that
        reads the study's anchor times no dense network)."""
        if self.dense_row is not None:
            return self.dense_row
        if self.spec.latency_frame == "anchored" and self.latency_anchor_ms is not None:
            return {"latency_p50_ms": self.latency_anchor_ms}
        return None

    def _predict(self, record: PruningConfig, models: Mapping[str, Any]) -> dict[str, float]:
        if self.costs is None:
            return {}
        return {m.column: float(m.predict(self.costs, record)) for m in models.values()}

    def _learn(self, trial: optuna.Trial, record: PruningConfig, row: Mapping[str, Any],
               predicted: Mapping[str, float]) -> None:
        """Record each prediction's error and refit the study's models with this trial."""
        if self.costs is None:
            return
        for column, value in predicted.items():
            measured = row.get(column)
            if measured is not None and float(measured) > 0:
                trial.set_user_attr(f"model_error_{column}", value / float(measured) - 1.0)
        extra = [(record, row)]
        dense = self._dense_point()
        if dense is not None:
            extra.append((DENSE, dense))
        refit_models(trial.study, self.costs, self.spec.budgets, extra)

    def constraints(self, row: Mapping[str, Any]) -> dict[str, float]:
        """The search's budget violations of a measured row (with the spec's latency margin)."""
        return constraint_values(row, self.spec.budgets, latency_margin=self.spec.latency_margin)

    def values(self, row: Mapping[str, Any]) -> tuple[float, ...]:
        """The objective values of a measured row, in the spec's order."""
        out = []
        for name in self.spec.objectives:
            value = row.get(SEARCH_OBJECTIVES[name][0])
            if value is None:
                raise PrunebenchError(f"objective {name!r} was not measured on profile "
                                      f"{self.profile.name!r}; choose other --objectives")
            out.append(float(value))
        return tuple(out)

    def measure(self, record: PruningConfig, model: nn.Module, *, split: str = "val",
                profile: Any = None, speedup_vs_dense: bool = False,
                settle: Settle | None = None) -> Measurement:
        """``prunebench.harness.evaluate`` of an already built network (``record`` names it), in the
        study's latency frame once :meth:`dense_reference` has set the anchor; ``settle`` (a
        :class:`~prunebench.harness.measure.latency.Settle`) may end its timing early."""
        from prunebench.harness.evaluate import evaluate

        return evaluate(self.prepared, record, profile or self.profile, split=split,
                        force=self.spec.force, speedup_vs_dense=speedup_vs_dense,
                        pruned_model=model, timing_lock=self.timing_lock, progress=False,
                        latency_anchor_ms=self.latency_anchor_ms, settle=settle)

    def dense_reference(self, stored_anchor: float | None) -> tuple[Measurement, float | None]:
        """Measure the dense network; returns it and the anchor a new study must store.

        In the anchored frame, ``stored_anchor`` is the study's ``ANCHOR_ATTR`` (``None`` for a
        new study). Without one, dense is timed with the strict re-measurement settings and its
        p50 becomes the anchor (returned, for the caller to store in the study); every later
        measurement of any process is expressed in it. An objective given an anchor already (a
        benchmark sharing one frame across studies) hands that one to a new study.
        """
        base = self.prepared.base_model
        anchor = None
        if self.spec.latency_frame != "anchored":
            m = self.measure(DENSE, base, split="val")
        elif stored_anchor is not None:
            self.latency_anchor_ms = float(stored_anchor)
            m = self.measure(DENSE, base, split="val")
        elif self.latency_anchor_ms is not None:
            m, anchor = self.measure(DENSE, base, split="val"), self.latency_anchor_ms
        else:
            m = self.measure(DENSE, base, split="val", profile=strict_profile(self.profile))
            self.latency_anchor_ms = anchor = m.latency_p50_ms
        self.dense_row = measurement_row(m)
        return m, anchor

    def build(self, chosen: TrialConfig, *, trial: optuna.Trial | None = None) -> nn.Module:
        """The network a trial evaluates, built from its record by the pruning pipeline
        (static cut, fine-tune, then dynamic gating: ``harness.pruning.pipeline``).

        With ``trial``, validation accuracy after each fine-tune epoch is stored as user attr
        ``val_accuracy_epoch_<k>`` and, in single-objective studies, reported to the pruner at
        step ``k + 1`` (the epochs done: the point's fidelity). A trial the pruner stops raises
        ``optuna.TrialPruned`` with ``fidelity_epochs`` and ``last_val_accuracy`` stored; Optuna
        records it PRUNED with that last accuracy as its value. A trial that runs to the end
        stores ``fidelity_epochs`` = its fine-tune epochs (full fidelity).
        """
        from prunebench.harness.evaluate import build_pruned

        callback = self._epoch_reporter(trial) if trial is not None else None
        net = build_pruned(self.prepared, chosen.record, profile=self.profile, progress=False,
                           epoch_callback=callback)
        if trial is not None:
            trial.set_user_attr(FIDELITY_ATTR, chosen.finetune_epochs)
        return net

    def _epoch_reporter(self, trial: optuna.Trial) -> Any:
        from prunebench.harness.measure.accuracy import accuracy

        splits = self.prepared.splits
        single = len(trial.study.directions) == 1

        def on_epoch(epoch: int, net: nn.Module) -> None:
            acc = accuracy(net, splits.val).top1
            trial.set_user_attr(f"val_accuracy_epoch_{epoch}", acc)
            if single:  # Optuna's report/should_prune are single-objective only
                trial.report(acc, epoch + 1)
                if trial.should_prune():
                    trial.set_user_attr(FIDELITY_ATTR, epoch + 1)
                    trial.set_user_attr("last_val_accuracy", acc)
                    raise optuna.TrialPruned(f"val accuracy {acc:.4f} after {epoch + 1} "
                                             "fine-tune epoch(s)")

        return on_epoch
