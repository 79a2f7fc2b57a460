"""What a search is asked to do: its settings, their defaults, and the spec they resolve to.

``prunebench search``, ``prunebench study create`` and :func:`~prunebench.search.runs.run_search`
take the same settings, named as the command's options (``--max-ratio`` is ``max_ratio``), with
the same defaults (:data:`SEARCH_DEFAULTS`). :func:`build_spec` checks them and resolves them to
the :class:`~prunebench.search.objective.SearchSpec` stored with the study;
:func:`default_run_dir` names a run folder after that spec.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prunebench.harness.errors import PrunebenchError

if TYPE_CHECKING:  # the objective imports torch: only when a spec is built
    from prunebench.search.objective import SearchSpec

DEFAULT_WARM_START = 8  # uniform configs a new study starts with (search.warm: aim, then fill)
DEFAULT_SENSITIVITY = 4  # sensitivity-shaped proposals after the warm start (search.sensitivity)
MAX_SENSITIVITY = 6  # len(search.sensitivity.SCHEDULE), kept here so settings import no torch
DEFAULT_LATENCY_MARGIN = 0.1  # see --latency-margin
DEFAULT_TRIALS = 40  # trials a run gets when neither a trial count nor a timeout is given
DEFAULT_KEEP_MIN = 0.2  # --keep-min of a network trained for no keep range (see keep_floor)
# budget key of SearchSpec.budgets -> the setting that gives it
BUDGET_SETTINGS = {"latency_ms": "latency_budget_ms", "energy_mj": "energy_budget_mj",
                   "macs": "macs_budget", "params": "params_budget"}
# Every setting of a search run and its default (``prunebench search`` uses these too).
SEARCH_DEFAULTS: dict[str, Any] = {
    "model": None, "dataset": None, "data_dir": None, "checkpoint": None,
    "space": "static", "method": None, "exec_mode": None, "profile": "cpu-1t",
    "latency_budget_ms": None, "energy_budget_mj": None, "macs_budget": None,
    "params_budget": None, "latency_frame": "anchored",
    "latency_margin": DEFAULT_LATENCY_MARGIN, "latency_anchor_ms": None,
    "trials": None, "timeout": None, "sampler": "tpe", "seed": 0,
    "objectives": "accuracy,latency_p50", "finetune_epochs": 0, "search_finetune": False,
    "max_ratio": 0.8, "ratio_step": 0.05, "keep_min": None, "round_to": None, "option": None,
    "search_option": None, "budget_projection": True, "pruner": "auto",
    "trial_timing": "auto",
    "storage": None, "study": None, "resume": False, "warm_start": DEFAULT_WARM_START,
    "sensitivity": DEFAULT_SENSITIVITY,
    "remeasure_max": 20, "remeasure_factor": 4.0, "out": None, "force": False,
    # what the base model and fine-tunes are trained with and the data's size (in the spec)
    "recipe": None, "recipe_file": None, "image_size": None,
    # where this process trains (recorded in config.json, not in the spec: a worker has its own)
    "train_device": "auto", "amp": None, "channels_last": False, "workers": 0,
    "deterministic": False,
}


def search_settings(given: Mapping[str, Any]) -> dict[str, Any]:
    """:data:`SEARCH_DEFAULTS` updated with ``given``; an unknown setting is named."""
    unknown = sorted(set(given) - set(SEARCH_DEFAULTS))
    if unknown:
        raise TypeError(f"unknown search setting {unknown[0]!r}; the settings are "
                        f"{', '.join(SEARCH_DEFAULTS)}")
    return {**SEARCH_DEFAULTS, **given}


# setting -> (lowest value, whether the lowest is excluded, example); None is always allowed
_NUMBER_RANGES: dict[str, tuple[float, bool, str]] = {
    "trials": (0, False, "40"), "timeout": (0, True, "600"), "warm_start": (0, False, "8"),
    "sensitivity": (0, False, "4"),
    "remeasure_max": (0, False, "20"), "remeasure_factor": (1, False, "4"), "seed": (0, False, "0"),
    "finetune_epochs": (0, False, "2"), "image_size": (8, False, "32"), "workers": (0, False, "4"),
    "latency_budget_ms": (0, True, "4"), "energy_budget_mj": (0, True, "2"),
    "macs_budget": (0, True, "2e7"), "params_budget": (0, True, "1e5"),
}
_INTEGER_SETTINGS = ("trials", "warm_start", "sensitivity", "remeasure_max", "seed",
                     "finetune_epochs", "image_size", "workers")


def flag(name: str) -> str:
    """The command-line option of a setting: ``max_ratio`` -> ``--max-ratio``."""
    return "--" + {"exec_mode": "exec"}.get(name, name).replace("_", "-")


def round_to_setting(value: Any, profile: str | None) -> dict[str, Any]:
    """``round_to`` (one multiple) or ``round_to_choices`` (searched) of a :class:`SpaceSpec`
    from the ``round_to`` setting: ``None``, an int, ``"engine"`` (the profile's engine's
    preferred channel multiple), or several (``"1,4,8,16"`` or a list: a searched parameter)."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return {"round_to": value}
    if value == "engine":
        from prunebench.harness.engines import get_engine
        from prunebench.harness.profiles import load_profile

        engine = load_profile(profile or "cpu-1t").engine
        return {"round_to": get_engine(engine).preferred_alignment}
    parts = value.split(",") if isinstance(value, str) else list(value)
    try:
        choices = tuple(int(str(v).strip()) for v in parts)
    except ValueError:
        raise PrunebenchError(f"--round-to {value!r} is not understood; give one multiple "
                              "(e.g. 8), a list to search (e.g. 1,4,8,16) or 'engine'") from None
    return {"round_to": choices[0]} if len(choices) == 1 else {"round_to_choices": choices}


