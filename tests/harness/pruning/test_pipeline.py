"""The pipeline: one config -> static cut, recovery, dynamic gating, in that order."""

from __future__ import annotations

import pytest
import torch

from prunebench.harness.errors import PrunebenchError
from prunebench.harness.measure.flops import count_macs
from prunebench.harness.models import create_model
from prunebench.harness.pruning import PruneContext, PruningConfig, get_method, pipeline

X = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))


def _ctx(splits=None) -> PruneContext:
    return PruneContext(example_input=X, splits=splits, progress=False)


def test_stages_of_each_kind() -> None:
    static = PruningConfig(method="l1", global_ratio=0.5, options={"round_to": 2},
                           finetune_epochs=3)
    plan = pipeline.stages(static)
    assert plan.static == PruningConfig(method="l1", global_ratio=0.5, options={"round_to": 2})
    assert plan.finetune_epochs == 3 and plan.dynamic is None
    hybrid = PruningConfig(method="antidote", keep={"layer1.0.conv1": 0.5}, exec_mode="masked",
                           ratios={"conv1": 0.25}, static_method="l1",
                           static_options={"round_to": 4}, finetune_epochs=1)
    plan = pipeline.stages(hybrid)
    assert plan.static == PruningConfig(method="l1", ratios={"conv1": 0.25},
                                        options={"round_to": 4})
    assert plan.dynamic == PruningConfig(method="antidote", keep={"layer1.0.conv1": 0.5},
                                         exec_mode="masked")
    assert pipeline.stages(PruningConfig(finetune_epochs=2)).static.method == "dense"


@pytest.mark.parametrize(("config", "message"), [
    (PruningConfig(method="antidote", global_ratio=0.3), "set static_method"),
    (PruningConfig(method="l1", global_ratio=0.3, static_method="fpgm"), "only for a hybrid"),
    (PruningConfig(method="antidote", global_ratio=0.3, static_method="antidote_fast"),
     "is not a static method"),
    (PruningConfig(method="nope"), "nope"),
])
def test_configs_no_stage_can_run_are_refused(config: PruningConfig, message: str) -> None:
    with pytest.raises(PrunebenchError, match=message):
        pipeline.stages(config)


def test_bad_pipeline_fields_are_refused_at_construction() -> None:
    with pytest.raises(PrunebenchError, match="finetune_epochs -1"):
        PruningConfig(finetune_epochs=-1)
    with pytest.raises(PrunebenchError, match="static_options need a static_method"):
        PruningConfig(method="antidote", static_options={"round_to": 2})


def test_single_stage_json_is_unchanged_and_pipeline_fields_round_trip() -> None:
    plain = PruningConfig(method="l1", global_ratio=0.5)
    assert set(plain.to_dict()) == {"method", "ratios", "global_ratio", "keep", "global_keep",
                                    "exec_mode", "options"}
    hybrid = PruningConfig(method="antidote", keep={"a": 0.5}, ratios={"b": 0.25},
                           static_method="l1", static_options={"round_to": 2},
                           finetune_epochs=2)
    assert PruningConfig.from_json(hybrid.to_json()) == hybrid
    assert hybrid.key != PruningConfig.from_dict({**hybrid.to_dict(), "finetune_epochs": 0}).key


def test_hybrid_build_is_the_static_cut_then_the_gating() -> None:
    base = create_model("test_resnet", 10, 1).eval()
    gated = "layer1.0.conv1"
    config = PruningConfig(method="antidote", keep={gated: 0.5}, exec_mode="masked",
                           global_ratio=0.25, static_method="l1")
    built = pipeline.build(base, config, _ctx())
    cut = get_method("l1").apply(base, PruningConfig(method="l1", global_ratio=0.25), _ctx())
    by_hand = get_method("antidote").apply(
        cut, PruningConfig(method="antidote", keep={gated: 0.5}, exec_mode="masked"), _ctx())
    with torch.no_grad():
        torch.testing.assert_close(built(X), by_hand(X))
    assert count_macs(built, X).macs < count_macs(base, X).macs
    assert all(p is not q for p, q in zip(built.parameters(), base.parameters(), strict=False))


def test_recovery_stage_trains_and_reports_every_epoch(digits) -> None:
    from prunebench.harness.train import DEFAULT_RECIPE

    base = create_model("test_convnet", 10, 1).eval()
    before = [p.detach().clone() for p in base.parameters()]
    seen: list[int] = []
    ctx = PruneContext(example_input=X, splits=digits, progress=False,
                       recipe=DEFAULT_RECIPE)  # the stage sets the epochs
    built = pipeline.build(base, PruningConfig(method="l1", global_ratio=0.5, finetune_epochs=2),
                           ctx, epoch_callback=lambda epoch, net: seen.append(epoch))
    assert len(seen) == 2 and not built.training
    assert all(torch.equal(a, b) for a, b in zip(before, base.parameters(), strict=True))
    with pytest.raises(PrunebenchError, match="needs a data set"):
        pipeline.build(base, PruningConfig(finetune_epochs=1), _ctx())
