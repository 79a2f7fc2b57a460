"""Option groups, and the report printer, that several subcommands share (not a subcommand).

``prunebench search`` and ``prunebench study create`` take the search options, ``prunebench
worker`` and ``prunebench study`` the storage options, ``prunebench compare``/``report`` and
``prunebench study report`` the report options. Defaults come from the library
(:data:`~prunebench.search.runs.search_settings.SEARCH_DEFAULTS`), so that the command and
:func:`~prunebench.search.runs.run_search` default alike.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prunebench.harness.errors import PrunebenchError
from prunebench.search.runs.search_settings import (
    DEFAULT_LATENCY_MARGIN,
    DEFAULT_TRIALS,
    SEARCH_DEFAULTS,
)


def whole(low: int, example: int) -> Callable[[str], int]:
    """An argparse ``type``: a whole number >= ``low`` (argparse then names the option in its
    one-line error, before any work)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; use e.g. "
                                             f"{example}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} must be >= {low}; use e.g. {example}")
        return value
    return parse


def on_off(text: str) -> bool:
    """An argparse ``type``: ``on``/``off`` (also true/false, yes/no, 1/0) -> bool."""
    low = text.strip().lower()
    if low in ("on", "true", "yes", "1"):
        return True
    if low in ("off", "false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not on or off; use e.g. off")


def positive(example: float) -> Callable[[str], float]:
    """An argparse ``type``: a finite number > 0."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise argparse.ArgumentTypeError(f"{text!r} must be a number > 0; use e.g. "
                                             f"{example:g}")
        return value
    return parse


def add_runtime_arguments(p: argparse.ArgumentParser) -> None:
    """Where and how training runs (``train``, ``finetune``, ``baseline``, ``search``,
    ``worker``); measuring stays on the hardware profile's device."""
    g = p.add_argument_group("training device")
    g.add_argument("--train-device", default="auto", metavar="auto|cpu|cuda[:N]",
                   help="device for training and fine-tuning (default auto: the first CUDA "
                        "device when there is one, else the CPU)")
    g.add_argument("--amp", choices=("bf16", "fp16"), default=None,
                   help="mixed-precision training (bf16 on CPU or GPU; fp16 on GPU only)")
    g.add_argument("--channels-last", action="store_true",
                   help="train in the channels_last (NHWC) memory format")
    g.add_argument("--workers", type=whole(0, 4), default=0, metavar="N",
                   help="DataLoader worker processes for training and accuracy passes (default "
                        "0: in the main process); memory is pinned when training on CUDA")
    g.add_argument("--deterministic", action="store_true",
                   help="deterministic kernels only while training (fails where PyTorch has "
                        "none; slower on GPUs)")


