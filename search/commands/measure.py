"""``prunebench measure``: evaluate one (model, pruning, profile) and print a table or JSON."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prunebench.harness.errors import PrunebenchError
from prunebench.search.commands.arguments import whole

NAME = "measure"
HELP = "measure accuracy, latency, energy, MACs and memory of one configuration on a profile"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Workload, pruning and profile options."""
    p.add_argument("--model", help="registered model (see `prunebench models`); not with --from")
    p.add_argument("--from", dest="from_run", type=Path, metavar="RUN_DIR",
                   help="re-measure a recorded point of a run folder from the configuration it "
                        "recorded (with --trial N for a search, --point LABEL for a baseline); "
                        "the workload and profile come from the run (--profile overrides it)")
    p.add_argument("--trial", type=whole(0, 7), help="with --from: the search trial number")
    p.add_argument("--point", help="with --from: the baseline point label, e.g. 'l1 r=0.5'")
    p.add_argument("--dataset", help="data set for accuracy (omit to measure cost only)")
    p.add_argument("--data-dir", type=Path, help="folder holding the data set's files")
    p.add_argument("--input-shape", help="cost-only input size CxHxW, e.g. 3x224x224")
    p.add_argument("--num-classes", type=whole(1, 10), help="cost-only number of classes")
    p.add_argument("--profile",
                   help="hardware profile name or .toml path (default cpu-1t; with --from the "
                        "run's profile)")
    p.add_argument("--checkpoint", type=Path, help="dense checkpoint to start from")
    p.add_argument("--method", default="dense", help="pruning method (see `prunebench methods`)")
    p.add_argument("--ratio", type=float, help="static pruning ratio for every layer, in [0, 1)")
    p.add_argument("--keep", type=float, help="dynamic keep-ratio/threshold for every gated layer")
    p.add_argument("--exec", dest="exec_mode", choices=("masked", "gathered", "fast"),
                   help="dynamic execution mode")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="a method option, repeatable: e.g. --option inputs=1 --option "
                        "columns=0.5 for antidote, --option round_to=8 --option kd=true for l1 "
                        "(options per method: `prunebench methods --options`)")
    p.add_argument("--speedup", action="store_true",
                   help="also measure time(dense)/time(pruned) in interleaved rounds")
    p.add_argument("--force", action="store_true",
                   help="measure even if the profile's fingerprint does not match (recorded)")
    p.add_argument("--split", choices=("val", "test"),
                   help="split for accuracy (default val; with --from the recorded split)")
    p.add_argument("--seed", type=whole(0, 0), default=0, help="split / input seed (default 0)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def parse_shape(text: str) -> tuple[int, int, int]:
    """``"3x224x224"`` -> ``(3, 224, 224)``; anything else is a user error."""
    parts = text.lower().replace(",", "x").split("x")
    if len(parts) != 3 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise PrunebenchError(f"--input-shape {text!r} is not CxHxW; use e.g. 3x224x224")
    c, h, w = (int(p) for p in parts)
    return c, h, w


def parse_option_values(method: str, items: Sequence[str]) -> dict[str, Any]:
    """``--option KEY=VALUE`` items -> typed options, parsed by the method's option schema.

    ``["inputs=1", "columns=0.5"]`` for antidote -> ``{"inputs": 1, "columns": 0.5}``; a bool
    reads 1/0, true/false, yes/no, on/off. Each bad item is one error naming the option, its type,
    its range and an example (``prunebench methods --options`` lists every method's options).
    """
    if not items:
        return {}
    from prunebench.harness.pruning import get_method

    schema = get_method(method).options
    return dict(schema.parse_text(method, item) for item in items)


def build_config(args: argparse.Namespace) -> Any:
    """The PruningConfig the options describe."""
    from prunebench.harness.pruning import PruningConfig

    if args.method == "dense" and (args.ratio is not None or args.keep is not None):
        raise PrunebenchError("--ratio/--keep need a pruning method; add --method NAME "
                              "(see `prunebench methods`)")
    if args.keep is not None and not 0.0 < args.keep <= 1.0:
        raise PrunebenchError(f"--keep {args.keep} is outside (0, 1]; use e.g. 0.5")
    items = getattr(args, "option", [])
    if args.method == "dense" and items:
        raise PrunebenchError("--option needs a pruning method; add --method NAME (see "
                              "`prunebench methods`)")
    options = parse_option_values(args.method, items)
    check_exec_flag(args.method, args.exec_mode)
    return PruningConfig(method=args.method, global_ratio=args.ratio, global_keep=args.keep,
                         exec_mode=args.exec_mode, options=options)


def check_exec_flag(method: str, mode: str | None) -> None:
    """``--exec MODE`` of a dynamic method that runs it (checked before any training)."""
    if mode is None:
        return
    from prunebench.harness.pruning import METHODS, check_exec_mode, get_method

    if METHODS.metadata(method)["kind"] == "dynamic":
        check_exec_mode(mode, method, get_method(method).exec_modes)


# flags that describe the workload or the pruning, which --from takes from the run instead
_FROM_CONFLICTS = ("model", "dataset", "data_dir", "input_shape", "num_classes", "checkpoint",
                   "ratio", "keep", "exec_mode")


def run(args: argparse.Namespace) -> int:
    """Evaluate and print."""
    if args.from_run is not None:
        return _replay(args)
    if args.trial is not None or args.point is not None:
        raise PrunebenchError("--trial/--point need --from RUN_DIR (the run folder they belong "
                              "to)")
    if args.model is None:
        raise PrunebenchError("measure needs --model NAME (see `prunebench models`), or --from "
                              "RUN_DIR to re-measure a recorded point")
    return _measure(args)


def _replay(args: argparse.Namespace) -> int:
    from prunebench.search.replay import comparison, recorded_point, replay

    given = [f"--{k.replace('_', '-')}" for k in _FROM_CONFLICTS if getattr(args, k)]
    given += ["--method"] * (args.method != "dense") + ["--option"] * bool(args.option)
    given += ["--seed"] * (args.seed != 0)
    if given:
        raise PrunebenchError(f"--from takes the workload and configuration from the run; drop "
                              f"{', '.join(dict.fromkeys(given))}")
    point = recorded_point(args.from_run, trial=args.trial, point=args.point)
    m = replay(point, profile=args.profile, split=args.split, force=args.force,
               speedup_vs_dense=args.speedup, progress=not args.quiet)
    same = comparison(point, m)
    if args.json:
        out = _json(m)
        out["replay"] = {"run_dir": str(point.run_dir), "label": point.label,
                         "command": point.command, "columns": same}
        print(json.dumps(out, sort_keys=True))
        return 0
    _table(m)
    print(f"\nreplayed {point.label} of {point.run_dir} ({point.command}; latency is re-timed "
          "and moves with the machine's load):")
    for key, c in same.items():
        old, new = c["recorded"], c["replayed"]
        if key.startswith("latency"):  # timing moves with the machine; show by how much
            verdict = f"{100 * (new / old - 1):+.1f}%" if old and new else "-"
        else:
            verdict = {True: "same", False: "DIFFERENT", None: "-"}[c["same"]]
        print(f"  {key.ljust(15)} recorded {_short(old):>12}  now {_short(new):>12}  {verdict}")
    return 0


def _disturbance(m: Any) -> str:
    if not getattr(m, "timing_disturbed", False):
        return ""
    ratio = m.timing_cpu_wall_ratio
    why = f"CPU/wall {ratio:.2f}" if ratio is not None else "speedup above its MAC-ideal"
    return f" [DISTURBED: {why}; other processes took the core, re-measure on a quiet machine]"


def _short(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and v.is_integer():
        return f"{int(v):,}"
    return f"{v:,}" if isinstance(v, int) else f"{v:.6g}"


def _json(m: Any) -> dict[str, Any]:
    out = m.to_dict()
    out.pop("latency_samples_ms")
    out["latency_ms"] = {"p50": m.latency_p50_ms, "p90": m.latency_p90_ms,
                         "p99": m.latency_p99_ms, "mean": m.latency_mean_ms,
                         "n": m.latency_n, "ci_rel": m.latency_ci_rel}
    return out


def _measure(args: argparse.Namespace) -> int:
    from prunebench.harness.evaluate import Workload, evaluate, prepare
    from prunebench.harness.profiles import check_usable, load_profile
    from prunebench.harness.pruning import get_method

    args.profile = args.profile or "cpu-1t"
    args.split = args.split or "val"
    if args.dataset is not None and (args.input_shape or args.num_classes):
        raise PrunebenchError("--input-shape/--num-classes are for cost-only runs; the data set "
                              f"{args.dataset!r} defines them, drop them")
    profile = load_profile(args.profile)
    check_usable(profile, force=args.force)  # fail before any training
    config = build_config(args)
    get_method(config.method)  # unknown methods fail before any training
    workload = Workload(model=args.model, dataset=args.dataset, data_dir=args.data_dir,
                        checkpoint=args.checkpoint,
                        input_size=parse_shape(args.input_shape) if args.input_shape else None,
                        num_classes=args.num_classes, seed=args.seed)
    prepared = prepare(workload, progress=not args.quiet)
    m = evaluate(prepared, config, profile, split=args.split, force=args.force,
                 speedup_vs_dense=args.speedup, progress=not args.quiet)
    if args.json:
        print(json.dumps(_json(m), sort_keys=True))
    else:
        _table(m)
    return 0


def _fmt(v: float | None, spec: str, unit: str = "") -> str:
    return "not measured" if v is None else f"{v:{spec}}{unit}"


def _table(m: Any) -> None:
    energy = _fmt(m.energy_mj_per_inference, ".4g", " mJ per input")
    if m.energy_method == "modelled":
        energy += " (MODELLED from CPU time x profile watts, not measured)"
    elif m.energy_method != "none":
        energy += f" (measured: {m.energy_method}, idle {_fmt(m.idle_power_w, '.3g', ' W')} " \
                  "subtracted)"
    rows = [
        ("model", f"{m.model} ({m.dataset or 'cost only'})"),
        ("method", f"{m.method} {json.dumps({k: v for k, v in m.config.items() if v})}"),
        ("profile", f"{m.profile} on {m.device}, {m.dtype}, batch {m.batch_size}, "
                    f"{m.threads} thread(s), engine {m.engine}"
                    f"{' [FORCED]' if m.forced else ''}"),
        ("machine", m.fingerprint),
        ("accuracy top-1", _fmt(m.accuracy_top1, ".4f", f" ({m.accuracy_split}, "
                                                       f"n={m.accuracy_n})")),
        ("latency p50/p90/p99", f"{m.latency_p50_ms:.4g} / {m.latency_p90_ms:.4g} / "
                                f"{m.latency_p99_ms:.4g} ms per batch (n={m.latency_n}, "
                                f"median CI +/-{100 * m.latency_ci_rel:.2g}%)"
                                + _disturbance(m)),
        ("speedup vs dense", _fmt(m.speedup_vs_dense, ".3f", "x") + (
            f" (IQR {m.speedup_spread:.3f})" if m.speedup_spread is not None else "")),
        ("energy", energy),
        ("MACs", f"{m.macs:,} per input ({m.flops:,} FLOPs)"
                 + (" effective (dynamic)" if m.environment.get("dynamic") else "")),
        ("params", f"{m.params:,} ({m.model_size_bytes:,} bytes with buffers)"),
        ("peak activations", f"{m.peak_memory_bytes:,} bytes ({m.peak_memory_method})"),
        ("conv backend", str(m.environment.get("conv_backend"))),
        ("torch", m.torch_version),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k.ljust(width)}  {v}")
