"""Running an experiment file (``prunebench run``): base, dense anchor, arms, report; resumable.

The run folder (``results/<name>`` unless told) holds ``experiment.toml`` (the file as given),
``experiment.resolved.json`` (every value resolved: the base checkpoint, each profile's dense p50
and budget in ms, each arm's command line) and ``state.json`` (finished stages). Per profile
(a sub-folder per profile when there are several): ``dense.json`` (dense timed once, with the
strict re-measurement settings, on the TEST split), one folder per arm and ``report/``.

Every arm runs in the frame of that one dense p50: a sweep reuses ``dense.json`` (``baseline
--dense``), a search times against it (``--latency-anchor-ms``) under the resolved budget. A
re-run continues where it stopped: finished arms are skipped, a sweep skips its measured points,
a search resumes its study and runs only the trials it still owes. A search that met no budget
is a result (shown in the report), not a failure.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prunebench.harness.errors import PrunebenchError
from prunebench.search.experiment import Arm, Experiment, command_parser, flags, run_command
from prunebench.search.runs.files import check_out_dir, read_json, write_json

STATE = "state.json"


class StageFailed(PrunebenchError):
    """A stage's command ended with ``code`` (its own message is already printed)."""

    def __init__(self, stage: str, code: int) -> None:
        super().__init__(f"stage {stage!r} stopped with exit code {code}")
        self.code = code


@dataclass(frozen=True)
class ExperimentRun:
    """A finished run: its folder, the report folder of each profile and the resolved values."""

    run_dir: Path
    reports: dict[str, Path]
    resolved: dict[str, Any]
    seconds: float


def run_experiment(exp: Experiment, out: Path | None = None, *, progress: bool = True,
                   echo: Callable[[str], None] | None = None) -> ExperimentRun:
    """Run (or continue) ``exp`` in ``out``; raises :class:`StageFailed` if a stage fails."""
    echo = echo or (lambda line: print(line, flush=True))
    start = time.perf_counter()
    run_dir = check_out_dir(Path(out) if out is not None else Path("results") / exp.name)
    state = _state(run_dir, exp)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "experiment.toml").write_text(exp.source)
    quiet = [] if progress else ["--quiet"]
    checkpoint = _base(exp, echo, progress)
    # each arm's checkpoint: the base, or its [prepare] fine-tune of it (once for all profiles)
    checkpoints = {a.name: _prepared(exp, a, checkpoint, echo, quiet) if a.prepare else checkpoint
                   for a in exp.arms}
    resolved: dict[str, Any] = {**exp.to_dict(), "base_checkpoint": checkpoint, "profiles": {}}
    reports: dict[str, Path] = {}
    for profile in exp.profiles:
        where = run_dir if len(exp.profiles) == 1 else run_dir / profile
        dense = _dense(exp, profile, checkpoint, where, echo, progress)
        budget = exp.budget.resolve(dense["latency_p50_ms"])
        echo(f"\nlatency budget on {profile}: {budget:g} ms ({exp.budget.describe()}; dense p50 "
             f"{dense['latency_p50_ms']:.4g} ms)")
        entry: dict[str, Any] = {"dense_p50_ms": dense["latency_p50_ms"], "budget_ms": budget,
                                 "arms": {}}
        resolved["profiles"][profile] = entry
        common = ["--model", exp.model, "--dataset", exp.dataset, "--seed", str(exp.seed),
                  "--profile", profile,
                  *(["--data-dir", exp.data_dir] if exp.data_dir else [])]
        for arm in exp.arms:
            folder = where / arm.name
            argv = [arm.command, *common, "--checkpoint", checkpoints[arm.name], "--out",
                    str(folder), *quiet,
                    *flags(arm.options)]
            if arm.kind == "sweep":
                argv += ["--dense", str(where / "dense.json")]
            else:
                argv += ["--latency-budget-ms", f"{budget:g}",
                         "--latency-anchor-ms", repr(dense["latency_p50_ms"])]
            entry["arms"][arm.name] = argv
            _write_resolved(run_dir, resolved)
            key = f"{profile}/{arm.name}"
            if key in state["done"]:
                echo(f"\n=== {arm.name} on {profile}: finished earlier ({folder})")
                continue
            if arm.kind == "search":
                argv = _owed_trials(argv, arm, folder)
            _stage(f"{arm.name} on {profile}", argv, echo, search_dir=folder
                   if arm.kind == "search" else None)
            state["done"].append(key)
            write_json(run_dir / STATE, state)
        report = where / "report"
        argv = ["compare", *(str(where / a.name) for a in exp.arms), "--budget-ms",
                f"{budget:g}", "--out", str(report), *flags(exp.report)]
        entry["report"] = argv
        _write_resolved(run_dir, resolved)
        _stage(f"report on {profile}", argv, echo)
        reports[profile] = report
    state["finished"] = True
    write_json(run_dir / STATE, state)
    return ExperimentRun(run_dir, reports, resolved, time.perf_counter() - start)


def _state(run_dir: Path, exp: Experiment) -> dict[str, Any]:
    """The finished stages of an earlier run of the same experiment in ``run_dir``."""
    path = run_dir / STATE
    if not path.is_file():
        return {"experiment": exp.to_dict(), "done": []}
    state = read_json(path, "delete it to start the experiment again, or use another --out")
    old = state.get("experiment", {})
    new = exp.to_dict()
    diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if diff:
        raise PrunebenchError(
            f"{run_dir} holds a run of a different experiment ({diff[0]} differs: "
            f"{old.get(diff[0])!r} there, {new.get(diff[0])!r} now); give another --out, or "
            "restore the file to continue that run")
    state.setdefault("done", [])
    return state