def add_recipe_arguments(p: argparse.ArgumentParser, what: str = "training") -> None:
    """``--recipe NAME`` or ``--recipe-file PATH`` (see ``prunebench recipes``)."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--recipe", default=None, metavar="NAME",
                   help=f"{what} recipe shipped with prunebench (default: digits; see "
                        "`prunebench recipes`)")
    g.add_argument("--recipe-file", default=None, metavar="PATH",
                   help=f"{what} recipe of your own: a TOML file of recipe fields")


def training_runtime(args: argparse.Namespace) -> Any:
    """The :class:`~prunebench.harness.devices.TrainRuntime` of the runtime options, checked
    against this machine (a CUDA request without CUDA is one line, exit code 2)."""
    from prunebench.harness.devices import resolve_runtime

    return resolve_runtime(args.train_device, amp=args.amp, channels_last=args.channels_last,
                           workers=args.workers, deterministic=args.deterministic)


def training_recipe(args: argparse.Namespace, default: str | None = None, **changes: Any) -> Any:
    """The recipe ``--recipe``/``--recipe-file`` name (else ``default``, else digits), with
    ``changes`` whose value is not ``None`` applied and the runtime options as its runtime."""
    from prunebench.harness.recipes import DEFAULT_RECIPE_NAME, load_recipe

    source = args.recipe_file or args.recipe or default or DEFAULT_RECIPE_NAME
    recipe = load_recipe(source)
    given = {k: v for k, v in changes.items() if v is not None}
    try:
        recipe = recipe.with_(**given)
    except PrunebenchError as exc:
        raise PrunebenchError(f"{exc} (from the command line's options)") from None
    return recipe.with_(runtime=training_runtime(args))


def add_workload_arguments(p: argparse.ArgumentParser, weights_help: str,
                           weights_type: Callable[[str], Any] = str) -> None:
    """``--model``, ``--dataset``, ``--data-dir``, ``--checkpoint``/``--weights`` and
    ``--image-size``: what is pruned and on which data."""
    p.add_argument("--model", required=True, help="registered model (see `prunebench models`)")
    p.add_argument("--dataset", required=True, help="registered data set (e.g. digits, mnist)")
    p.add_argument("--data-dir", help="where the data set lives on disk")
    p.add_argument("--checkpoint", "--weights", dest="checkpoint", type=weights_type,
                   default=None, help=weights_help)
    p.add_argument("--image-size", type=whole(8, 32), default=None,
                   help="side in pixels imagefolder images are loaded at (default: the "
                   "checkpoint's, else 32)")


def add_search_arguments(p: argparse.ArgumentParser) -> None:
    """The options of a search run (``prunebench search``, ``prunebench study create``)."""
    d = SEARCH_DEFAULTS
    add_workload_arguments(p, "trained weights to prune: a prunebench checkpoint or a plain "
                           "state_dict of --model, e.g. torchvision's (default: cached base "
                           "model)")
    add_recipe_arguments(p, "base-model and fine-tuning")
    p.add_argument("--space", default=d["space"], help="static | dynamic | hybrid")
    p.add_argument("--method", help="static method(s), comma-separated (several: searched as "
                   "'criterion'), and for dynamic/hybrid one dynamic method, e.g. l1,antidote")
    p.add_argument("--exec", dest="exec_mode", help="dynamic execution mode (masked, gathered, "
                   "fast)")
    p.add_argument("--option", action="append", default=d["option"], metavar="KEY=VALUE",
                   help="an option of the dynamic method, fixed for the study, repeatable: e.g. "
                        "--option select=all for instance_sparsity (every layer searched, not "
                        "only those its selection gates); see `prunebench methods --options`")
    p.add_argument("--search-option", action="append", default=d["search_option"],
                   metavar="KEY[=VALUES]",
                   help="an option of the dynamic method searched as parameter option/KEY, "
                        "repeatable: KEY alone searches its whole range (e.g. rule, columns), "
                        "KEY=a,b those values, KEY=LOW:HIGH[:STEP] a number range (e.g. p=1:4)")
    p.add_argument("--budget-projection", type=on_off, default=d["budget_projection"],
                   metavar="on|off",
                   help="scale each sampled per-layer allocation so the study's cost models "
                        "(latency/energy fitted from its own trials, MACs/params counted) "
                        "predict it meets the budgets with the margin; where it aims between "
                        "the allocation's cheapest point and the budget (budget_level, 0.3-1) "
                        "is searched (default on; only with a budget)")
    p.add_argument("--pruner", default=d["pruner"], metavar="auto|none|median|sha|hyperband",
                   help="stop hopeless trials between fine-tune epochs on their validation "
                        "accuracy (single objective only, e.g. --objectives accuracy with a "
                        "budget): sha = successive halving from the first epoch, hyperband, "
                        "median; a pruned trial is recorded PRUNED with its last accuracy and "
                        "its fidelity_epochs; auto (default): median for a single objective "
                        "with fine-tuning, else none")
    p.add_argument("--trial-timing", default=d["trial_timing"],
                   metavar="auto|full|light|settled",
                   help="how each trial's latency is timed: full, the profile's settings; "
                        "light, a quarter of its samples and time (a CI about 4x wider); "
                        "settled, the profile's settings but stopped as soon as the p50 is "
                        "known (at the light CI) to be on one side of the latency budget with "
                        "its margin (needs --latency-budget-ms and a margin above 0); auto "
                        "(default): light when no objective or budget reads a latency (e.g. "
                        "--objectives accuracy,macs --macs-budget ...), settled with a latency "
                        "budget and margin, full otherwise. Each trial records which "
                        "(trial_timing in trials.csv). The front's re-measurement is timed "
                        "strictly either way")
    p.add_argument("--profile", default=d["profile"], help="hardware profile name or TOML path")
    p.add_argument("--latency-budget-ms", type=float, help="p50 latency budget (ms per batch)")
    p.add_argument("--energy-budget-mj", type=float, help="energy budget (mJ per inference)")
    p.add_argument("--macs-budget", type=float, help="(effective) MACs budget per input")
    p.add_argument("--params-budget", type=float, help="parameter-count budget")
    p.add_argument("--latency-frame", default=d["latency_frame"], metavar="anchored|direct",
                   help="anchored (default): each latency is the dense p50 timed once when the "
                   "study starts, divided by the speedup over dense timed in interleaved rounds, "
                   "so a shared machine's drift between trials cancels; direct: each network's "
                   "own p50")
    p.add_argument("--latency-margin", type=float, default=d["latency_margin"],
                   metavar="FRACTION",
                   help="a trial meets --latency-budget-ms only if its p50 x (1 + FRACTION) "
                   f"does (default {DEFAULT_LATENCY_MARGIN}: re-timing the same network on a "
                   "shared machine moves its p50 by 10-25%%; 0 keeps only the p50's own "
                   "confidence interval)")
    p.add_argument("--latency-anchor-ms", type=float, metavar="MS",
                   help="anchored frame of a new study: use this dense p50 (e.g. from a sweep's "
                   "dense.json, so several searches share one frame) instead of timing one")
    p.add_argument("--trials", type=int,
                   help=f"trials to run now (default {DEFAULT_TRIALS} without --timeout; 0 with an "
                   "existing study: none, only re-measure its front and write the folder)")
    p.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    p.add_argument("--sampler", default=d["sampler"], help="tpe | nsga2 | gp | random")
    p.add_argument("--seed", type=int, default=d["seed"],
                   help="seed for sampler, splits and training")
    p.add_argument("--objectives", default=d["objectives"], help="comma-separated, from "
                   "accuracy, latency_p50, latency_p90, energy, macs, params")
    p.add_argument("--finetune-epochs", type=int, default=d["finetune_epochs"],
                   help="fine-tune epochs per trial")
    p.add_argument("--search-finetune", action="store_true",
                   help="search the fine-tune epochs in 0..--finetune-epochs")
    p.add_argument("--max-ratio", type=float, default=d["max_ratio"],
                   help="largest per-layer ratio")
    p.add_argument("--ratio-step", type=float, default=d["ratio_step"], help="ratio grid step")
    p.add_argument("--keep-min", type=float, default=d["keep_min"],
                   help="smallest dynamic keep-ratio (default: the smallest the --checkpoint "
                   "was trained for, 1 - gamma of its targeted dropout, on the 0.05 grid; "
                   "0.2 for a network without one)")
    p.add_argument("--round-to", help="keep channel counts multiples of N; a list (e.g. "
                   "1,4,8,16) makes the multiple a searched parameter (round_to) of the static "
                   "and hybrid spaces; 'engine' uses the profile's engine's preferred multiple "
                   "(`prunebench profiles check` lists them)")
    p.add_argument("--storage", help="Optuna storage URL (sqlite:///x.db, postgresql://...) or "
                   "journal file path (default: the run folder's study.journal)")
    p.add_argument("--study", help="study name (default: the run folder's name)")
    p.add_argument("--resume", action="store_true", help="add trials to an existing study "
                   "(an existing study of the same name is always resumed)")
    p.add_argument("--warm-start", type=int, default=d["warm_start"],
                   help="start a new study with N uniform configurations: with a budget, the "
                   "first find the budget's edge on the uniform line and the rest spread over "
                   "its feasible stretch; without, spread over the whole line (counted in "
                   "--trials; default %(default)s; 0: off)")
    p.add_argument("--sensitivity", type=int, default=d["sensitivity"], metavar="N",
                   help="after the warm start, N per-layer proposals shaped by each layer's "
                   "sensitivity (val top-1 lost when it alone is pruned, adaptive BN, no "
                   "fine-tuning) per unit of predicted cost saved, projected onto the budget "
                   "(with a binding budget; counted in --trials; default %(default)s; 0: off, "
                   "at most 6)")
    p.add_argument("--remeasure-factor", type=float, default=d["remeasure_factor"],
                   metavar="F", help="re-measure with F x the profile's samples and time and an "
                   "F x tighter CI target (default %(default)s; 2 halves the re-timing)")
    p.add_argument("--remeasure-max", type=int, default=d["remeasure_max"],
                   help="configs re-measured at most")
    p.add_argument("--out", help="run folder (default results/search-<model>-...-<hash>)")
    p.add_argument("--force", action="store_true",
                   help="measure even if the profile does not match this machine (recorded)")
    p.add_argument("--json", action="store_true", help="print one JSON summary on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def search_values(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the search settings, the command line's other entries) of parsed search options;
    together they are what ``config.json`` records as ``args``."""
    given = {k: v for k, v in vars(args).items() if not k.startswith("_")}
    settings = {k: v for k, v in given.items() if k in SEARCH_DEFAULTS}
    return settings, {k: v for k, v in given.items() if k not in SEARCH_DEFAULTS}


