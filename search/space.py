"""Search spaces: an Optuna trial -> a pruning configuration.

Three spaces (``SPACES``):

- ``static``: one pruning ratio per coupled layer group; the parameter is the group's name (its
  first member's module name, e.g. ``layer1.0.conv1``), so the trial's parameters read as a
  per-layer table and map one-to-one to ``PruningConfig.ratios``.
- ``dynamic``: one keep-ratio (or threshold, as the method reads it) per layer the dynamic
  method gates under ``dynamic_options`` (``harness.pruning.pipeline.gated_layers``: every gated
  site, or ``instance_sparsity``'s coefficient-of-variation selection unless ``select=all``),
  parameter named after the gated module, mapping to ``PruningConfig.keep``. With AntiDote's
  ``inputs=1`` each residual block's input site is a parameter too, named after the block
  (``layer1.0``). ``searched_options`` make method options parameters ``option/<key>`` (the
  keep rule, ``columns``, ``p``...: :func:`searched_option`).
- ``hybrid``: a static cut, then dynamic gating of what remains; parameters ``ratio/<module>``,
  ``keep/<module>`` and ``option/<key>``.

Optional searched parameters: ``criterion`` (the static importance, when several static methods
are given), ``round_to`` (a list of channel multiples) and ``finetune_epochs`` (0..N when
``search_finetune``). :meth:`SearchSpace.distributions` lists every parameter with its Optuna
distribution (the budget projection samples them jointly). :meth:`SearchSpace.config`
turns stored parameters (``FrozenTrial.params``) back into configs, so a trial can be rebuilt
from the storage alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import optuna
import torch
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from torch import nn

from prunebench.harness.errors import PrunebenchError
from prunebench.harness.pruning import METHODS, PruneContext, PruningConfig, pipeline

SPACES = ("static", "dynamic", "hybrid")
CRITERION = "criterion"
FINETUNE = "finetune_epochs"
ROUND_TO = "round_to"


@dataclass(frozen=True)
class SpaceSpec:
    """What to search: serialisable (stored in the study's user attrs), validated on creation.

    Ratios are drawn from ``[0, max_ratio]`` in steps of ``ratio_step``; keep-ratios from
    ``[keep_min, 1]`` in steps of ``keep_step``. ``finetune_epochs`` is fixed unless
    ``search_finetune`` makes it a parameter in ``0..finetune_epochs``. ``dynamic_options`` are
    the dynamic method's options (``--option``), fixed for the study.
    """

    kind: str = "static"
    static_methods: tuple[str, ...] = ("l1",)
    dynamic_method: str | None = None
    exec_mode: str | None = None
    max_ratio: float = 0.8
    ratio_step: float = 0.05
    keep_min: float = 0.2
    keep_step: float = 0.05
    finetune_epochs: int = 0
    search_finetune: bool = False
    round_to: int | None = None
    dynamic_options: Mapping[str, Any] = field(default_factory=dict)
    # channel multiples searched as the categorical parameter ``round_to`` (static and hybrid
    # spaces; replaces ``round_to``): in deployment engines alignment decides the speed
    round_to_choices: tuple[int, ...] = ()
    # dynamic-method options searched as parameters ``option/<key>`` (``--search-option``):
    # key -> {"choices": [...]} or {"low": x, "high": y, "step": z} (see searched_option)
    searched_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "static_methods", tuple(self.static_methods))
        object.__setattr__(self, "round_to_choices", tuple(self.round_to_choices))
        object.__setattr__(self, "dynamic_options", dict(self.dynamic_options))
        object.__setattr__(self, "searched_options",
                           {k: dict(v) for k, v in self.searched_options.items()})
        self.validate()

    def validate(self) -> None:
        """Raise a one-line :class:`PrunebenchError` naming a bad value and the choices."""
        if self.kind not in SPACES:
            raise PrunebenchError(f"unknown search space {self.kind!r}; choose one of "
                                  f"{', '.join(SPACES)}")
        if self.kind in ("static", "hybrid"):
            if not self.static_methods:
                raise PrunebenchError("the static space needs a static method; give e.g. "
                                      "--method l1")
            for name in self.static_methods:
                _check_kind(name, "static")
        if self.kind in ("dynamic", "hybrid"):
            if not self.dynamic_method:
                raise PrunebenchError(f"the {self.kind} space needs a dynamic method; give one "
                                      f"of {', '.join(_names('dynamic')) or '(none registered)'}"
                                      " with --dynamic-method")
            _check_kind(self.dynamic_method, "dynamic")
            if self.exec_mode is not None:  # now, not in the first trial after dense is timed
                from prunebench.harness.pruning import check_exec_mode, get_method

                check_exec_mode(self.exec_mode, self.dynamic_method,
                                get_method(self.dynamic_method).exec_modes)
        if self.dynamic_options:
            if self.kind == "static" or not self.dynamic_method:
                raise PrunebenchError("method options apply to the dynamic method; use --space "
                                      "dynamic or hybrid, or drop --option")
            from prunebench.harness.pruning import get_method

            get_method(self.dynamic_method).options.parse(self.dynamic_method,
                                                          self.dynamic_options)
        if self.searched_options:
            if self.kind == "static" or not self.dynamic_method:
                raise PrunebenchError("searched method options apply to the dynamic method; use "
                                      "--space dynamic or hybrid, or drop --search-option")
            for key, dim in self.searched_options.items():
                _check_searched(str(self.dynamic_method), key, dim, self.dynamic_options)
        if not 0.0 < self.max_ratio < 1.0:
            raise PrunebenchError(f"max ratio {self.max_ratio!r} is outside (0, 1); use e.g. 0.8")
        if not 0.0 < self.ratio_step <= self.max_ratio:
            raise PrunebenchError(f"ratio step {self.ratio_step!r} must be > 0 and at most the "
                                  f"max ratio {self.max_ratio!r}; use e.g. 0.05")
        if not 0.0 < self.keep_step <= 1.0:
            raise PrunebenchError(f"keep step {self.keep_step!r} is outside (0, 1]; use e.g. "
                                  "0.05")
        if not 0.0 < self.keep_min <= 1.0:
            raise PrunebenchError(f"minimum keep {self.keep_min!r} is outside (0, 1]; use e.g. "
                                  "0.2")
        if self.round_to_choices:
            if self.kind == "dynamic":
                raise PrunebenchError("searched --round-to choices apply to the static cut; use "
                                      "--space static or hybrid, or give one --round-to")
            if self.round_to is not None:
                raise PrunebenchError(f"give either one --round-to ({self.round_to}) or a list "
                                      f"of choices ({list(self.round_to_choices)}), not both")
            if len(set(self.round_to_choices)) != len(self.round_to_choices):
                raise PrunebenchError(f"--round-to choices {list(self.round_to_choices)} repeat "
                                      "a value; give each once, e.g. 1,4,8,16")
        for value in (self.round_to, *self.round_to_choices):
            if value is not None and self.kind in ("static", "hybrid"):
                from prunebench.harness.pruning import get_method

                for name in self.static_methods:  # its schema names the range (e.g. >= 1)
                    get_method(name).options.parse(name, {"round_to": value})
        if self.finetune_epochs < 0:
            raise PrunebenchError(f"fine-tune epochs {self.finetune_epochs!r} is negative; use "
                                  "0 (off) or more")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        out = asdict(self)
        out["static_methods"] = list(self.static_methods)
        out["dynamic_options"] = dict(self.dynamic_options)
        out["round_to_choices"] = list(self.round_to_choices)
        out["searched_options"] = {k: dict(v) for k, v in self.searched_options.items()}
        for key in ("round_to_choices", "searched_options"):
            if not out[key]:  # studies made before it existed read the same
                del out[key]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SpaceSpec:
        """Inverse of :meth:`to_dict`."""
        return cls(**{**data, "static_methods": tuple(data.get("static_methods", ()))})


def _names(kind: str) -> list[str]:
    return [n for n in METHODS.list() if METHODS.metadata(n)["kind"] == kind]


OPTION_PREFIX = "option/"
# options that choose the gated layers themselves: fixed per study, never searched
_LAYOUT_OPTIONS = {"instance_sparsity": ("select", "fraction")}
FLOAT_OPTION_STEP = 0.05  # grid of a searched float option unless its range names a step


def searched_option(method: str, text: str) -> tuple[str, dict[str, Any]]:
    """``--search-option`` text -> ``(key, dimension)`` of a :class:`SpaceSpec`.

    ``KEY`` searches the option over its schema's range (choices, a bool, or a number range
    with both bounds); ``KEY=a,b,c`` over those values; ``KEY=LOW:HIGH`` or
    ``KEY=LOW:HIGH:STEP`` over a number range. Errors are one line naming the value and a fix.
    """
    from prunebench.harness.pruning import get_method

    schema = get_method(method).options
    key, sep, raw = (part.strip() for part in text.partition("="))
    if not key or (sep and not raw):
        raise PrunebenchError(f"--search-option {text!r} is not KEY, KEY=a,b or KEY=LOW:HIGH; "
                              "use e.g. --search-option rule or --search-option columns=0.5:1")
    if key not in schema:
        schema.parse(method, {key: None})  # raises: the unknown key, its close match, the keys
    option = schema[key]
    if not raw:
        return key, _schema_range(method, option)
    if ":" in raw:
        parts = raw.split(":")
        try:
            nums = [float(v) for v in parts]
        except ValueError:
            nums = []
        if option.type not in (int, float) or len(nums) not in (2, 3):
            raise PrunebenchError(f"--search-option {text!r}: a LOW:HIGH[:STEP] range needs a "
                                  f"number option; {key} is {option.kind}: give its values, e.g. "
                                  f"--search-option {key}")
        low, high = nums[0], nums[1]
        step = nums[2] if len(nums) == 3 else (1 if option.type is int else FLOAT_OPTION_STEP)
        if option.type is int:
            low, high, step = int(low), int(high), int(step)
        return key, {"low": low, "high": high, "step": step}
    values = [schema.parse_text(method, f"{key}={v.strip()}")[1] for v in raw.split(",")]
    return key, {"choices": values}


def _schema_range(method: str, option: Any) -> dict[str, Any]:
    if option.type is bool:
        return {"choices": [False, True]}
    if option.type is str:
        if not option.choices:
            raise PrunebenchError(f"option {option.name} of method {method!r} is free text; "
                                  f"give the values to search, e.g. --search-option "
                                  f"{option.name}=a,b")
        return {"choices": list(option.choices)}
    if option.min is None or option.max is None:
        raise PrunebenchError(f"option {option.name} of method {method!r} is {option.kind}, "
                              f"with no range to search; give one, e.g. --search-option "
                              f"{option.name}=1:4")
    step = 1 if option.type is int else FLOAT_OPTION_STEP
    low = option.min + step if option.min_exclusive else option.min
    return {"low": option.type(low), "high": option.type(option.max), "step": step}


def _check_searched(method: str, key: str, dim: Mapping[str, Any],
                    fixed: Mapping[str, Any]) -> None:
    """A searched option's dimension is a valid range or set of values of the method's schema."""
    from prunebench.harness.pruning import get_method

    schema = get_method(method).options
    if key == "inputs":
        raise PrunebenchError("option inputs is not searched: give --option inputs=1, which "
                              "makes each block's input keep a searched parameter (keep 1 leaves "
                              "a block's input ungated)")
    if key in _LAYOUT_OPTIONS.get(method, ()):
        raise PrunebenchError(f"option {key} of method {method!r} decides which layers are "
                              f"gated (the space's keep parameters), so it is fixed per study: "
                              f"give --option {key}=VALUE instead of --search-option {key}")
    if key in fixed:
        raise PrunebenchError(f"option {key} is both fixed (--option {key}={fixed[key]}) and "
                              f"searched (--search-option {key}); give one")
    if "choices" in dim:
        choices = list(dim["choices"])
        if len(choices) < 2 or len(set(map(repr, choices))) != len(choices):
            raise PrunebenchError(f"searched option {key} needs two or more different values, "
                                  f"not {choices}; e.g. --search-option {key}")
        for value in choices:
            schema.parse(method, {key: value})
        return
    low, high, step = dim.get("low"), dim.get("high"), dim.get("step")
    schema.parse(method, {key: low})
    schema.parse(method, {key: high})
    if not (isinstance(step, int | float) and step > 0 and low < high):
        raise PrunebenchError(f"searched option {key} range {low}:{high}:{step} needs LOW < HIGH "
                              f"and a step > 0; e.g. --search-option {key}={low}:{high}")


def _check_kind(name: str, kind: str) -> None:
    if name not in METHODS or METHODS.metadata(name)["kind"] != kind:
        raise PrunebenchError(f"unknown {kind} pruning method {name!r}; choose one of "
                              f"{', '.join(_names(kind)) or '(none registered)'}")


@dataclass(frozen=True)
class TrialConfig:
    """What one trial evaluates: one :class:`PruningConfig` that describes the whole network.

    ``record`` is built by :func:`harness.pruning.pipeline.build` (static cut, fine-tune
    ``record.finetune_epochs``, dynamic gating; for ``hybrid`` the dynamic method with
    ``static_method`` and the static ratios) and is the config the Measurement records, so a
    trial replays from it alone. ``static`` / ``dynamic`` / ``finetune_epochs`` are its stages.
    """

    record: PruningConfig

    @property
    def static(self) -> PruningConfig | None:
        """The static stage (``None`` for the dynamic space)."""
        return pipeline.stages(self.record).static

    @property
    def dynamic(self) -> PruningConfig | None:
        """The dynamic stage (``None`` for the static space)."""
        return pipeline.stages(self.record).dynamic

    @property
    def finetune_epochs(self) -> int:
        """Fine-tune epochs between the static stage and the gating."""
        return self.record.finetune_epochs


@dataclass(frozen=True)
class SearchSpace:
    """A :class:`SpaceSpec` bound to one network's prunable groups and gated layers."""

    spec: SpaceSpec
    groups: tuple[str, ...] = ()
    gated: tuple[str, ...] = ()

    @classmethod
    def build(cls, spec: SpaceSpec, model: nn.Module, example_input: torch.Tensor,
              ctx: PruneContext | None = None) -> SearchSpace:
        """Find the coupled groups (static, hybrid) and the layers the dynamic method gates
        (dynamic, hybrid), asking the pipeline with the spec's ``dynamic_options``; ``ctx`` is
        what the network is pruned with (its train split calibrates a data-dependent layer
        selection; default: the example input only). In the hybrid space the selection is made
        on ``model``, before the static cut."""
        groups: tuple[str, ...] = ()
        gated: tuple[str, ...] = ()
        if spec.kind in ("static", "hybrid"):
            groups = tuple(pipeline.prunable_groups(model, example_input))
            if not groups:
                raise PrunebenchError("the network has no prunable layer groups; pick another "
                                      "--model or --space dynamic")
        if spec.kind in ("dynamic", "hybrid"):
            gated = tuple(pipeline.gated_layers(
                model, PruningConfig(method=str(spec.dynamic_method),
                                     options=dict(spec.dynamic_options)),
                ctx if ctx is not None else PruneContext(example_input)))
            if not gated:
                raise PrunebenchError(f"the network has no layer that method "
                                      f"{spec.dynamic_method!r} can gate; pick another --model "
                                      "or --space static")
            gated = _with_input_sites(model, spec, gated)
        return cls(spec, groups, gated)

    # ------------------------------------------------------------------ parameter names
    def ratio_param(self, group: str) -> str:
        """Optuna parameter name of a group's pruning ratio."""
        return f"ratio/{group}" if self.spec.kind == "hybrid" else group

    def keep_param(self, layer: str) -> str:
        """Optuna parameter name of a gated layer's keep-ratio."""
        return f"keep/{layer}" if self.spec.kind == "hybrid" else layer

    # ------------------------------------------------------------------ trial -> config
    def option_param(self, key: str) -> str:
        """Optuna parameter name of a searched method option."""
        return OPTION_PREFIX + key

    def distributions(self) -> dict[str, BaseDistribution]:
        """Every parameter this space draws, in the order :meth:`suggest` draws them."""
        s = self.spec
        out: dict[str, BaseDistribution] = {}
        if len(s.static_methods) > 1 and s.kind != "dynamic":
            out[CRITERION] = CategoricalDistribution(list(s.static_methods))
        if s.search_finetune and s.finetune_epochs > 0:
            out[FINETUNE] = IntDistribution(0, s.finetune_epochs)
        if s.round_to_choices and self.groups:
            out[ROUND_TO] = CategoricalDistribution(list(s.round_to_choices))
        for key, dim in s.searched_options.items() if self.gated else ():
            if "choices" in dim:
                out[self.option_param(key)] = CategoricalDistribution(list(dim["choices"]))
            elif all(isinstance(dim[k], int) for k in ("low", "high", "step")):
                out[self.option_param(key)] = IntDistribution(dim["low"], dim["high"],
                                                              step=dim["step"])
            else:
                out[self.option_param(key)] = FloatDistribution(
                    float(dim["low"]), float(dim["high"]), step=float(dim["step"]))
        for g in self.groups:
            out[self.ratio_param(g)] = FloatDistribution(
                0.0, _top(s.max_ratio, s.ratio_step), step=s.ratio_step)
        for layer in self.gated:
            out[self.keep_param(layer)] = FloatDistribution(s.keep_min, 1.0, step=s.keep_step)
        return out

    # ------------------------------------------------------------------ trial -> config
    def suggest(self, trial: optuna.Trial) -> TrialConfig:
        """Draw every parameter of this space from ``trial`` and return the config."""
        for name, dist in self.distributions().items():
            if isinstance(dist, CategoricalDistribution):
                trial.suggest_categorical(name, list(dist.choices))
            elif isinstance(dist, IntDistribution):
                trial.suggest_int(name, dist.low, dist.high, step=dist.step)
            else:
                trial.suggest_float(name, dist.low, dist.high, step=dist.step)
        return self.config(trial.params)

    def config(self, params: Mapping[str, Any]) -> TrialConfig:
        """The configuration a trial with these ``params`` evaluates (also from storage)."""
        s = self.spec
        missing = [p for p in self.required_params() if p not in params]
        if missing:
            raise PrunebenchError(f"trial parameters lack {missing[:3]}; the study was made for "
                                  "another network or space (use a new --study name)")
        epochs = int(params.get(FINETUNE, s.finetune_epochs))
        ratios: dict[str, float] = {}
        keep: dict[str, float] = {}
        static_method = None
        static_options: dict[str, Any] = {} if s.round_to is None else {"round_to": s.round_to}
        if s.round_to_choices and self.groups:
            static_options = {"round_to": int(params.get(ROUND_TO, s.round_to_choices[0]))}
        if self.groups:
            static_method = str(params.get(CRITERION, s.static_methods[0]))
            ratios = {g: round(float(params[self.ratio_param(g)]), 6) for g in self.groups}
        options = dict(s.dynamic_options)
        if self.gated:
            keep = {g: round(float(params[self.keep_param(g)]), 6) for g in self.gated}
            options.update({k: params[self.option_param(k)] for k in s.searched_options})
        if not self.gated:  # static: the static method itself
            return TrialConfig(PruningConfig(method=str(static_method), ratios=ratios,
                                             options=static_options, finetune_epochs=epochs))
        hybrid = static_method is not None
        return TrialConfig(PruningConfig(
            method=str(s.dynamic_method), exec_mode=s.exec_mode, keep=keep, ratios=ratios,
            options=options, finetune_epochs=epochs, static_method=static_method,
            static_options=static_options if hybrid else {}))

    def param_names(self) -> list[str]:
        """Every per-layer parameter name of this space (without criterion/fine-tune)."""
        return [self.ratio_param(g) for g in self.groups] + [self.keep_param(g)
                                                              for g in self.gated]

    def required_params(self) -> list[str]:
        """The per-layer parameters and the searched options (what :meth:`config` needs)."""
        names = self.param_names()
        return names + [self.option_param(k) for k in self.spec.searched_options] \
            if self.gated else names

    def describe(self) -> dict[str, Any]:
        """A JSON summary for config.json: the spec and the per-layer parameters."""
        return {**self.spec.to_dict(), "groups": list(self.groups), "gated": list(self.gated),
                "n_params": len(self.param_names())}