def check_numbers(settings: Mapping[str, Any]) -> None:
    """Every numeric setting in its range, checked before any work; a bad one raises a
    one-line :class:`PrunebenchError` naming the option, its value and a good one."""
    for name, (low, strict, example) in _NUMBER_RANGES.items():
        value = settings.get(name)
        if value is None:
            continue
        integer = name in _INTEGER_SETTINGS
        kind = "a whole number" if integer else "a number"
        ok = (isinstance(value, int) if integer else isinstance(value, int | float)) \
            and not isinstance(value, bool) and math.isfinite(value) \
            and (value > low if strict else value >= low)
        if not ok:
            bound = f"> {low:g}" if strict else f">= {low:g}"
            raise PrunebenchError(f"{flag(name)} {value!r} must be {kind} {bound}; use e.g. "
                                  f"{flag(name)} {example}")
    if _number(settings.get("sensitivity")) and settings["sensitivity"] > MAX_SENSITIVITY:
        raise PrunebenchError(f"--sensitivity {settings['sensitivity']!r} must be at most "
                              f"{MAX_SENSITIVITY} (the proposals there are); use e.g. "
                              "--sensitivity 4")
    _check_fraction(settings, "max_ratio", 0.0, 1.0, "(0, 1)", "0.8")
    if settings.get("keep_min") is not None:  # None: the network's trained floor (keep_floor)
        _check_fraction(settings, "keep_min", 0.0, 1.0, "(0, 1]", "0.2", high_ok=True)
    _check_fraction(settings, "latency_margin", 0.0, 1.0, "[0, 1)", "0.1", low_ok=True)
    step, top = settings.get("ratio_step"), settings.get("max_ratio")
    if not (_number(step) and 0 < step <= top):
        raise PrunebenchError(f"--ratio-step {step!r} must be > 0 and at most --max-ratio "
                              f"{top!r}; use e.g. --ratio-step 0.05")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) \
        and math.isfinite(value)


def _check_fraction(settings: Mapping[str, Any], name: str, low: float, high: float,
                    text: str, example: str, *, low_ok: bool = False,
                    high_ok: bool = False) -> None:
    value = settings.get(name)
    ok = _number(value) and (value >= low if low_ok else value > low) \
        and (value <= high if high_ok else value < high)
    if not ok:
        raise PrunebenchError(f"{flag(name)} {value!r} is outside {text}; use e.g. "
                              f"{flag(name)} {example}")


def method_names(method: str | Sequence[str] | None) -> list[str]:
    """``"l1,antidote"`` or ``["l1", "antidote"]`` -> ``["l1", "antidote"]``."""
    parts = method.split(",") if isinstance(method, str) else list(method or ())
    return [str(n).strip() for n in parts if str(n).strip()]


