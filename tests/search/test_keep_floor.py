"""``--keep-min``'s default follows the network: a checkpoint fine-tuned with targeted dropout at
``gamma`` is searched from ``1 - gamma`` up (the keeps it was trained to run at), any other from
0.2; an explicit ``--keep-min`` wins."""

from __future__ import annotations

from pathlib import Path

import pytest

from prunebench.harness.datasets import load_dataset
from prunebench.harness.models import create_model
from prunebench.harness.train import save_checkpoint
from prunebench.search.cli import main
from prunebench.search.runs.search_settings import DEFAULT_KEEP_MIN, build_spec, keep_floor
from prunebench.search.space import SearchSpace

BASE = {"model": "test_resnet", "dataset": "digits", "space": "dynamic", "method": "antidote"}


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real ``prunebench finetune`` checkpoint, targeted dropout gamma=0.6 (one epoch)."""
    folder = tmp_path_factory.mktemp("keep_floor")
    base, out = folder / "base.pt", folder / "td.pt"
    save_checkpoint(create_model("test_resnet", 10, 1), base,
                    {"model": "test_resnet", "num_classes": 10, "in_channels": 1})
    assert main(["finetune", "--model", "test_resnet", "--dataset", "digits", "--checkpoint",
                 str(base), "--method", "antidote", "--targeted-dropout",
                 "gamma=0.6,alpha=1,sample=1", "--epochs", "1", "--out", str(out),
                 "--quiet"]) == 0
    return out


def test_the_floor_is_the_trained_keep_and_the_space_starts_there(finetuned: Path) -> None:
    spec = build_spec({**BASE, "checkpoint": str(finetuned)})
    assert spec.space.keep_min == pytest.approx(0.4)
    splits = load_dataset("digits")
    model = create_model("test_resnet", 10, 1)
    space = SearchSpace.build(spec.space, model, splits.split("val")[0][0][None])
    lows = [d.low for d in space.distributions().values()]
    assert len(lows) == len(space.gated) > 0
    assert lows == pytest.approx([0.4] * len(lows))  # every gate's keep, none below trained


def test_an_explicit_keep_min_wins_and_other_networks_keep_the_default(
        finetuned: Path, tmp_path: Path) -> None:
    assert build_spec({**BASE, "checkpoint": str(finetuned), "keep_min": 0.2}
                      ).space.keep_min == 0.2
    assert build_spec(BASE).space.keep_min == DEFAULT_KEEP_MIN  # the cached dense base
    plain = tmp_path / "plain.pt"
    save_checkpoint(create_model("test_resnet", 10, 1), plain,
                    {"model": "test_resnet", "num_classes": 10, "in_channels": 1})
    assert keep_floor(plain, 0.05) == DEFAULT_KEEP_MIN


@pytest.mark.parametrize(("gamma", "floor"), [(0.75, 0.25), (0.73, 0.3), (0.9, 0.1),
                                              (0.02, DEFAULT_KEEP_MIN), (1.0, 0.05)])
def test_the_floor_is_rounded_up_onto_the_keep_grid(tmp_path: Path, gamma: float,
                                                    floor: float) -> None:
    path = tmp_path / "td.pt"
    save_checkpoint(create_model("test_resnet", 10, 1), path,
                    {"model": "test_resnet", "num_classes": 10, "in_channels": 1,
                     "targeted_dropout": {"gamma": gamma, "alpha": 1.0}})
    assert keep_floor(path, 0.05) == pytest.approx(floor)