def _write_resolved(run_dir: Path, resolved: dict[str, Any]) -> None:
    write_json(run_dir / "experiment.resolved.json", resolved)


def _stage(stage: str, argv: list[str], echo: Callable[[str], None],
           search_dir: Path | None = None) -> None:
    """Run one CLI command; a search whose only failure is an unmet budget counts as done."""
    echo(f"\n=== {stage}\n$ prunebench {' '.join(argv)}")
    code = run_command(argv)
    if code == 2 and search_dir is not None and _unmet(search_dir):
        echo(f"{stage}: no configuration met the budget; the report shows what was measured")
        return
    if code != 0:
        raise StageFailed(stage, code)


def _unmet(search_dir: Path) -> bool:
    """Whether ``search_dir`` is a finished search whose only failure is an unmet budget."""
    try:
        summary = json.loads((search_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return False
    return bool(summary.get("error")) and (search_dir / "trials.csv").exists() \
        and not summary.get("interrupted")


def _base(exp: Experiment, echo: Callable[[str], None], progress: bool) -> str:
    """The base checkpoint's path: ``[base] checkpoint``, or trained (cached) as ``train``."""
    from prunebench.search.commands.train import train_and_report

    given = exp.base.get("checkpoint")
    if given is not None:
        path = Path(given)
        if not path.is_file():
            raise PrunebenchError(f"{exp.path}: [base] checkpoint {str(path)!r} does not exist; "
                                  "give a checkpoint file or drop the key to train the base")
        return str(path)
    argv = ["--model", exp.model, "--dataset", exp.dataset, "--split-seed", str(exp.seed),
            *(["--data-dir", exp.data_dir] if exp.data_dir else []),
            *flags({k: v for k, v in exp.base.items() if k != "checkpoint"}),
            *([] if progress else ["--quiet"])]
    echo(f"\n=== base network (trained once, then cached)\n$ prunebench train {' '.join(argv)}")
    result = train_and_report(command_parser("train").parse_args(argv))
    echo(f"base: test top-1 {100 * result['accuracy_top1']:.2f}% ({result['checkpoint']})")
    return str(result["checkpoint"])


def _dense(exp: Experiment, profile: str, checkpoint: str, where: Path,
           echo: Callable[[str], None], progress: bool) -> dict[str, Any]:
    """``where/dense.json``: dense timed once on ``profile`` (strict settings, TEST split)."""
    from prunebench.harness.evaluate import Workload, evaluate, prepare
    from prunebench.harness.profiles import check_usable, load_profile
    from prunebench.harness.pruning import DENSE
    from prunebench.search.objective import strict_profile

    path = where / "dense.json"
    if path.is_file():
        return read_json(path, "delete it to time dense again (every arm of this profile then "
                               "starts again)")
    loaded = load_profile(profile)
    check_usable(loaded)
    echo(f"\n=== dense reference on {profile} (timed once; every arm shares it)")
    prepared = prepare(Workload(exp.model, exp.dataset, exp.data_dir, checkpoint, seed=exp.seed),
                       progress=progress)
    m = evaluate(prepared, DENSE, strict_profile(loaded), split="test", progress=progress)
    where.mkdir(parents=True, exist_ok=True)
    data = m.to_dict()
    write_json(path, data)
    return data


def _prepared(exp: Experiment, arm: Arm, checkpoint: str, echo: Callable[[str], None],
              quiet: Sequence[str]) -> str:
    """The checkpoint an arm's ``[arms.prepare]`` fine-tuning makes, cached by its content."""
    from prunebench.harness.checkpoints import default_cache_dir

    base = Path(checkpoint)
    stat = base.stat()
    key = json.dumps({"base": str(base.resolve()), "size": stat.st_size,
                      "mtime_ns": stat.st_mtime_ns, "prepare": arm.prepare,
                      "data_dir": exp.data_dir, "seed": exp.seed}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    method = arm.prepare.get("method", "prepared")
    path = default_cache_dir() / "experiments" / f"{exp.model}-{exp.dataset}-{method}-{digest}.pt"
    if path.is_file():
        echo(f"\n=== {arm.name}: prepared checkpoint reused: {path}")
        return str(path)
    argv = ["finetune", "--model", exp.model, "--dataset", exp.dataset, "--checkpoint",
            checkpoint, "--seed", str(exp.seed), "--out", str(path), *quiet,
            *(["--data-dir", exp.data_dir] if exp.data_dir else []), *flags(arm.prepare)]
    _stage(f"{arm.name}: prepare ({method} fine-tuning, cached)", argv, echo)
    return str(path)


def _owed_trials(argv: list[str], arm: Arm, folder: Path) -> list[str]:
    """``argv`` with ``--trials`` lowered by the trials a resumed study has finished already."""
    import optuna

    from prunebench.search.runs.search_settings import DEFAULT_TRIALS
    from prunebench.search.storage import DEFAULT_STORAGE_FILE, open_storage, storage_url

    if not (folder / DEFAULT_STORAGE_FILE).is_file():
        return argv
    storage = open_storage(storage_url(None, folder))
    names = optuna.get_all_study_names(storage)
    if folder.name not in names:
        return argv
    study = optuna.load_study(study_name=folder.name, storage=storage)
    finished = sum(t.state.is_finished() for t in study.get_trials(deepcopy=False))
    owed = max(0, int(arm.options.get("trials", DEFAULT_TRIALS)) - finished)
    print(f"resuming {folder}: {finished} trials finished, {owed} to go", file=sys.stderr)
    return [*argv, "--trials", str(owed)]
