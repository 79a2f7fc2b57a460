"""An experiment's tolerance of a search that met no budget, and reading such a run folder."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from prunebench.search.runs.experiment_run import _unmet
from prunebench.search.runs.folders import load_run


def _search_folder(tmp_path: Path, error: str | None) -> Path:
    run = tmp_path / "search-dynamic"
    run.mkdir()
    pd.DataFrame({"number": [0, 1], "state": ["COMPLETE", "COMPLETE"],
                  "accuracy_top1": [0.9, 0.8], "latency_p50_ms": [3.0, 2.9]}).to_csv(
        run / "trials.csv", index=False)
    (run / "remeasured.csv").write_text("\n")  # what a search that re-measured nothing writes
    (run / "summary.json").write_text(json.dumps({"error": error}))
    return run


def test_unmet_search_is_a_result_not_a_failure(tmp_path: Path) -> None:
    unmet = _search_folder(tmp_path, "no configuration met the budget in 2 trials")
    assert _unmet(unmet)
    assert not _unmet(tmp_path / "missing")
    (unmet / "summary.json").write_text(json.dumps({"error": None}))
    assert not _unmet(unmet)


def test_run_folder_with_empty_remeasured_file_loads(tmp_path: Path) -> None:
    run = load_run(_search_folder(tmp_path, "unmet"))
    assert len(run.points) == 2 and set(run.points["accuracy_top1"]) == {0.9, 0.8}