def resolve_methods(space: str, method: str | Sequence[str] | None
                    ) -> tuple[tuple[str, ...], str | None]:
    """(static methods, dynamic method) of ``method`` (defaults: l1 and antidote where the
    space has a static and a dynamic part)."""
    from prunebench.harness.pruning import METHODS

    names = method_names(method)
    static = tuple(n for n in names if n in METHODS and METHODS.metadata(n)["kind"] == "static")
    dynamic = [n for n in names if n in METHODS and METHODS.metadata(n)["kind"] == "dynamic"]
    unknown = [n for n in names if n not in static and n not in dynamic]
    if unknown:
        choices = [n for n in METHODS.list() if METHODS.metadata(n)["kind"] != "dense"]
        raise PrunebenchError(f"unknown pruning method {unknown[0]!r}; choose among "
                              f"{', '.join(choices)}")
    if len(dynamic) > 1:
        raise PrunebenchError(f"give one dynamic method, not {','.join(dynamic)}")
    if space != "dynamic" and not static:
        static = ("l1",)
    dyn = dynamic[0] if dynamic else ("antidote" if space != "static" else None)
    if space == "static" and dynamic:
        raise PrunebenchError(f"method {dynamic[0]!r} is dynamic; use --space dynamic or hybrid")
    if space == "dynamic" and static:
        raise PrunebenchError(f"method {static[0]!r} is static; use --space static or hybrid")
    return static, dyn


def build_spec(settings: Mapping[str, Any]) -> SearchSpec:
    """The validated :class:`~prunebench.search.objective.SearchSpec` of search settings
    (:data:`SEARCH_DEFAULTS` fills what ``settings`` leaves out)."""
    from prunebench.search.objective import SearchSpec
    from prunebench.search.space import SPACES, SpaceSpec

    s = search_settings(settings)
    check_numbers(s)
    if s["space"] not in SPACES:
        raise PrunebenchError(f"unknown search space {s['space']!r}; choose one of "
                              f"{', '.join(SPACES)}")
    static, dyn = resolve_methods(s["space"], s["method"])
    if s["exec_mode"] and s["space"] == "static":
        raise PrunebenchError(f"--exec {s['exec_mode']} applies to dynamic gating; use --space "
                              "dynamic or hybrid, or drop --exec")
    keep_min = s["keep_min"]
    if keep_min is None:  # the network's trained floor; a static space has no keeps to search
        keep_min = DEFAULT_KEEP_MIN if s["space"] == "static" \
            else keep_floor(s["checkpoint"], SpaceSpec.keep_step)
    space = SpaceSpec(kind=s["space"], static_methods=static, dynamic_method=dyn,
                      exec_mode=s["exec_mode"], max_ratio=s["max_ratio"],
                      ratio_step=s["ratio_step"], keep_min=keep_min,
                      finetune_epochs=s["finetune_epochs"],
                      search_finetune=s["search_finetune"],
                      **round_to_setting(s["round_to"], s["profile"]),
                      dynamic_options=dynamic_options(s["space"], dyn, s["option"]),
                      searched_options=searched_options(s["space"], dyn, s["search_option"]))
    if not isinstance(s["budget_projection"], bool):
        raise PrunebenchError(f"--budget-projection {s['budget_projection']!r} must be on or off "
                              "(True or False); use e.g. --budget-projection off")
    budgets = {k: s[name] for k, name in BUDGET_SETTINGS.items() if s[name] is not None}
    objectives = s["objectives"]
    if isinstance(objectives, str):
        objectives = objectives.split(",")
    objectives = tuple(o.strip() for o in objectives if o.strip())
    return SearchSpec(model=s["model"], dataset=s["dataset"], space=space, profile=s["profile"],
                      data_dir=s["data_dir"], checkpoint=s["checkpoint"], objectives=objectives,
                      budgets=budgets, seed=s["seed"], force=s["force"],
                      latency_frame=s["latency_frame"], latency_margin=s["latency_margin"],
                      recipe=spec_recipe(s), image_size=s["image_size"],
                      budget_projection=s["budget_projection"], pruner=s["pruner"],
                      trial_timing=s["trial_timing"])


def keep_floor(checkpoint: str | Path | None, step: float) -> float:
    """``--keep-min``'s default: the smallest keep-ratio the network was trained to run at.

    A checkpoint fine-tuned with targeted dropout (``prunebench finetune --targeted-dropout
    gamma=G,...``) records ``G``: each gated map learned to do without up to the fraction ``G``
    of its units, so keeps below ``1 - G`` were never seen in training (bench_search run 19, 0.7x
    seed 0, on a ``G = 0.75`` network: per-layer trials with gates at 0.20 reached 60.4% at
    12.45M MACs where the uniform keep 0.27 reached 79.9% at 12.35M). That floor is ``1 - G``
    rounded up onto the keep grid of ``step``; a network without a recorded ``G`` of at least
    one grid step (the dense base, a plain ``state_dict``): :data:`DEFAULT_KEEP_MIN`.
    """
    if checkpoint is None:
        return DEFAULT_KEEP_MIN
    from prunebench.harness.checkpoints import checkpoint_meta

    trained = (checkpoint_meta(checkpoint) or {}).get("targeted_dropout") or {}
    gamma = trained.get("gamma")
    if not _number(gamma) or gamma < step:
        return DEFAULT_KEEP_MIN
    return round(1.0 - math.floor(min(gamma, 1.0 - step) / step + 1e-9) * step, 10)


