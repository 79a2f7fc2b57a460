"""AntiDote specifics: targeted dropout, the fast variant's decisions, BN folding, finetune CLI."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from prunebench.harness.errors import PrunebenchError
from prunebench.harness.measure.flops import effective_macs
from prunebench.harness.models import create_model
from prunebench.harness.pruning import PruneContext, PruningConfig, get_method
from prunebench.harness.pruning.dynamic.fast_blocks import (
    FastBasicBlock,
    calibrate_widths,
    fit_predictor,
)
from prunebench.harness.pruning.dynamic.folding import fold_batchnorm
from prunebench.harness.pruning.dynamic.training import TargetedDropout, parse_targeted_dropout

pytestmark = pytest.mark.filterwarnings("ignore:no data set given")
X = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(2))


def _fast(keep: float, mode: str = "fast", **options: object) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = PruningConfig("antidote_fast", global_keep=keep, exec_mode=mode, options=options)
    return get_method("antidote_fast").apply(create_model("test_resnet").eval(), cfg,
                                             PruneContext(X[:1]))


def test_fold_batchnorm_is_exact() -> None:
    model = create_model("resnet20").eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 2.0)
            m.bias.data.uniform_(-0.5, 0.5)
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        torch.testing.assert_close(folded(X), model(X), atol=1e-4, rtol=1e-4)


def test_fast_answer_independent_of_batch() -> None:
    net = _fast(0.5)
    with torch.no_grad():
        together = net(X)
        alone = torch.cat([net(X[i:i + 1]) for i in range(len(X))])
    torch.testing.assert_close(alone, together, atol=1e-5, rtol=1e-5)
    ref = _fast(0.5, "masked")
    with torch.no_grad():
        torch.testing.assert_close(alone, ref(X), atol=1e-5, rtol=1e-5)


def test_fast_widths_are_rounded_and_macs_counted() -> None:
    net = _fast(0.5, round_to=2, widths=3)
    widths = net.prunebench_dynamic["widths"]
    assert all(w % 2 == 0 or w == 1 for ws in widths.values() for w in ws)
    assert all(len(ws) <= 3 for ws in widths.values())
    assert net.prunebench_dynamic["bn_folded"] is True
    assert effective_macs(net, [X]).mean < effective_macs(_fast(1.0), [X]).mean


def test_fast_decision_numpy_path_matches_the_torch_path_and_the_predictor() -> None:
    net = _fast(0.5, round_to=1, widths=4)
    blocks = [m for m in net.modules() if isinstance(m, FastBasicBlock) and m.predict]
    assert blocks
    gen = torch.Generator().manual_seed(3)
    for b in blocks:
        x = torch.rand(6, b.w1.shape[1], 8, 8, generator=gen)
        with torch.no_grad():
            cpu = b._counts(x)  # NumPy on the CPU
            scores = F.linear(x.mean((2, 3)), b.pw, b.pb)  # the predictor as fitted
        assert cpu == b._counts(x.clone().requires_grad_(True))  # the PyTorch form
        assert cpu == (scores >= b.tau).sum(1).tolist()


def test_fast_hot_references_follow_loaded_moved_and_copied_weights() -> None:
    import copy

    net = _fast(0.5, round_to=1, widths=4)
    b = next(m for m in net.modules() if isinstance(m, FastBasicBlock) and m.predict)
    x = torch.rand(1, b.w1.shape[1], 8, 8, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        before = b.width_index(x)
        assert before == b.lut[b._counts(x)[0]]  # the inlined batch-1 row is _counts' row
        twin = copy.deepcopy(b)
        state = {k: v.clone() for k, v in b.state_dict().items()}
        state["thr"].fill_(-1e9)  # every channel reaches it: the widest width
        b.load_state_dict(state)
        assert b.width_index(x) == len(b.widths) - 1
        assert twin.width_index(x) == before  # the copy keeps its own constants
        state["thr"].fill_(1e9)  # no channel does: the smallest width
        twin.load_state_dict(state)
        assert twin.width_index(x) == 0
        ref = net(X)
        wide = copy.deepcopy(net).double()  # moved buffers: the packed weights follow
        torch.testing.assert_close(wide(X.double()).float(), ref, atol=1e-4, rtol=1e-4)


def test_fast_params_count_the_weights_not_the_packed_copies() -> None:
    from prunebench.harness.measure.memory import count_params

    dense = count_params(fold_batchnorm(create_model("test_resnet").eval()))
    assert count_params(_fast(1.0)) == dense  # the same weights, BN folded alike
    net = _fast(0.5)
    predictors = sum(m.pw.numel() + m.pb.numel() for m in net.modules()
                     if isinstance(m, FastBasicBlock) and hasattr(m, "pw"))
    assert predictors and count_params(net) == dense + predictors
    assert not any(p.requires_grad for m in net.modules() if isinstance(m, FastBasicBlock)
                   for p in m.parameters())  # frozen: the engine is inference only


def test_fast_single_width_block_skips_the_decision_and_its_macs() -> None:
    block = create_model("test_resnet").eval().layer1[0]
    c = block.conv1.out_channels
    pred = (torch.randn(c, block.conv1.in_channels), torch.randn(c))
    one = FastBasicBlock(block, torch.arange(c), pred, 0.0, [c // 2], "fast")
    two = FastBasicBlock(block, torch.arange(c), pred, 0.0, [c // 2, c], "fast")
    assert not one.predict and two.predict
    x = torch.randn(3, block.conv1.in_channels, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(one(x), one._run_width(x, 0))
    extra = block.conv1.in_channels * 64 + block.conv1.in_channels * c  # mean + linear
    assert effective_macs(two, [x]).mean >= effective_macs(one, [x]).mean + extra


def test_fit_predictor_recovers_linear_map() -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(200, 6, generator=gen)
    p_true = torch.randn(4, 6, generator=gen)
    p, b = fit_predictor(a, a @ p_true.T + 0.5, ridge=1e-9)
    torch.testing.assert_close(p, p_true, atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(b, torch.full((4,), 0.5), atol=1e-3, rtol=1e-3)


def test_calibrate_widths_hits_keep() -> None:
    scores = torch.rand(300, 16, generator=torch.Generator().manual_seed(0))
    tau, widths = calibrate_widths(scores, 0.5, 4, 4)
    k = (scores >= tau).sum(1).clamp(min=1)
    q = torch.tensor(widths)[torch.searchsorted(torch.tensor(widths), k).clamp(max=len(widths) - 1)]
    assert abs(q.double().mean().item() / 16 - 0.5) < 0.1
    assert widths == sorted(widths) and all(w % 4 == 0 for w in widths)


def test_fast_rejects_plain_chains_and_exact_rejects_fast() -> None:
    cfg = PruningConfig("antidote_fast", global_keep=0.5, exec_mode="fast")
    with pytest.raises(PrunebenchError, match="basic blocks"):
        get_method("antidote_fast").apply(create_model("test_convnet"), cfg, PruneContext(X[:1]))
    cfg = PruningConfig("antidote", global_keep=0.5, exec_mode="fast")
    with pytest.raises(PrunebenchError, match="antidote_fast"):
        get_method("antidote").apply(create_model("test_resnet"), cfg, PruneContext(X[:1]))
    cfg = PruningConfig("antidote", global_keep=0.5, options={"columns": 0.0})
    with pytest.raises(PrunebenchError, match="columns"):
        get_method("antidote").apply(create_model("test_resnet"), cfg, PruneContext(X[:1]))


def test_targeted_dropout_only_in_training() -> None:
    torch.manual_seed(0)
    model = create_model("test_resnet")
    td = TargetedDropout(model, gamma=0.5, alpha=1.0)
    seen: list[torch.Tensor] = []
    hook = model.layer1[0].conv2.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    model.train()
    model(X)
    zeros = (seen[-1].abs().sum((2, 3)) == 0).sum(1)
    assert (zeros >= 2).all()  # gamma 0.5 of 4 channels, alpha 1: 2 dropped per input
    model.eval()
    model(X)
    td.remove()
    hook.remove()
    with torch.no_grad():
        ref = model(X)
    td2 = TargetedDropout(model, gamma=0.5, alpha=1.0)
    with torch.no_grad():
        torch.testing.assert_close(model(X), ref)  # eval mode: no effect
    td2.remove()


def test_parse_targeted_dropout() -> None:
    assert parse_targeted_dropout("gamma=0.75,alpha=0.25") == {
        "gamma": 0.75, "alpha": 0.25, "columns": 0.0}
    with pytest.raises(PrunebenchError, match="gamma=0.5"):
        parse_targeted_dropout("gama=0.5")
    with pytest.raises(PrunebenchError, match="outside"):
        TargetedDropout(create_model("test_resnet"), gamma=1.5, alpha=0.5)


@pytest.mark.slow
def test_finetune_cli(tmp_path: object) -> None:
    import json
    from pathlib import Path

    from prunebench.search.cli import main

    out = Path(str(tmp_path)) / "ft.pt"
    base = Path(str(tmp_path)) / "base.pt"
    from prunebench.harness.datasets import load_dataset
    from prunebench.harness.train import save_checkpoint

    splits = load_dataset("digits")
    save_checkpoint(create_model("test_resnet", 10, 1), base,
                    {"model": "test_resnet", "num_classes": 10, "in_channels": 1})
    assert splits.input_size[0] == 1
    code = main(["finetune", "--model", "test_resnet", "--dataset", "digits", "--checkpoint",
                 str(base), "--method", "antidote", "--targeted-dropout", "gamma=0.5,alpha=0.5",
                 "--epochs", "1", "--out", str(out), "--quiet"])
    assert code == 0 and out.exists()
    assert main(["finetune", "--model", "test_resnet", "--dataset", "digits", "--method",
                 "antidote", "--epochs", "1"]) == 2
    del json


def test_targeted_dropout_sampled_and_calibrated_order() -> None:
    torch.manual_seed(0)
    model = create_model("test_resnet")
    model.train()
    seen: list[torch.Tensor] = []
    hook = model.layer1[0].conv2.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    td = TargetedDropout(model, gamma=1.0, alpha=1.0, sample=True, seed=1)
    model(torch.randn(64, *X.shape[1:]))
    dropped = (seen[-1].abs().sum((2, 3)) == 0).sum(1)
    assert dropped.min() < dropped.max()  # each input draws its own fraction
    td.remove()
    td = TargetedDropout(model, gamma=0.5, alpha=1.0, order="calibrated")
    model(X)
    kept = seen[-1].abs().sum((2, 3)) != 0
    order = td.running[id(model.layer1[0].relu1)].argsort(descending=True)
    c = kept.shape[1]
    assert kept[:, order[:c // 2]].all() and not kept[:, order[c // 2:]].any()  # a prefix
    td.remove()
    hook.remove()
    with pytest.raises(PrunebenchError, match="calibrated"):
        TargetedDropout(model, gamma=0.5, alpha=0.5, order="random")
    assert parse_targeted_dropout("gamma=0.75,alpha=1,sample=1")["sample"] == 1.0


def test_targeted_dropout_on_block_inputs_spares_the_shortcut() -> None:
    """inputs=True: each block's conv1 sees its input with the lowest-attention channels
    dropped (training only); the block's shortcut and the previous block see them whole."""
    torch.manual_seed(0)
    model = create_model("test_resnet").train()
    into_conv1: list[torch.Tensor] = []
    into_block: list[torch.Tensor] = []
    td = TargetedDropout(model, gamma=0.5, alpha=1.0, inputs=True)  # its pre-hook runs first
    hooks = [model.layer2[0].conv1.register_forward_pre_hook(
                 lambda m, a: into_conv1.append(a[0])),
             model.layer2[0].register_forward_pre_hook(lambda m, a: into_block.append(a[0]))]
    model(X)
    assert ((into_conv1[-1].abs().sum((2, 3)) == 0).sum(1) >= 2).all()  # 2 of 4 per input
    live = into_block[-1].abs().sum((2, 3)) != 0
    assert (into_conv1[-1][~live[:, :, None, None].expand_as(into_conv1[-1])] == 0).all()
    kept = into_conv1[-1].abs().sum((2, 3)) != 0
    assert (kept <= live).all() and kept.sum() < live.sum()
    model.eval()
    model(X)
    assert torch.equal(into_conv1[-1], into_block[-1])  # eval: nothing dropped
    td.remove()
    for h in hooks:
        h.remove()
    assert parse_targeted_dropout("gamma=0.5,alpha=1,inputs=1")["inputs"] == 1.0
    with pytest.raises(PrunebenchError, match="inputs=1"):
        TargetedDropout(model, gamma=0.5, alpha=1.0, order="calibrated", inputs=True)
