"""Static filter pruning on the zoo's architectures: coupling, round_to, errors, recovery."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunebench.harness.errors import PrunebenchError, UnknownNameError
from prunebench.harness.models import create_model
from prunebench.harness.pruning import PruneContext, PruningConfig, get_method
from prunebench.harness.pruning.static.cut import coupled_groups, cut_filters, keep_count
from prunebench.harness.pruning.static.importance import slimming_loss_hook


def _ctx(size: int = 32, seed: int = 0) -> PruneContext:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    return PruneContext(example_input=torch.randn(1, 3, size, size), seed=seed)


def _l1(ratio: float, **options) -> PruningConfig:
    return PruningConfig("l1", global_ratio=ratio, options=options)


def test_coupled_groups_of_test_resnet() -> None:
    groups = coupled_groups(create_model("test_resnet"), _ctx().example_input)
    assert [(g.name, g.members, g.channels) for g in groups] == [
        ("conv1", ("conv1", "layer1.0.conv2"), 4),
        ("layer1.0.conv1", ("layer1.0.conv1",), 4),
        ("layer2.0.conv1", ("layer2.0.conv1",), 8),
        ("layer2.0.conv2", ("layer2.0.conv2", "layer2.0.shortcut.0"), 8),
        ("layer3.0.conv1", ("layer3.0.conv1",), 16),
        ("layer3.0.conv2", ("layer3.0.conv2", "layer3.0.shortcut.0"), 16),
    ]
    assert groups[0].norms == ("bn1", "layer1.0.bn2")
    assert "fc" not in {m for g in groups for m in g.members}  # the classifier output is kept


@pytest.mark.parametrize("model_name,size", [
    ("resnet20", 32),
    pytest.param("vgg16_bn", 32, marks=pytest.mark.slow),
    ("mobilenetv2", 32),
    pytest.param("tv_resnet18", 64, marks=pytest.mark.slow),
])
def test_zoo_models_prune_consistently(model_name: str, size: int) -> None:
    ctx = _ctx(size)
    model = create_model(model_name).eval()
    pruned = get_method("l1").apply(model, _l1(0.5), ctx)
    with torch.no_grad():
        assert pruned(ctx.example_input).shape == model(ctx.example_input).shape
    for g in coupled_groups(model, ctx.example_input):
        outs = {pruned.get_submodule(m).weight.shape[0] for m in g.members}
        assert outs == {keep_count(g.channels, 0.5)}, g.name  # coupled layers agree
    for m in pruned.modules():
        if isinstance(m, nn.Conv2d) and m.groups > 1:  # depthwise stays depthwise
            assert m.groups == m.in_channels == m.out_channels == m.weight.shape[0]


def test_round_to_keeps_multiples() -> None:
    ctx = _ctx()
    model = create_model("resnet20")
    pruned = get_method("l1").apply(model, _l1(0.3, round_to=4), ctx)
    for g in coupled_groups(pruned, ctx.example_input):
        assert g.channels % 4 == 0, g
    assert {g.channels for g in coupled_groups(pruned, ctx.example_input)} == {12, 24, 44}


def test_cut_filters_removes_the_given_indices() -> None:
    ctx = _ctx()
    model = create_model("test_resnet")
    pruned = cut_filters(model, ctx.example_input, {"layer1.0.conv2": [0, 2]})
    for name in ("conv1", "layer1.0.conv2"):  # a member's indices apply to its whole group
        assert torch.equal(pruned.get_submodule(name).weight,
                           model.get_submodule(name).weight[[1, 3]])
    assert torch.equal(pruned.layer1[0].conv1.weight, model.layer1[0].conv1.weight[:, [1, 3]])


def test_per_layer_ratio_applies_to_group_and_global_fills_rest() -> None:
    ctx = _ctx()
    cfg = PruningConfig("l1", ratios={"layer1.0.conv2": 0.5}, global_ratio=0.25)
    pruned = get_method("l1").apply(create_model("test_resnet"), cfg, ctx)
    got = {g.name: g.channels for g in coupled_groups(pruned, ctx.example_input)}
    assert got["conv1"] == 2 and got["layer3.0.conv1"] == 12


def test_global_allocation_removes_the_requested_share() -> None:
    ctx = _ctx()
    model = create_model("resnet20")
    before = sum(g.channels for g in coupled_groups(model, ctx.example_input))
    pruned = get_method("fpgm").apply(model, _l1(0.4, allocation="global"), ctx)
    after = [g.channels for g in coupled_groups(pruned, ctx.example_input)]
    assert sum(after) == before - round(0.4 * before)
    assert len(set(after)) > 3  # not uniform


def test_iterative_steps_reach_the_one_shot_shape() -> None:
    ctx = _ctx()
    model = create_model("test_resnet")
    one = get_method("l1").apply(model, _l1(0.5), ctx)
    three = get_method("l1").apply(model, _l1(0.5, iterative_steps=3), ctx)
    assert one.prunebench_arch == three.prunebench_arch


def test_random_is_seeded() -> None:
    model = create_model("test_resnet")
    a = get_method("random").apply(model, PruningConfig("random", global_ratio=0.5), _ctx(seed=1))
    b = get_method("random").apply(model, PruningConfig("random", global_ratio=0.5), _ctx(seed=1))
    c = get_method("random").apply(model, PruningConfig("random", global_ratio=0.5), _ctx(seed=2))
    assert torch.equal(a.layer3[0].conv1.weight, b.layer3[0].conv1.weight)
    assert not torch.equal(a.layer3[0].conv1.weight, c.layer3[0].conv1.weight)


@pytest.mark.parametrize("cfg,match", [
    (_l1(0.95), "would remove all 8 channels"),
    (_l1(0.6, round_to=8), "would remove all"),
    (PruningConfig("l1", ratios={"conv9": 0.5}), "unknown prunable layer 'conv9'.*conv1, conv2"),
    (PruningConfig("l1", global_ratio=0.5, options={"target": "latency=2"}),
     "unknown option 'target' for method 'l1'; its options: allocation, bn_recalibrate"),
    (PruningConfig("l1", global_ratio=0.5, options={"round_to": 0}), "round_to=0"),
    (PruningConfig("l1", global_ratio=0.5, options={"allocation": "best"}), "allocation"),
    (PruningConfig("l1"), "needs a ratio"),
    (PruningConfig("l1", global_keep=0.5), "not keep-ratios"),
    (PruningConfig("l1", global_ratio=0.5, options={"finetune_epochs": 1}), "needs a data set"),
    (PruningConfig("l1", global_ratio=0.5, options={"bn_recalibrate": 4}), "needs a data set"),
    (PruningConfig("l1", global_ratio=0.5, options={"bn_recalibrate": -1}),
     "bn_recalibrate=-1 of method 'l1' must be an int >= 0"),
])
def test_user_errors(cfg: PruningConfig, match: str) -> None:
    with pytest.raises(PrunebenchError, match=match):
        get_method("l1").apply(create_model("test_convnet"), cfg, _ctx())


def test_ratio_outside_range_and_unknown_method() -> None:
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(PrunebenchError, match="outside"):
            PruningConfig("l1", global_ratio=bad)
    with pytest.raises(UnknownNameError, match="l1"):
        get_method("l2")


def test_conflicting_group_ratios_and_full_cut_raise() -> None:
    model, ctx = create_model("test_resnet"), _ctx()
    cfg = PruningConfig("l1", ratios={"conv1": 0.25, "layer1.0.conv2": 0.5})
    with pytest.raises(PrunebenchError, match="coupled"):
        get_method("l1").apply(model, cfg, ctx)
    with pytest.raises(PrunebenchError, match="all 4 channels"):
        cut_filters(model, ctx.example_input, {"conv1": [0, 1, 2, 3]})


def test_slimming_loss_hook_is_l1_of_bn_scales() -> None:
    model = create_model("test_convnet")
    want = 1e-3 * sum(m.weight.abs().sum() for m in model.modules()
                      if isinstance(m, nn.BatchNorm2d))
    assert torch.allclose(slimming_loss_hook(1e-3)(model, None, None, None), want)
    with pytest.raises(PrunebenchError, match="lambda"):
        slimming_loss_hook(-1.0)


@pytest.mark.slow
def test_finetune_with_kd_and_slimming_on_digits() -> None:
    from prunebench.harness.datasets import load_dataset
    from prunebench.harness.measure.accuracy import accuracy
    from prunebench.harness.train import Recipe, train_model

    splits = load_dataset("digits")
    torch.manual_seed(0)
    model = create_model("test_convnet", 10, splits.input_size[0])
    train_model(model, splits, Recipe(epochs=2, batch_size=64), progress=False)
    ctx = PruneContext(example_input=torch.zeros(1, *splits.input_size), splits=splits,
                       recipe=Recipe(epochs=1, batch_size=64), progress=False)
    no_ft = get_method("l1").apply(model, _l1(0.5), ctx)
    ft = get_method("l1").apply(model, _l1(0.5, finetune_epochs=1, kd=True), ctx)
    assert no_ft.prunebench_arch == ft.prunebench_arch
    assert accuracy(ft, splits.val).top1 > accuracy(no_ft, splits.val).top1
    abn = get_method("l1").apply(model, _l1(0.5, bn_recalibrate=8), ctx)  # adaptive BN
    assert abn.prunebench_arch == no_ft.prunebench_arch
    changed = [k for k, v in abn.state_dict().items() if not torch.equal(v, no_ft.state_dict()[k])]
    assert changed and all("running" in k or "num_batches" in k for k in changed)
    slim = PruningConfig("bn_scale", global_ratio=0.5,
                         options={"slimming_epochs": 1, "slimming_lambda": 1e-3})
    assert get_method("bn_scale").apply(model, slim, ctx).prunebench_arch == ft.prunebench_arch
