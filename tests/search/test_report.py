"""Reports from realistic synthetic run folders; `compare` refuses mixed axes with exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from prunebench.harness.errors import PrunebenchError
from prunebench.harness.measurement import Measurement
from prunebench.harness.pruning.config import PruningConfig
from prunebench.search import pareto, report
from prunebench.search.cli import main
from prunebench.search.figures import figure_options
from prunebench.search.runs import folders as run_folders

LAYERS = ["layer1.0.conv1", "layer2.0.conv1", "layer3.0.conv1"]
GATES = ["layer1.0.gate", "layer2.0.gate", "layer3.0.gate"]
DENSE_MACS = 40_800_000


def _m(cfg: PruningConfig, acc: float, lat: float, *, macs: float = DENSE_MACS,
       eff: float | None = None, profile: str = "cpu-2t", fingerprint: str = "a1b2c3d4",
       energy_method: str = "modelled", split: str = "test") -> Measurement:
    """One realistic ResNet-20 / CIFAR-10 measurement on a 2-thread CPU profile."""
    return Measurement(
        model="resnet20", dataset="cifar10", method=cfg.method, config=cfg.to_dict(),
        config_key=cfg.key, profile=profile, fingerprint=fingerprint, device="cpu",
        dtype="float32", batch_size=1, threads=2, torch_version="2.4.1", accuracy_top1=acc,
        accuracy_split=split, accuracy_n=5000, latency_p50_ms=lat, latency_p90_ms=lat * 1.09,
        latency_p99_ms=lat * 1.2, latency_n=200, energy_mj_per_inference=lat * 5.8,
        energy_method=energy_method, macs=int(eff if eff is not None else macs),
        flops=int(2 * (eff if eff is not None else macs)), effective_macs_p50=eff,
        params=int(272_474 * macs / DENSE_MACS),
        environment={"python": "3.11.2", "cpu_model": "Intel Xeon (synthetic)"})


def _write(folder: Path, rows: list[dict], dense: Measurement, config: dict,
           file: str = "points.csv", remeasure: bool = False) -> Path:
    """A run folder; searches also get remeasured.csv (their front re-scored on test)."""
    folder.mkdir(parents=True)
    frame = pd.DataFrame(rows)
    frame.to_csv(folder / file, index=False)
    if remeasure:
        done = frame[frame["state"] == "COMPLETE"]
        front = pareto.pareto_front(done, [pareto.ACCURACY, pareto.LATENCY])
        front.assign(accuracy_split="test", accuracy_top1=front["accuracy_top1"] - 0.003,
                     remeasured=True).to_csv(folder / "remeasured.csv", index=False)
    (folder / "dense.json").write_text(dense.to_json())
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def make_runs(root: Path, *, profile: str = "cpu-2t", energy_method: str = "modelled",
              fingerprint: str = "a1b2c3d4", seed: int = 0, remeasure: bool = True) -> list[Path]:
    """Dense + uniform L1 sweep (test split), a static (L1) and a dynamic (attention) search
    (trials scored on val, one failed; the front re-measured on test in remeasured.csv)."""
    rng = np.random.default_rng(seed)
    dense = _m(PruningConfig(), 0.918, 6.8)
    sweep = [{**dense.to_row(), "run_kind": "dense", "label": "dense"}]
    for r in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7):
        keep = 1 - r
        m = _m(PruningConfig("l1", global_ratio=r), 0.918 - 0.35 * r**2.2,
               0.6 + 6.2 * keep**1.7 * rng.uniform(0.97, 1.03), macs=DENSE_MACS * keep**2)
        sweep.append({**m.to_row(), "run_kind": "baseline", "label": f"l1 r={r:g}"})
    static, dynamic = [], []
    for t in range(30):
        ratios = {n: float(rng.uniform(0.0, 0.75)) for n in LAYERS}
        r = float(np.mean(list(ratios.values())))
        m = _m(PruningConfig("l1", ratios=ratios), 0.918 - 0.27 * r**2.2 - rng.uniform(0, .03),
               0.6 + 6.2 * (1 - r)**1.7 * rng.uniform(0.95, 1.05), macs=DENSE_MACS * (1 - r)**2,
               split="val")
        static.append({**m.to_row(), "run_kind": "search", "label": f"trial {t}",
                       "trial_number": t, "state": "COMPLETE"})
        keep = {n: float(rng.uniform(0.3, 1.0)) for n in GATES}
        k = float(np.mean(list(keep.values())))
        m = _m(PruningConfig("attention", keep=keep, exec_mode="gathered"),
               0.918 - 0.2 * (1 - k)**2.5 - rng.uniform(0, .02),
               (0.9 + 6.4 * k**1.1) * rng.uniform(0.95, 1.05), eff=DENSE_MACS * (0.15 + .85 * k),
               profile=profile, energy_method=energy_method, fingerprint=fingerprint,
               split="val")
        dynamic.append({**m.to_row(), "run_kind": "search", "label": f"trial {t}",
                        "trial_number": t, "state": "COMPLETE"})
    failed = {"run_kind": "search", "label": "trial 30", "trial_number": 30, "state": "FAIL",
              "fail_reason": "out of memory"}
    static.append(failed)
    dynamic.append(failed)
    val_dense = dense.replace(accuracy_split="val", accuracy_top1=0.921)
    dyn_dense = val_dense.replace(profile=profile, energy_method=energy_method,
                                  fingerprint=fingerprint)
    return [
        _write(root / "l1-uniform", sweep, dense, {"command": "baseline", "method": "l1"}),
        _write(root / "static-search", static, val_dense,
               {"command": "search", "latency_budget_ms": 4.0}, "trials.csv", remeasure),
        _write(root / "dynamic-search", dynamic, dyn_dense,
               {"command": "search", "latency_budget_ms": 4.0}, "trials.csv", remeasure),
    ]


def test_merge_series_kinds_and_dense(tmp_path: Path) -> None:
    loaded = [run_folders.load_run(p) for p in make_runs(tmp_path)]
    assert [r.excluded for r in loaded] == [0, 1, 1]  # the failed trials
    merged = run_folders.merge_runs(loaded)
    assert set(merged["series"]) == {"dense", "l1 uniform", "l1 search", "attention search"}
    assert set(merged["kind"]) == {"dense", "static", "dynamic"}
    assert (merged["series"] == "dense").sum() == 3  # one per run (from CSV or dense.json)
    dyn = merged[merged["series"] == "attention search"]
    assert (dyn["macs"] < DENSE_MACS).all()
    # auto: val trials and the searches' val dense points give way to the test re-measurements
    test_rows, note = run_folders.select_split(merged)
    assert set(test_rows["accuracy_split"]) == {"test"} and "left out" in note
    assert (test_rows["series"] == "dense").sum() == 1
    val_rows, _ = run_folders.select_split(merged, "val")
    assert set(val_rows["series"]) == {"dense", "l1 search", "attention search"}


def test_split_mismatch_refused(tmp_path: Path) -> None:
    merged = run_folders.merge_runs([run_folders.load_run(p)
                                     for p in make_runs(tmp_path, remeasure=False)])
    with pytest.raises(PrunebenchError, match="--split test or --split val"):
        run_folders.select_split(merged)
    assert len(run_folders.select_split(merged, allow_mixed=True)[0]) == len(merged)


def test_report_has_every_section(tmp_path: Path) -> None:
    folders = make_runs(tmp_path / "runs")
    out = tmp_path / "out"
    summary = report.write_report([run_folders.load_run(p) for p in folders], out,
                                  figures=figure_options(formats=("png",), widths=("full",)))
    md = (out / "report.md").read_text()
    for heading in ("## Setup", "## Trade-off plots", "## Hypervolume", "## Pareto fronts",
                    "## Best configuration under each budget", "## Dynamic vs static",
                    "## How energy was obtained", "## Methods", "## Files",
                    "## Appendix: environment"):
        assert heading in md, heading
    assert "modelled" in md and "not measured" in md
    assert "layer2.0.conv1" in md  # per-layer ratios of the best configuration
    # dynamic's best accuracy at <= 5.8 ms is below static l1 r=0.1's: a negative gain
    row = next(line for line in md.split("## Dynamic vs static")[1].splitlines()
               if line.startswith("| l1 uniform | l1 r=0.1 |"))
    assert row.split("|")[-2].strip().startswith("-")
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3 and "<table" in html
    tex = (out / "fronts.tex").read_text()
    assert "\\toprule" in tex and "\\bottomrule" in tex and "attention search" in tex
    merged = pd.read_csv(out / "points.csv")
    assert set(merged["accuracy_split"]) == {"test"} and (merged["series"] == "dense").sum() == 1
    assert set(pd.read_csv(out / "fronts.csv")["series"]) >= {"l1 search", "attention search"}
    assert summary["budgets_ms"] == [4.0]
    assert 0 < summary["hypervolume"]["attention search"] <= 1


@pytest.mark.slow
def test_report_command_one_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = make_runs(tmp_path)[2]
    code = main(["report", str(folder), "--out", str(tmp_path / "rep"), "--json",
                 "--formats", "png"])
    assert code == 0
    assert json.loads(capsys.readouterr().out)["out"] == str(tmp_path / "rep")
    assert (tmp_path / "rep" / "report.html").is_file()


@pytest.mark.parametrize("kw,word", [({"profile": "gpu-h100"}, "profile"),
                                     ({"fingerprint": "ffff0000"}, "fingerprint"),
                                     ({"energy_method": "rapl"}, "energy_method")])
def test_compare_refuses_mixed(tmp_path: Path, kw: dict, word: str,
                               capsys: pytest.CaptureFixture[str]) -> None:
    folders = make_runs(tmp_path / "runs", **kw)
    out = tmp_path / "cmp"
    code = main(["compare", *map(str, folders), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and word in err and "--allow-mixed" in err and "dynamic-search" in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.slow
def test_compare_allow_mixed_writes_marked_report(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    folders = make_runs(tmp_path / "runs", profile="gpu-h100", energy_method="rapl")
    out = tmp_path / "cmp"
    code = main(["compare", *map(str, folders), "--out", str(out), "--allow-mixed", "--json",
                 "--formats", "png"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert len(summary["warnings"]) == 2  # the profile and the energy method
    md = (out / "report.md").read_text()
    assert "mixed measurement setups" in md and "gpu-h100" in md


def test_compare_bad_input_errors(tmp_path: Path) -> None:
    with pytest.raises(PrunebenchError, match="does not exist"):
        run_folders.load_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PrunebenchError, match="points.csv"):
        run_folders.load_run(tmp_path / "empty")
    folders = make_runs(tmp_path / "runs")
    assert main(["compare", str(folders[0]), "--objectives", "accuracy,speed",
                 "--out", str(tmp_path / "x")]) == 2
    assert main(["compare", str(folders[0]), "--budget-ms", "-3",
                 "--out", str(tmp_path / "x")]) == 2


def _unmet_and_anchored(folders: list[Path]) -> None:
    """static-search: nothing feasible and nothing re-measured; dynamic-search: latencies framed
    by a recorded anchor of 7.14 ms (the sweep's dense p50 is 6.8 ms)."""
    trials = pd.read_csv(folders[1] / "trials.csv").assign(feasible=False)
    trials.to_csv(folders[1] / "trials.csv", index=False)
    (folders[1] / "remeasured.csv").write_text("")
    dyn = pd.read_csv(folders[2] / "trials.csv")
    dyn["environment"] = json.dumps({"cpu_model": "Intel Xeon (synthetic)",
                                     "latency_anchor_ms": 7.14})
    dyn.to_csv(folders[2] / "trials.csv", index=False)


def test_compare_shows_and_labels_what_it_used_to_refuse(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folders = make_runs(tmp_path / "runs")
    _unmet_and_anchored(folders)
    out = tmp_path / "cmp"
    code = main(["compare", *map(str, folders), "--out", str(out), "--formats", "png",
                 "--widths", "column"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "static-search (val)" in printed and "nothing under its budget (4 ms)" in printed
    assert "different latency anchors" in printed and "1.050x" in printed  # 7.14 / 6.8
    series = set(pd.read_csv(out / "points.csv")["series"])
    assert "l1 search [val split] [nothing under budget]" in series
    assert "attention search" in series  # re-measured on test: kept on the common split
    md = (out / "report.md").read_text()
    assert "Shown and labelled rather than refused" in md


@pytest.mark.parametrize("case,word", [("split", "different splits"),
                                       ("unmet", "nothing under its budget"),
                                       ("anchor", "different latency anchors")])
def test_compare_strict_refuses(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                case: str, word: str) -> None:
    folders = make_runs(tmp_path / "runs", remeasure=case != "split")
    if case != "split":
        _unmet_and_anchored(folders)
    if case == "anchor":  # only the anchors differ: the static search keeps its front
        folders = [folders[0], folders[2]]
    elif case == "unmet":  # only the unmet budget: test accuracies from every other run
        pd.read_csv(folders[1] / "trials.csv").assign(accuracy_split="test").to_csv(
            folders[1] / "trials.csv", index=False)
        folders = folders[:2]
    out = tmp_path / "cmp"
    code = main(["compare", *map(str, folders), "--out", str(out), "--strict"])
    err = capsys.readouterr().err
    assert code == 2 and word in err and "--strict" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()