def _with_input_sites(model: nn.Module, spec: SpaceSpec, gated: tuple[str, ...]
                      ) -> tuple[str, ...]:
    """``gated`` and, when the method's option ``inputs`` is 1 (AntiDote), each residual block's
    input site (keyed by the block's name), in module order."""
    from prunebench.harness.pruning import get_method
    from prunebench.harness.pruning.pipeline import gate_sites as find_sites

    schema = get_method(str(spec.dynamic_method)).options
    if "inputs" not in schema or not spec.dynamic_options.get("inputs", schema["inputs"].default):
        return gated
    sites = find_sites(model, inputs=True)
    chosen = set(gated) | {s.name for s in sites if s.is_input}
    return tuple(s.name for s in sites if s.name in chosen)


def _top(max_ratio: float, step: float) -> float:
    """The largest multiple of ``step`` not above ``max_ratio`` (Optuna needs whole steps)."""
    n = int(max_ratio / step + 1e-9)
    return round(n * step, 10)


def uniform_params(space: SearchSpace, ratio: float, keep: float = 1.0,
                   extra: Sequence[tuple[str, Any]] = ()) -> dict[str, Any]:
    """Parameters that set every group to ``ratio`` and every gated layer to ``keep``.

    Used to enqueue a uniform baseline sweep as ordinary trials (``study.enqueue_trial``).
    """
    out: dict[str, Any] = {space.ratio_param(g): ratio for g in space.groups}
    out.update({space.keep_param(g): keep for g in space.gated})
    out.update(dict(extra))
    return out


