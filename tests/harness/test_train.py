"""Training loop, recipes and the checkpoint cache, on a tiny net and a digits subset."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

import prunebench.harness.train as train_mod
from prunebench.harness.datasets import DatasetSplits
from prunebench.harness.errors import CheckpointError, PrunebenchError
from prunebench.harness.measure.accuracy import accuracy
from prunebench.harness.models import create_model
from prunebench.harness.train import (
    DEFAULT_RECIPE,
    Recipe,
    get_base_model,
    load_checkpoint,
    recalibrate_batchnorm,
    save_checkpoint,
    train_model,
)

TINY = Recipe(epochs=1, batch_size=32, lr=0.05, seed=0)


@pytest.fixture(scope="module")
def small(digits) -> DatasetSplits:
    """128 train / 64 val / 64 test items of digits."""
    return dataclasses.replace(digits, train=digits.train.subset(range(128)),
                               val=digits.val.subset(range(64)),
                               test=digits.test.subset(range(64)))


def _net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("test_convnet", num_classes=10, in_channels=1)


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


def test_same_seed_gives_identical_weights(small: DatasetSplits) -> None:
    a, b, c, untrained = _net(), _net(), _net(), _net()
    rng_before = torch.random.get_rng_state()
    train_model(a, small, TINY, progress=False)
    train_model(b, small, TINY, progress=False)
    train_model(c, small, TINY.with_(seed=1), progress=False)
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # global RNG untouched
    assert _same(a, b) and not _same(a, c)
    assert not _same(a, untrained)  # it did train
    assert not a.training


@pytest.mark.slow
def test_training_learns_with_both_schedules_and_shift(small: DatasetSplits, digits) -> None:
    more = dataclasses.replace(small, train=digits.train.subset(range(512)))
    for recipe in (TINY.with_(epochs=6), TINY.with_(epochs=6, schedule="onecycle", shift=1)):
        model = train_model(_net(), more, recipe, progress=False)
        assert accuracy(model, more.val).top1 > 0.25  # chance is 0.1; the net is 8 wide


def test_hooks_callbacks_and_distillation(small: DatasetSplits) -> None:
    seen: list[tuple[int, bool]] = []
    calls = []

    def hook(model, x, out, y):
        calls.append((x.shape[0], out.shape, y.shape))
        return 1e-1 * sum(m.weight.abs().sum() for m in model.modules()
                          if isinstance(m, torch.nn.BatchNorm2d))

    plain = train_model(_net(), small, TINY.with_(epochs=2), progress=False)
    slim = train_model(_net(), small, TINY.with_(epochs=2), loss_hook=hook, progress=False,
                       epoch_callback=lambda e, m: seen.append((e, m.training)))
    assert seen == [(0, True), (1, True)] and len(calls) == 8
    assert calls[0] == (32, (32, 10), (32,))
    assert slim.bn1.weight.abs().sum() < plain.bn1.weight.abs().sum()
    distilled = train_model(_net(), small, TINY, teacher=plain, kd_alpha=0.9, progress=False)
    assert not _same(distilled, train_model(_net(), small, TINY, progress=False))
    logits = torch.randn(4, 10)
    assert float(train_mod._kd_loss(logits, logits, 4.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(train_mod._kd_loss(logits, -logits, 4.0)) > 0


def test_callback_may_stop_training_and_divergence_is_reported(small: DatasetSplits) -> None:
    class Stop(Exception):
        pass

    def stop(epoch, model):
        raise Stop

    with pytest.raises(Stop):
        train_model(_net(), small, TINY.with_(epochs=3), epoch_callback=stop, progress=False)
    with pytest.raises(PrunebenchError, match="training diverged .* lower the learning rate"):
        train_model(_net(), small, TINY, progress=False,
                    loss_hook=lambda *a: torch.tensor(float("nan")))


def test_recipe_key_and_validation() -> None:
    assert Recipe().key == DEFAULT_RECIPE.key and len(DEFAULT_RECIPE.key) == 10
    assert TINY.key != TINY.with_(seed=1).key
    assert TINY.to_dict()["batch_size"] == 32
    with pytest.raises(PrunebenchError, match="recipe field schedule = 'linear' must be one of "
                       "cosine, onecycle, step"):
        Recipe(schedule="linear")
    with pytest.raises(PrunebenchError, match="recipe field lr = 0 must be a number > 0"):
        Recipe(lr=0)


def test_checkpoint_round_trip_and_errors(small: DatasetSplits, tmp_path: Path) -> None:
    model = train_model(_net(), small, TINY, progress=False)
    path = tmp_path / "sub" / "m.pt"
    save_checkpoint(model, path, {"model": "test_convnet", "num_classes": 10, "in_channels": 1})
    assert [p.name for p in path.parent.iterdir()] == ["m.pt"]  # no temporary file left
    loaded, meta = load_checkpoint(path)  # rebuilt from the metadata
    assert _same(loaded, model) and meta["model"] == "test_convnet" and not loaded.training
    with pytest.raises(CheckpointError, match="does not fit the model"):
        load_checkpoint(path, create_model("test_resnet", 10, 1))
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(CheckpointError, match=f"checkpoint {path} is truncated or corrupt"):
        load_checkpoint(path, _net())
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="is not a prunebench checkpoint"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_cache_reuses_checkpoint(small: DatasetSplits, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    first, path = get_base_model("test_convnet", "digits", small, TINY, progress=False)
    assert path.parent.parent == Path(train_mod.default_cache_dir()) and path.is_file()

    def no_training(*args, **kwargs):
        raise AssertionError("the cached checkpoint should have been used")

    monkeypatch.setattr(train_mod, "train_model", no_training)
    again, path2 = get_base_model("test_convnet", "digits", small, TINY, progress=False)
    assert path2 == path and _same(first, again) and not again.training
    monkeypatch.undo()
    _, other = get_base_model("test_convnet", "digits", small, TINY.with_(seed=3),
                              cache_dir=tmp_path, progress=False)
    assert other.parent == tmp_path / "checkpoints" and other.name != path.name


def test_corrupt_cache_entry_is_moved_aside_and_retrained(
        small: DatasetSplits, capsys: pytest.CaptureFixture[str]) -> None:
    first, path = get_base_model("test_convnet", "digits", small, TINY, progress=False)
    path.write_bytes(path.read_bytes()[:200])
    model, path2 = get_base_model("test_convnet", "digits", small, TINY, progress=False)
    err = capsys.readouterr().err
    assert path2 == path and path.with_name(path.name + ".corrupt").is_file()
    assert f"prunebench: warning: checkpoint {path} is truncated or corrupt" in err
    assert "moved it aside" in err and "Traceback" not in err
    assert _same(model, first)  # retrained deterministically
    assert _same(load_checkpoint(path, _net())[0], first)


def test_recalibrate_batchnorm_replaces_statistics_with_the_batch_average(
        small: DatasetSplits) -> None:
    net = _net().eval()
    bn = next(m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    conv = net.conv1  # followed by bn1, the first BatchNorm
    bn.running_mean.fill_(5.0)
    weights = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k
               and "num_batches" not in k}
    momentum = bn.momentum
    recalibrate_batchnorm(net, small, batches=2, batch_size=32, seed=0)
    assert not net.training and bn.momentum == momentum
    assert all(torch.equal(net.state_dict()[k], v) for k, v in weights.items())
    loader = train_mod.make_loader(small.train, 32, shuffle=True, seed=0, drop_last=True)
    with torch.no_grad():
        means = [conv(x).mean((0, 2, 3)) for x, _ in list(loader)[:2]]
    torch.testing.assert_close(bn.running_mean, torch.stack(means).mean(0), atol=1e-5,
                               rtol=1e-4)
