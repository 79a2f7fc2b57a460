"""optuna-dashboard 0.21 opened on a search's journal: named metrics, infeasible trials marked,
no trial left WAITING (opened by the dashboard's own storage loading, read through its HTTP API
served in-process)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from wsgiref.util import setup_testing_defaults

import optuna
import pytest
import torch

from prunebench.harness.measure.flops import count_macs
from prunebench.harness.models import create_model
from prunebench.search.runs import run_search

dashboard = pytest.importorskip("optuna_dashboard._app", reason="optuna-dashboard is a dev "
                                "dependency: pip install -c constraints.txt -e '.[dev]'")
storage_url = pytest.importorskip("optuna_dashboard._storage_url")


def _open(journal: Path):  # noqa: ANN202
    """The storage as ``optuna-dashboard JOURNAL`` opens it, and its app."""
    storage = storage_url.get_storage(str(journal))
    return storage, dashboard.create_app(storage)


def _get(app, path: str) -> dict:  # noqa: ANN001 - a bottle WSGI app
    environ: dict = {"PATH_INFO": path, "REQUEST_METHOD": "GET", "wsgi.input": io.BytesIO()}
    setup_testing_defaults(environ)
    status: list[str] = []
    body = b"".join(app(environ, lambda s, headers, exc_info=None: status.append(s)))
    assert status[0].startswith("200"), (status, body[:200])
    return json.loads(body)


@pytest.mark.slow
def test_dashboard_shows_metric_names_and_feasibility(assets: dict[str, str]) -> None:
    run = Path(assets["dir"]) / "dash"
    dense_macs = count_macs(create_model("test_convnet", 10, 1), torch.zeros(1, 1, 32, 32)).macs
    # a MACs budget splits the trials deterministically into feasible and infeasible ones; the
    # aimed warm start (4 points, 3 trials) would enqueue a 4th after the last (a stray WAITING)
    result = run_search(model="test_convnet", dataset="digits", checkpoint=assets["checkpoint"],
                        profile=assets["profile"], macs_budget=0.1 * float(dense_macs),
                        out=run, progress=False, trials=3, sampler="tpe", seed=3,
                        warm_start=4, remeasure_max=1)
    assert result.error is None
    storage, app = _open(run / "study.journal")
    studies = _get(app, "/api/studies")["study_summaries"]
    assert len(studies) == 1
    detail = _get(app, f"/api/studies/{studies[0]['study_id']}")
    assert detail["objective_names"] == ["accuracy", "latency_p50"]
    states = [t["state"] for t in detail["trials"]]
    assert "Waiting" not in states and states.count("Complete") == 3, states
    feasible = [all(c <= 0 for c in t["constraints"]) for t in detail["trials"]]
    assert all(len(t["constraints"]) == 1 for t in detail["trials"])  # the MACs budget
    assert any(feasible) and not all(feasible), feasible
    trials = {t.number: t for t in optuna.load_study(study_name=studies[0]["study_name"],
                                                     storage=storage).trials}
    for t in detail["trials"]:  # the dashboard's marks agree with the search's own verdict
        own = all(v <= 0 for v in trials[t["number"]].constraints.values())
        assert own == all(c <= 0 for c in t["constraints"])


@pytest.mark.slow
def test_random_sampler_marks_feasibility_as_a_user_attr(assets: dict[str, str]) -> None:
    """RandomSampler takes no constraints_func: the dashboard shows the ``feasible`` user attr."""
    run = Path(assets["dir"]) / "dash-random"
    dense_macs = count_macs(create_model("test_convnet", 10, 1), torch.zeros(1, 1, 32, 32)).macs
    run_search(model="test_convnet", dataset="digits", checkpoint=assets["checkpoint"],
               profile=assets["profile"], macs_budget=0.1 * float(dense_macs), out=run,
               progress=False, trials=3, sampler="random", seed=3, warm_start=3,
               remeasure_max=1)
    _, app = _open(run / "study.journal")
    study_id = _get(app, "/api/studies")["study_summaries"][0]["study_id"]
    detail = _get(app, f"/api/studies/{study_id}")
    marks = [{a["key"]: a["value"] for a in t["user_attrs"]}["feasible"] for t in detail["trials"]]
    assert set(marks) == {"True", "False"}, marks  # the dashboard shows attrs as text
    assert all(t["constraints"] == [] for t in detail["trials"])  # nothing to grey them by
