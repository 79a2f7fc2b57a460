"""Your own weights and models: every torchvision classifier by name, ``module:factory`` and
entry points, ``--weights`` (torchvision state_dicts, prunebench checkpoints), and the image
geometry a checkpoint records."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from prunebench.harness.errors import CheckpointError, PrunebenchError, UnknownNameError
from prunebench.harness.evaluate import Workload, prepare
from prunebench.harness.models import MODELS, create_model, nominal_input_size
from prunebench.harness.registry import Registry
from prunebench.harness.train import load_checkpoint, save_checkpoint
from prunebench.search.cli import main

USER_DIR = Path(__file__).resolve().parent / "user_models_pkg"
USER = "prunebench_user_nets:small_cnn"


@pytest.fixture()
def user_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The user's package importable, as an installed or PYTHONPATH package would be."""
    monkeypatch.syspath_prepend(str(USER_DIR))


def _one_line_error(capsys: pytest.CaptureFixture[str], *fragments: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith("prunebench: error: ") and len(err.strip().splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, err
    return err


# ------------------------------------------------------------------------------- torchvision
def test_every_torchvision_classifier_is_registered() -> None:
    import torchvision

    names = torchvision.models.list_models(module=torchvision.models)
    assert {f"tv_{n}" for n in names} == set(MODELS.list("tv_*"))
    assert nominal_input_size("tv_efficientnet_b3") == (3, 300, 300)  # torchvision's metadata
    assert nominal_input_size("tv_inception_v3", 1) == (1, 299, 299)


@pytest.mark.parametrize("name", ["tv_efficientnet_b0", "tv_densenet121", "tv_googlenet"])
def test_torchvision_models_train_and_run_with_random_weights(name: str) -> None:
    model = create_model(name, num_classes=7, in_channels=1)
    model.train()
    out = model(torch.randn(2, 1, 64, 64))  # one logits tensor also in train mode
    assert isinstance(out, torch.Tensor) and out.shape == (2, 7)


def test_torchvision_name_without_prefix_points_to_it() -> None:
    with pytest.raises(UnknownNameError, match="unknown model 'vgg16'; torchvision's vgg16 is "
                       "tv_vgg16"):
        create_model("vgg16")
    assert type(create_model("tv_vgg16", 10)).__name__ == "VGG"


# ------------------------------------------------------------------------------- user models
def test_module_factory_registers_on_first_use(user_path: None) -> None:
    model = create_model(USER, num_classes=5, in_channels=1)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 5)
    meta = MODELS.metadata(USER)
    assert meta["family"] == "user" and meta["input_size"] == (1, 32, 32)
    assert USER in MODELS.list()


@pytest.mark.parametrize(("name", "message"), [
    ("prunebench_no_such_module:f", "module 'prunebench_no_such_module' cannot be imported"),
    ("prunebench_user_nets:missing", "prunebench_user_nets has no callable 'missing'"),
    ("prunebench_user_nets:", "is not package.module:factory"),
    ("prunebench_user_nets:not_a_model", "returned str, not a torch.nn.Module"),
])
def test_bad_module_factory_is_one_line(user_path: None, name: str, message: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(PrunebenchError, match=message):
        create_model(name)
    assert main(["train", "--model", name, "--epochs", "1", "--quiet"]) == 2
    if "returned str" not in message:  # caught when the name is looked up, before any data
        _one_line_error(capsys, message)


def test_entry_points_register_models(tmp_path: Path, user_path: None,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from prunebench.harness import models

    dist = tmp_path / "mynets-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mynets\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[prunebench.models]\nmy_cnn = "
                                           "prunebench_user_nets:small_cnn\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg: Registry = Registry("model")
    reg.add_lazy(models._register_entry_points)
    assert reg.list() == ["my_cnn"]
    assert reg.metadata("my_cnn")["family"] == "user"
    assert reg.get("my_cnn")(num_classes=3, in_channels=1)(torch.randn(1, 1, 8, 8)).shape == (1, 3)


# ------------------------------------------------------------------------------- --weights
def test_a_torchvision_state_dict_that_does_not_fit_names_the_keys(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "resnet18.pth"
    torch.save(create_model("tv_resnet18", num_classes=1000).state_dict(), path)
    with pytest.raises(CheckpointError, match=r"shape mismatches: fc.weight \(1000, 512\) in the "
                       r"file vs \(10, 512\) in the model"):
        load_checkpoint(path, create_model("tv_resnet18", num_classes=10))
    assert main(["train", "--model", "tv_resnet18", "--weights", str(path), "--epochs", "1",
                 "--quiet"]) == 2  # digits: 10 classes, 1 channel
    _one_line_error(capsys, "conv1.weight (64, 3, 7, 7) in the file vs (64, 1, 7, 7)",
                    "fc.weight (1000, 512)")


def test_weights_of_another_network_name_missing_and_unexpected_keys(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "other.pt"
    torch.save(create_model("test_resnet", 10, 1).state_dict(), path)
    assert main(["train", "--model", "test_convnet", "--weights", str(path), "--quiet"]) == 2
    _one_line_error(capsys, "does not fit the model TinyConvNet", "missing keys: ",
                    "unexpected keys: ", "layer1.0.conv1.weight")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    assert main(["train", "--model", "test_convnet", "--weights", str(tmp_path / "junk.pt"),
                 "--quiet"]) == 2
    _one_line_error(capsys, "is truncated or corrupt")


def test_training_from_a_plain_state_dict(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(1)
    path = tmp_path / "start.pt"
    torch.save(create_model("test_convnet", 10, 1).state_dict(), path)
    base = ["train", "--model", "test_convnet", "--epochs", "1", "--quiet", "--json"]
    assert main(base) == 0
    scratch = json.loads(capsys.readouterr().out)
    assert main([*base, "--weights", str(path)]) == 0
    started = json.loads(capsys.readouterr().out)
    assert started["checkpoint"] != scratch["checkpoint"]  # the start is part of the key
    meta = torch.load(started["checkpoint"], weights_only=True)["meta"]
    assert meta["init_weights_file"] == str(path) and len(meta["init_weights"]) == 16
    model, info = load_checkpoint(path, create_model("test_convnet", 10, 1))
    assert info == {"weights_format": "state_dict"} and not model.training


# ------------------------------------------------------------------------------- geometry
def _checkpoint(path: Path, model: str, size: list[int]) -> Path:
    save_checkpoint(create_model(model, 10 if size[0] == 1 else 2, size[0]), path,
                    {"model": model, "num_classes": 10 if size[0] == 1 else 2,
                     "in_channels": size[0], "input_size": size})
    return path


def test_an_image_size_mismatch_is_refused(tmp_path: Path, assets: dict[str, str],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    ck = _checkpoint(tmp_path / "big.pt", "test_convnet", [1, 64, 64])
    with pytest.raises(CheckpointError, match="was made for 1x64x64 inputs, but the data is "
                       "1x32x32"):
        prepare(Workload("test_convnet", "digits", checkpoint=ck), progress=False)
    out = tmp_path / "sweep"
    assert main(["baseline", "--model", "test_convnet", "--dataset", "digits", "--checkpoint",
                 str(ck), "--ratios", "0.5", "--profile", assets["profile"], "--out", str(out),
                 "--quiet"]) == 2
    _one_line_error(capsys, "was made for 1x64x64 inputs, but the data is 1x32x32")
    assert not (out / "dense.json").exists()


def _image_folder(root: Path, side: int) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("val", 4)):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / cls / f"{i}.png")
    return root


def test_the_checkpoints_image_size_is_used_to_load_imagefolder(tmp_path: Path) -> None:
    data = _image_folder(tmp_path / "data", 56)
    ck = _checkpoint(tmp_path / "48.pt", "test_convnet", [3, 48, 48])
    prepared = prepare(Workload("test_convnet", "imagefolder", data_dir=data, checkpoint=ck),
                       progress=False)
    assert prepared.input_size == (3, 48, 48) and prepared.example_input.shape[-1] == 48
    with pytest.raises(CheckpointError, match="made for 3x48x48 inputs, but the data is 3x32x32"):
        prepare(Workload("test_convnet", "imagefolder", data_dir=data, checkpoint=ck,
                         image_size=32), progress=False)


# ------------------------------------------------------------------------------- end to end
def test_a_custom_model_is_pruned_measured_and_searched(
        user_path: None, tmp_path: Path, assets: dict[str, str],
        capsys: pytest.CaptureFixture[str]) -> None:
    ck = tmp_path / "user.pt"
    torch.manual_seed(0)
    save_checkpoint(create_model(USER, 10, 1), ck, {"model": USER, "num_classes": 10,
                                                    "in_channels": 1, "input_size": [1, 32, 32]})
    assert main(["measure", "--model", USER, "--dataset", "digits", "--checkpoint", str(ck),
                 "--method", "l1", "--ratio", "0.5", "--profile", assets["profile"],
                 "--quiet", "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    dense_params = sum(p.numel() for p in create_model(USER, 10, 1).parameters())
    assert m["model"] == USER and 0 < m["params"] < dense_params and m["latency_p50_ms"] > 0
    assert m["accuracy_top1"] is not None
    out = tmp_path / "search"
    assert main(["search", "--model", USER, "--dataset", "digits", "--weights", str(ck),
                 "--profile", assets["profile"], "--sampler", "random", "--warm-start", "0",
                 "--trials", "2", "--remeasure-max", "1", "--out", str(out), "--quiet",
                 "--json", "--train-device", "cpu"]) == 0
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 2 and (trials["state"] == "COMPLETE").all()
    assert (trials["model"] == USER).all() and (trials["params"] <= dense_params).all()
    config = json.loads((out / "config.json").read_text())
    assert config["args"]["train_runtime"]["device"] == "cpu"
    assert config["args"]["train_recipe"]["name"] == "digits"


def test_search_refuses_a_foreign_weights_file_before_any_work(
        tmp_path: Path, assets: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk.pt"
    torch.save({"epoch": 3}, junk)  # neither a checkpoint nor a state_dict
    out = tmp_path / "run"
    assert main(["search", "--model", "test_convnet", "--dataset", "digits", "--weights",
                 str(junk), "--profile", assets["profile"], "--trials", "1", "--out", str(out),
                 "--quiet"]) == 2
    _one_line_error(capsys, f"{junk} is not a prunebench checkpoint (state_dict + meta) nor a "
                    "plain state_dict")
    assert not out.exists()


def test_a_user_model_trains_into_a_portable_cache_name(
        user_path: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--model", USER, "--epochs", "1", "--quiet", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    path = Path(result["checkpoint"])
    assert path.name.startswith("prunebench_user_nets_small_cnn-digits-")  # no ':' in the name
    model, meta = load_checkpoint(path)  # rebuilt by importing the factory again
    assert meta["model"] == USER and type(model).__name__ == "SmallCNN"