def add_storage_arguments(p: argparse.ArgumentParser) -> None:
    """``--storage URL --study NAME`` (``prunebench worker``, ``prunebench study``)."""
    p.add_argument("--storage", required=True, metavar="URL",
                   help="database URL, e.g. postgresql://USER:PASSWORD@HOST:5432/DB")
    p.add_argument("--study", required=True, metavar="NAME", help="study name in the storage")


def add_report_arguments(p: argparse.ArgumentParser) -> None:
    """The options of a report (``prunebench compare``/``report``, ``prunebench study report``)."""
    p.add_argument("--out", type=Path, default=None,
                   help="report folder (default: results/compare-<timestamp> or <run>/report)")
    p.add_argument("--objectives", default="accuracy,latency_p50",
                   help="comma-separated objectives for fronts and hypervolumes (short names "
                        "accuracy, latency_p50, latency_p90, energy, macs, params, memory, or "
                        "COLUMN:min / COLUMN:max); default: accuracy,latency_p50")
    p.add_argument("--budget-ms", default=None,
                   help="latency budget(s) in ms, comma-separated (default: the runs' budgets, "
                        "else 50%% and 75%% of the dense p50 latency)")
    p.add_argument("--allow-mixed", action="store_true",
                   help="plot latencies from different profiles/machines or energies from "
                        "different energy methods on one axis anyway (marked in the report)")
    p.add_argument("--split", default="auto", choices=("auto", "test", "val"),
                   help="which accuracy split to plot (default auto: the only one, else test, "
                        "else each run on its own split, labelled)")
    p.add_argument("--strict", action="store_true",
                   help="refuse runs scored on different splits, searches with nothing under "
                        "budget and different latency anchors (default: shown and labelled)")
    p.add_argument("--log-latency", action="store_true", help="log-scale latency axis")
    p.add_argument("--formats", default="png,svg,pdf",
                   help="plot file formats, comma-separated (default: png,svg,pdf)")
    add_figure_arguments(p)
    p.add_argument("--json", action="store_true", help="print one JSON summary on stdout")