def warm_start_params(space: SearchSpace, n: int) -> list[dict[str, Any]]:
    """``n`` uniform configurations spread evenly along the space's uniform line (on its step
    grids), from ``1/n`` of the way up to its most pruned end (``max_ratio`` / ``keep_min``).

    Enqueued as a new study's first trials, they give the sampler structured points (every layer
    pruned alike, as a uniform sweep would), the fastest among them, before it explores
    per-layer differences: the front then spans the whole latency range from the start.
    """
    return [uniform_line_params(space, i / n) for i in range(1, n + 1)]


def uniform_line_params(space: SearchSpace, t: float) -> dict[str, Any]:
    """The uniform configuration a fraction ``t`` in [0, 1] of the way from dense to the most
    pruned end (every ratio ``t x max_ratio``, every keep ``1 - t x (1 - keep_min)``), on the
    step grids, the searched options at :func:`option_defaults` (one line, not a line per
    keep rule)."""
    s = space.spec
    ratio = round(round(t * s.max_ratio / s.ratio_step) * s.ratio_step, 6)
    keep = round(1.0 - round(t * (1.0 - s.keep_min) / s.keep_step) * s.keep_step, 6)
    return uniform_params(space, min(ratio, _top(s.max_ratio, s.ratio_step)),
                          max(keep, s.keep_min), option_defaults(space).items())


def option_defaults(space: SearchSpace) -> dict[str, Any]:
    """Each searched option's parameter at the method's default when the search can take it,
    else at its first value (choices) or low end (a range); empty without searched options."""
    from prunebench.harness.pruning import get_method

    if not space.gated or not space.spec.searched_options:
        return {}
    schema = get_method(str(space.spec.dynamic_method)).options
    out = {}
    for key, dim in space.spec.searched_options.items():
        default = schema[key].default
        if "choices" in dim:
            value = default if default in list(dim["choices"]) else dim["choices"][0]
        else:
            inside = default is not None and dim["low"] <= default <= dim["high"]
            value = default if inside else dim["low"]
        out[space.option_param(key)] = value
    return out