def spec_recipe(settings: Mapping[str, Any]) -> dict[str, Any] | None:
    """The content of the recipe ``recipe`` (a shipped name) or ``recipe_file`` (a TOML path)
    names, checked; ``None`` when neither is given (the default recipe)."""
    from prunebench.harness.recipes import load_recipe

    if settings.get("recipe") and settings.get("recipe_file"):
        raise PrunebenchError(f"--recipe {settings['recipe']} and --recipe-file "
                              f"{settings['recipe_file']} both name a recipe; give one")
    source = settings.get("recipe_file") or settings.get("recipe")
    return None if source is None else load_recipe(source).to_dict()


def train_runtime(settings: Mapping[str, Any]) -> Any:
    """The :class:`~prunebench.harness.devices.TrainRuntime` of the runtime settings, checked
    against this machine before any work."""
    from prunebench.harness.devices import resolve_runtime

    return resolve_runtime(settings.get("train_device") or "auto", amp=settings.get("amp"),
                           channels_last=bool(settings.get("channels_last")),
                           workers=settings.get("workers") or 0,
                           deterministic=bool(settings.get("deterministic")))


def dynamic_options(space: str, method: str | None,
                    given: Mapping[str, Any] | Sequence[str] | None) -> dict[str, Any]:
    """The dynamic method's options of setting ``option``: a mapping (typed values) or
    ``--option KEY=VALUE`` texts, parsed by the method's schema (one line naming a bad one)."""
    if not given:
        return {}
    if space == "static" or method is None:
        raise PrunebenchError("--option sets options of the dynamic method; use --space dynamic "
                              "or hybrid, or drop --option")
    from prunebench.harness.pruning import get_method

    schema = get_method(method).options
    if isinstance(given, Mapping):
        return schema.parse(method, given)
    if isinstance(given, str):
        given = [given]
    return dict(schema.parse_text(method, str(text)) for text in given)


def searched_options(space: str, method: str | None,
                     given: Mapping[str, Any] | Sequence[str] | None) -> dict[str, Any]:
    """The dynamic method's searched options of setting ``search_option``: a mapping (key ->
    dimension, as :class:`~prunebench.search.space.SpaceSpec` stores them) or
    ``--search-option KEY[=VALUES]`` texts (:func:`~prunebench.search.space.searched_option`)."""
    if not given:
        return {}
    if space == "static" or method is None:
        raise PrunebenchError("--search-option searches options of the dynamic method; use "
                              "--space dynamic or hybrid, or drop --search-option")
    from prunebench.search.space import searched_option

    if isinstance(given, Mapping):
        return {str(k): dict(v) for k, v in given.items()}
    if isinstance(given, str):
        given = [given]
    out: dict[str, Any] = {}
    for text in given:
        key, dim = searched_option(method, str(text))
        if key in out:
            raise PrunebenchError(f"--search-option {key} is given twice; give each option once")
        out[key] = dim
    return out


def check_anchor(anchor: float | None, spec: SearchSpec) -> float | None:
    """A given dense anchor (``--latency-anchor-ms``), checked: a positive dense p50, in the
    anchored frame."""
    if anchor is not None and (spec.latency_frame != "anchored" or not _number(anchor)
                               or not anchor > 0):
        raise PrunebenchError(f"--latency-anchor-ms {anchor!r} needs a positive dense p50 and "
                              "the anchored latency frame; drop it or --latency-frame direct")
    return anchor


def default_run_dir(spec: SearchSpec) -> Path:
    """``results/search-<model>-<dataset>-<space>-<profile>-<hash of the spec>``."""
    digest = hashlib.sha256(json.dumps({**spec.to_dict(), "force": False},
                                       sort_keys=True).encode()).hexdigest()[:6]
    profile = Path(spec.profile).stem
    return Path("results") / f"search-{spec.model}-{spec.dataset}-{spec.space.kind}-{profile}-" \
                             f"{digest}"
