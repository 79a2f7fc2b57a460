"""AAP as its paper: the stop at the third reset after a good round, and the averaging order."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from prunebench.harness.datasets import DatasetSplits
from prunebench.harness.models import create_model
from prunebench.harness.pruning import PruneContext, PruningConfig, get_method
from prunebench.harness.pruning.static import aap_policy
from prunebench.harness.pruning.static.attention_scores import filter_attention
from prunebench.harness.pruning.static.cut import coupled_groups

X1 = torch.zeros(1, 1, 32, 32)


# ----------------------------------------------------------------------------- averaging order
class _Images(Dataset):
    """Fixed images with label 0."""

    def __init__(self, images: list[torch.Tensor]) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], 0


def _identity_then_consumer() -> nn.Module:
    """conv (1 -> 2 channels, x1 and x3) -> ReLU -> consumer conv: the scored tensor is known."""
    net = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.ReLU(), nn.Conv2d(2, 3, 1))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([1.0, 3.0]).view(2, 1, 1, 1))
    return net.eval()


@pytest.mark.parametrize("batch_size", [1, 2])  # one batch, or the examples in two batches
def test_power_is_applied_after_averaging_over_the_examples(batch_size: int) -> None:
    # image 1 is 2 at one of its four positions, image 2 is all zero: channel 0 reads these,
    # channel 1 three times them
    one = torch.zeros(1, 2, 2)
    one[0, 0, 0] = 2.0
    data = _Images([one, torch.zeros(1, 2, 2)])
    net = _identity_then_consumer()
    groups = [g for g in coupled_groups(net, one[None]) if g.name == "0"]
    got = filter_attention(net, groups, data, p=2.0, batch_size=batch_size)["0"]
    # example mean [[1, 0], [0, 0]] (x3 for channel 1), squared, then the mean over positions
    mean_then_power = torch.tensor([1.0 / 4, 9.0 / 4])
    power_then_mean = torch.tensor([4.0 / 8, 36.0 / 8])  # the order before issue 24
    spatial_mean_first = torch.tensor([(1.0 / 4) ** 2, (3.0 / 4) ** 2])
    torch.testing.assert_close(got, mean_then_power)
    assert not torch.allclose(got, power_then_mean)
    assert not torch.allclose(got, spatial_mean_first)
    # with p = 1 every order agrees: the mean |A|
    torch.testing.assert_close(filter_attention(net, groups, data, p=1.0)["0"],
                               torch.tensor([2.0 / 8, 6.0 / 8]))


# ----------------------------------------------------------------------------- reset rule
def _marked_convnet() -> nn.Module:
    """test_convnet whose BatchNorm scales are 40 distinct half-integers 0.5 .. 39.5, spread over
    its three groups (8, 16, 16 filters), so a fake attention can read each filter's score back
    from the network after any cut."""
    torch.manual_seed(0)
    net = create_model("test_convnet", 10, 1).eval()
    values = [v + 0.5 for v in range(40)]
    conv1 = values[2::5]  # every fifth: no group runs out of filters in these tests
    rest = [v for v in values if v not in conv1]
    with torch.no_grad():
        net.bn1.weight.copy_(torch.tensor(conv1))
        net.bn2.weight.copy_(torch.tensor(rest[0::2]))
        net.bn3.weight.copy_(torch.tensor(rest[1::2]))
    return net


def _scripted(monkeypatch: pytest.MonkeyPatch, val_top1: list[float]) -> list[int]:
    """Make AAP's rounds read scores from the BN marks (equal group shares, so group thresholds
    are all ``T x median``) and val top-1 from ``val_top1`` in call order (the first is dense).
    Returns the list that counts the measurements."""
    from prunebench.harness.measure.memory import count_params

    calls: list[int] = []

    def fake_attention(model, groups, data, p=1.0, batch_size=128):  # noqa: ANN001, ANN202
        return {g.name: model.get_submodule(g.norms[0]).weight.detach().abs().clone()
                for g in groups}

    def fake_shares(model, groups, example_input, by="params"):  # noqa: ANN001, ANN202
        return {g.name: 1.0 / len(groups) for g in groups}

    def fake_measure(net, ctx, latency, dense=None):  # noqa: ANN001, ANN202
        calls.append(len(calls))
        if len(calls) > len(val_top1):
            raise AssertionError(f"round {len(calls) - 1} was measured: the policy should have "
                                 "stopped")
        return {"params": count_params(net), "macs": 0, "val_top1": val_top1[len(calls) - 1],
                "latency_p50_ms": None}

    monkeypatch.setattr(aap_policy, "filter_attention", fake_attention)
    monkeypatch.setattr(aap_policy, "group_shares", fake_shares)
    monkeypatch.setattr(aap_policy, "_measure", fake_measure)
    return calls


def _run(digits, **options) -> nn.Module:  # noqa: ANN001
    splits = DatasetSplits("digits-tiny", digits.train.subset(range(32)),
                           digits.val.subset(range(32)), digits.test, 10, (1, 32, 32))
    # median mark 20: step 0.4 raises every group's threshold by 8 marks, 4 after a reset, ...
    cfg = PruningConfig("aap", options={"target": "accuracy-loss=1", "step": 0.4,
                                        "min_step": 1e-6, "max_rounds": 20, "round_epochs": 0,
                                        "calibration_samples": 8, **options})
    ctx = PruneContext(example_input=X1, splits=splits, progress=False)
    return get_method("aap").apply(_marked_convnet(), cfg, ctx)


def _kept_marks(net: nn.Module) -> list[float]:
    return sorted(torch.cat([net.bn1.weight, net.bn2.weight, net.bn3.weight]).tolist())


def test_stops_at_the_third_reset_after_a_good_round(digits, monkeypatch) -> None:
    # dense, then: good (T 0.4: marks < 8 cut), reset (T 0.8), reset (0.6), reset (0.5): stop
    calls = _scripted(monkeypatch, [0.9, 0.9, 0.5, 0.5, 0.5])
    pruned = _run(digits)
    actions = [r["action"] for r in pruned.prunebench_aap["rounds"]]
    assert actions == ["dense", "accepted", "rejected", "rejected", "rejected",
                       "stop: 3 resets in a row after good round 1"]
    assert len(calls) == 5  # no fourth reset was tried, though max_rounds and step allowed it
    assert [round(r["t"], 6) for r in pruned.prunebench_aap["rounds"][1:5]] == [0.4, 0.8, 0.6,
                                                                                 0.5]
    assert _kept_marks(pruned) == [v + 0.5 for v in range(8, 40)]  # the good round's network


def test_a_good_round_starts_the_count_again(digits, monkeypatch) -> None:
    # good, reset, good (T 0.6), then three resets (T 0.8, 0.7, 0.65): stop after 7 measurements
    calls = _scripted(monkeypatch, [0.9, 0.9, 0.5, 0.9, 0.5, 0.5, 0.5])
    pruned = _run(digits)
    actions = [r["action"] for r in pruned.prunebench_aap["rounds"]]
    assert actions == ["dense", "accepted", "rejected", "accepted", "rejected", "rejected",
                       "rejected", "stop: 3 resets in a row after good round 3"]
    assert len(calls) == 7
    assert _kept_marks(pruned) == [v + 0.5 for v in range(12, 40)]  # round 3 cut marks < 12


def test_max_resets_sets_how_many(digits, monkeypatch) -> None:
    calls = _scripted(monkeypatch, [0.9, 0.9, 0.5])
    pruned = _run(digits, max_resets=1)
    assert pruned.prunebench_aap["rounds"][-1]["action"] == (
        "stop: 1 resets in a row after good round 1")
    assert len(calls) == 3


def test_max_resets_is_validated() -> None:
    from prunebench.harness.errors import PrunebenchError
    from prunebench.harness.pruning.static.aap_policy import AapSettings

    assert AapSettings.from_options({"target": "params=0.5"}).max_resets == 3
    with pytest.raises(PrunebenchError, match=r"option max_resets=0 of method 'aap' must be an "
                                              r"int >= 1"):
        AapSettings.from_options({"target": "params=0.5", "max_resets": 0})
