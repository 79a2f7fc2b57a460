"""Recipes as data: the shipped TOML files, validation naming the field, the cache key, and
augmentation applied to training batches only."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from prunebench.harness.augment import build_augmenter
from prunebench.harness.datasets import DatasetSplits, make_loader
from prunebench.harness.errors import PrunebenchError
from prunebench.harness.measure.accuracy import accuracy
from prunebench.harness.models import create_model
from prunebench.harness.recipes import RECIPES, load_recipe
from prunebench.harness.train import DEFAULT_RECIPE, Recipe, get_base_model, train_model
from prunebench.search.cli import main

# Recipe.key of the default recipe when checkpoints were first cached (before recipe files):
# a changed key would silently retrain every user's cached base model.
LEGACY_DEFAULT_KEY = "ba84973841"


@pytest.fixture(scope="module")
def small(digits: DatasetSplits) -> DatasetSplits:
    return replace(digits, train=digits.train.subset(range(128)),
                   val=digits.val.subset(range(64)))


def _write(tmp_path: Path, text: str, name: str = "mine.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_shipped_recipes_load_and_digits_is_the_old_default() -> None:
    assert {"digits", "cifar-resnet", "cifar-finetune", "imagenet-resnet"} <= set(RECIPES.list())
    for name in RECIPES.list():
        assert load_recipe(name).name == name and RECIPES.metadata(name)["description"]
    digits = load_recipe("digits")
    assert digits == DEFAULT_RECIPE and digits.key == DEFAULT_RECIPE.key == LEGACY_DEFAULT_KEY
    assert Recipe(**digits.to_dict()) == digits  # to_dict round-trips (config.json, replay)


def test_cifar_resnet_is_the_resnet_papers_recipe() -> None:
    r = load_recipe("cifar-resnet")
    assert (r.lr, r.momentum, r.weight_decay, r.batch_size) == (0.1, 0.9, 1e-4, 128)
    assert (r.schedule, r.milestones, r.gamma, r.nesterov) == ("step", (91, 136), 0.1, False)
    assert (r.crop_padding, r.hflip, r.resized_crop_min_scale) == (4, True, 0.0)
    im = load_recipe("imagenet-resnet")
    assert im.resized_crop_min_scale == 0.08 and im.hflip and im.crop_padding == 0
    assert len({load_recipe(n).key for n in RECIPES.list()}) == len(RECIPES.list())


@pytest.mark.parametrize(("text", "message"), [
    ("lr = -1", "recipe field lr = -1 must be a number > 0"),
    ("epochs = 2.5", "recipe field epochs = 2.5 must be a whole number >= 0"),
    ('schedule = "linear"', "recipe field schedule = 'linear' must be one of cosine"),
    ("hflip = 1", "recipe field hflip = 1 must be true or false"),
    ('schedule = "step"', "recipe field milestones is empty but schedule = \"step\""),
    ("milestones = [5, 3]\nschedule = \"step\"", "recipe field milestones = (5, 3) must be "
     "increasing"),
    ("crop_padding = 4\nresized_crop_min_scale = 0.1", "crop_padding and "
     "resized_crop_min_scale are two kinds of random crop"),
    ("learning_rate = 0.1", "unknown field 'learning_rate'; the fields are epochs"),
    ("lr = ", "is not valid TOML"),
])
def test_bad_recipe_files_name_the_field(tmp_path: Path, text: str, message: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, text + "\n")
    with pytest.raises(PrunebenchError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[")):
        load_recipe(path)
    assert main(["train", "--model", "test_convnet", "--recipe-file", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"prunebench: error: recipe {path}: ") or "not valid TOML" in err
    assert len(err.strip().splitlines()) == 1


def test_unknown_recipe_names_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(PrunebenchError, match="unknown recipe 'cifar'; known recipes: "
                       "cifar-finetune, cifar-resnet, digits"):
        load_recipe("cifar")
    with pytest.raises(PrunebenchError, match="recipe file .*missing.toml does not exist"):
        load_recipe(tmp_path / "missing.toml")


def test_a_recipe_file_changes_the_checkpoint_key(small: DatasetSplits, tmp_path: Path) -> None:
    base = DEFAULT_RECIPE.with_(epochs=1)
    _, plain = get_base_model("test_convnet", "digits", small, base, progress=False)
    same = load_recipe(_write(tmp_path, "epochs = 1\n", "same.toml"))
    _, again = get_base_model("test_convnet", "digits", small, same, progress=False)
    assert again == plain  # the same numbers under another name: the same checkpoint
    flip = load_recipe(_write(tmp_path, "epochs = 1\nhflip = true\n", "flip.toml"))
    _, other = get_base_model("test_convnet", "digits", small, flip, progress=False)
    assert other != plain and flip.key != base.key
    meta = torch.load(other, weights_only=True)["meta"]
    assert meta["recipe"]["hflip"] is True and meta["recipe"]["name"] == "flip"


def test_step_schedule_drops_at_the_milestones(small: DatasetSplits,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    lrs: list[float] = []
    recipe = DEFAULT_RECIPE.with_(epochs=3, batch_size=64, schedule="step", milestones=(1, 2),
                                  gamma=0.5)
    orig = torch.optim.SGD.step

    def step(self, *a, **k):  # the rate each optimiser step uses
        lrs.append(self.param_groups[0]["lr"])
        return orig(self, *a, **k)

    monkeypatch.setattr(torch.optim.SGD, "step", step)
    train_model(create_model("test_convnet", 10, 1), small, recipe, progress=False)
    assert lrs == pytest.approx([0.05, 0.05, 0.025, 0.025, 0.0125, 0.0125])


def test_crop_and_flip_apply_to_training_batches_only(small: DatasetSplits) -> None:
    """What the model sees in training differs from the stored batch (and stays in range of
    the padded crop); evaluation sees the stored images unchanged."""
    recipe = DEFAULT_RECIPE.with_(epochs=1, batch_size=64, crop_padding=4, hflip=True)
    raw = [x for x, _ in make_loader(small.train, 64, shuffle=True, seed=recipe.seed,
                                     drop_last=True)]
    seen: list[torch.Tensor] = []
    model = create_model("test_convnet", 10, 1)
    train_model(model, small, recipe, progress=False,
                loss_hook=lambda m, x, out, y: seen.append(x.detach().clone()))
    assert len(seen) == len(raw) and all(s.shape == r.shape for s, r in zip(seen, raw, strict=True))
    assert not any(torch.equal(s, r) for s, r in zip(seen, raw, strict=True))
    black = small.train.fill_value[0]
    padded = [(s == black).flatten(1).any(1) for s in seen]
    assert any(p.any() for p in padded)  # some crops reach into the black padding
    plain: list[torch.Tensor] = []
    train_model(create_model("test_convnet", 10, 1), small, DEFAULT_RECIPE.with_(
        epochs=1, batch_size=64), progress=False,
        loss_hook=lambda m, x, out, y: plain.append(x.detach().clone()))
    assert all(torch.equal(s, r) for s, r in zip(plain, raw, strict=True))  # untouched
    images, labels = small.val[list(range(len(small.val)))]
    with torch.no_grad():
        want = (model(images).argmax(1) == labels).float().mean().item()
    assert accuracy(model, small.val).top1 == pytest.approx(want)


def test_augmenter_is_seeded_and_leaves_the_global_rng_alone(small: DatasetSplits) -> None:
    recipe = DEFAULT_RECIPE.with_(crop_padding=4, hflip=True)
    x = small.train[list(range(8))][0]
    a = build_augmenter(recipe, (32, 32), small.train.fill_value)
    b = build_augmenter(recipe, (32, 32), small.train.fill_value)
    state = torch.get_rng_state()
    first = a(x)
    assert torch.equal(first, b(x))  # one seed, one stream
    assert torch.equal(torch.get_rng_state(), state)
    second = a(x)
    assert not torch.equal(first, second)  # the stream moves on: new crops for the next batch
    assert torch.equal(second, b(x))
    assert build_augmenter(DEFAULT_RECIPE, (32, 32), None) is None
    with pytest.raises(PrunebenchError, match="pads crops .* does not say which value a black "
                       "pixel has"):
        build_augmenter(recipe, (32, 32), None)
    crop = build_augmenter(DEFAULT_RECIPE.with_(resized_crop_min_scale=0.5), (24, 24), None)
    assert crop is not None and crop(x).shape == (8, 1, 24, 24)


def test_recipes_command_lists_and_shows(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["recipes", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["recipes"]}
    assert rows["digits"]["key"] == LEGACY_DEFAULT_KEY and rows["cifar-resnet"]["lr"] == 0.1
    assert main(["recipes", "cifar-resnet"]) == 0
    out = capsys.readouterr().out
    assert "random crop, 4-px padding" in out and "horizontal flip" in out
    assert main(["recipes", "nope"]) == 2