def add_figure_arguments(p: argparse.ArgumentParser) -> None:
    """How a report's plots are drawn (``prunebench.search.figures.figure_options``)."""
    p.add_argument("--xlim", default="auto", metavar="LOW,HIGH|auto|data",
                   help="latency axis limits in ms; auto (default): fastest point to dense; "
                        "data: every point")
    p.add_argument("--ylim", default="auto", metavar="LOW,HIGH|auto|data",
                   help="accuracy axis limits in %%; auto (default): from the lowest front point "
                        "within --ylim-within points of dense to the best; data: every point")
    p.add_argument("--ylim-within", type=float, default=10.0, metavar="PP",
                   help="accuracy points below dense the automatic y-axis shows (default 10)")
    p.add_argument("--whiskers", default="ci", choices=("off", "ci", "p90"),
                   help="latency whiskers on front points: the p50's 95%% CI (default), p50 to "
                        "p90, or none")
    p.add_argument("--no-accuracy-bars", action="store_true",
                   help="no 95%% Wilson error bars on the accuracy of front points")
    p.add_argument("--all-trials", action="store_true",
                   help="also draw, faintly, the trials scored on another split (a search's "
                        "val trials beside its test re-measurements)")
    p.add_argument("--caption-in-figure", action="store_true",
                   help="draw the title and caption into the image (default: caption files "
                        "beside it, <plot>.caption.txt and .caption.tex)")
    p.add_argument("--style", default="paper", choices=("paper", "slides"),
                   help="font and width preset (paper: 8 pt at 7.0 / 3.5 in; slides: 16 pt)")
    p.add_argument("--widths", default="full,column",
                   help="figure widths, comma-separated: full (two-column) and/or column "
                        "(one-column); default both")


def report_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of :func:`~prunebench.search.runs.compare` the report options give
    (``out`` apart)."""
    return {"objectives": args.objectives, "budget_ms": _budgets(args.budget_ms),
            "allow_mixed": args.allow_mixed, "split": args.split, "strict": args.strict,
            "log_latency": args.log_latency, "formats": args.formats, "xlim": args.xlim,
            "ylim": args.ylim, "y_within_pp": args.ylim_within, "whiskers": args.whiskers,
            "accuracy_bars": not args.no_accuracy_bars, "all_trials": args.all_trials,
            "caption_in_figure": args.caption_in_figure, "style": args.style,
            "widths": args.widths}


def print_report(out: Path, as_json: bool) -> int:
    """Print where the report went and its warnings (``--json``: its summary); exit code 0."""
    summary = json.loads((out / "summary.json").read_text())
    if as_json:
        print(json.dumps(summary, sort_keys=True))
    else:
        print(f"report written to {out / 'report.html'} (and report.md, plots/, CSVs, fronts.tex)")
        for warning in summary["warnings"]:
            print(f"warning: {warning}")
    return 0


def _budgets(text: str | None) -> list[float] | None:
    if not text:
        return None
    try:
        budgets = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        budgets = [math.nan]
    if not budgets or not all(math.isfinite(b) and b > 0 for b in budgets):
        raise PrunebenchError(f"--budget-ms {text!r} is not a positive number or comma-separated "
                              "list of them; give e.g. --budget-ms 4 or --budget-ms 2,4")
    return budgets

