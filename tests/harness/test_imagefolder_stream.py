"""imagefolder streamed from disk: the splits of the in-memory reader, lazily, through workers."""

from __future__ import annotations

import json
import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from prunebench.harness import dataformats as fmt
from prunebench.harness import streaming
from prunebench.harness.datasets import (
    TensorImageDataset,
    _build,
    _carve,
    load_dataset,
    make_loader,
)
from prunebench.harness.errors import DataError
from prunebench.harness.streaming import ImageFileDataset
from prunebench.search.cli import main

CLASSES = ("cat", "dog", "eel")


def _tree(root: Path, splits: dict[str, int], side: tuple[int, int] = (30, 44)) -> Path:
    """``splits[name]`` PNG images per class under ``root/name/<class>/``, each different."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, per_class in splits.items():
        for ci, cls in enumerate(CLASSES):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (*side, 3), dtype=np.uint8)
                pixels[..., ci] = 255  # a class signal in one channel
                Image.fromarray(pixels).save(folder / f"{i:03d}.png")
    return root


def _in_memory(root: Path, seed: int, size: int) -> dict[str, TensorImageDataset]:
    """What imagefolder was before it streamed: every image decoded into one tensor."""
    def read(sub: str) -> tuple[torch.Tensor, torch.Tensor]:
        paths, labels = fmt.list_image_files(root / sub, list(CLASSES))
        x = torch.from_numpy(np.stack([fmt.decode_image(root / sub / p, size) for p in paths]))
        return x.permute(0, 3, 1, 2).contiguous(), torch.tensor(labels)

    if (root / "test").is_dir():
        parts = {"train": read("train"), "val": read("val"), "test": read("test")}
    else:
        train = read("train")
        parts = _carve(*train, max(1, len(train[1]) // 10), seed)
        parts["test"] = read("val")
    s = _build("imagefolder", parts, len(CLASSES), seed, str(root))
    return {"train": s.train, "val": s.val, "test": s.test}


def _items(ds: object) -> torch.Tensor:
    return torch.stack([ds[i][0] for i in range(len(ds))])  # type: ignore[arg-type]


@pytest.mark.parametrize(("layout", "seed", "size"), [
    ({"train": 10, "val": 4}, 0, 32), ({"train": 10, "val": 4}, 3, 20),
    ({"train": 4, "val": 2, "test": 3}, 0, 24)])
def test_streamed_splits_equal_the_in_memory_ones(tmp_path: Path, layout: dict[str, int],
                                                  seed: int, size: int) -> None:
    root = _tree(tmp_path, layout)
    splits = load_dataset("imagefolder", root, seed=seed, image_size=size)
    reference = _in_memory(root, seed, size)
    assert splits.input_size == (3, size, size) and splits.class_names == CLASSES
    for name, want in reference.items():
        got = splits.split(name)
        assert isinstance(got, ImageFileDataset) and len(got) == len(want)
        assert torch.equal(got.labels, want.labels)
        assert torch.allclose(got.mean, want.mean) and torch.allclose(got.std, want.std)
        assert torch.allclose(_items(got), _items(want), atol=1e-5)
        assert got.fill_value == pytest.approx(want.fill_value)
    if "test" not in layout:  # val carved from train/, disjoint from what trains
        train = {got for got in map(str, map(splits.train.path, range(len(splits.train))))}
        val = {str(splits.val.path(i)) for i in range(len(splits.val))}
        assert not train & val and len(train | val) == 3 * layout["train"]


def test_loading_decodes_only_the_stats_sample(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    root = _tree(tmp_path, {"train": 10, "val": 4})
    decoded: list[Path] = []
    real = fmt.decode_image

    def counting(path: Path, size: int) -> np.ndarray:
        decoded.append(path)
        return real(path, size)

    monkeypatch.setattr(fmt, "decode_image", counting)
    monkeypatch.setattr(streaming, "STATS_SAMPLE", 5)
    splits = load_dataset("imagefolder", root, seed=1, image_size=16)
    assert len(decoded) == 5 and all("/train/" in str(p) for p in decoded)
    sample = torch.stack([torch.from_numpy(real(p, 16)).double() / 255 for p in decoded])
    assert torch.allclose(splits.train.mean.flatten(), sample.mean(dim=(0, 1, 2)).float())
    for ds in (splits.train, splits.val, splits.test):  # a file list, not pixels
        assert ds.files.dtype.kind == "S" and not hasattr(ds, "images")
        assert len(pickle.dumps(ds)) < 2000 + 40 * len(ds)
    decoded.clear()
    x, y = splits.test[4]
    assert decoded == [splits.test.path(4)] and x.shape == (3, 16, 16) and y == 1
    again = load_dataset("imagefolder", root, seed=1, image_size=16)
    assert torch.equal(again.train.mean, splits.train.mean)  # the sample is seeded


def test_make_loader_with_two_workers_gives_what_one_process_gives(tmp_path: Path) -> None:
    splits = load_dataset("imagefolder", _tree(tmp_path, {"train": 6, "val": 2}), image_size=16)
    for shuffle in (False, True):
        solo = list(make_loader(splits.train, 4, shuffle=shuffle, seed=7))
        pair = list(make_loader(splits.train, 4, shuffle=shuffle, seed=7, workers=2))
        assert len(solo) == len(pair) == 5  # 17 train images in batches of 4
        for (xa, ya), (xb, yb) in zip(solo, pair, strict=True):
            assert xa.dtype == torch.float32 and xa.shape[1:] == (3, 16, 16)
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    order = torch.cat([y for _, y in make_loader(splits.train, 4)])
    assert torch.equal(order, splits.train.labels)
    batch, labels = splits.train[[0, 5]]  # a batch by indices, as in-memory data sets give
    assert batch.shape == (2, 3, 16, 16) and labels.tolist() == splits.train.labels[[0, 5]].tolist()
    sub = splits.train.subset([2, 3])
    assert torch.equal(sub[1][0], splits.train[3][0]) and sub.fill_value == splits.train.fill_value


def test_a_corrupt_image_is_a_data_error_naming_it_when_read(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"train": 4, "val": 3})
    (root / "val" / "dog" / "001.png").write_bytes(b"not a png")
    good = (root / "val" / "eel" / "000.png").read_bytes()
    (root / "val" / "eel" / "001.png").write_bytes(good[:len(good) // 2])  # truncated
    splits = load_dataset("imagefolder", root, image_size=16)  # val/ is the test split
    with pytest.raises(DataError, match=r"cannot decode image .*val/dog/001\.png: .*replace it"):
        splits.test[4]
    with pytest.raises(DataError, match=r"cannot decode image .*val/eel/001\.png"):
        splits.test[7]
    with pytest.raises(DataError) as info:
        for _ in make_loader(splits.test, 3, workers=2):
            pass
    text = str(info.value)
    assert text.startswith("cannot decode image ") and "val/dog/001.png" in text
    assert len(text.splitlines()) == 1
    with pytest.raises(IndexError):
        splits.test[len(splits.test)]


def test_calibration_accuracy_and_timing_read_the_streamed_splits(tmp_path: Path) -> None:
    from prunebench.harness.evaluate import Workload, evaluate, prepare
    from prunebench.harness.models import create_model
    from prunebench.harness.profiles import TimingSettings, load_profile
    from prunebench.harness.pruning import PruningConfig
    from prunebench.harness.train import save_checkpoint

    root = _tree(tmp_path / "data", {"train": 6, "val": 3}, side=(24, 24))
    ck = tmp_path / "dense.pt"
    save_checkpoint(create_model("test_resnet", 3, 3), ck,
                    {"model": "test_resnet", "num_classes": 3, "in_channels": 3,
                     "input_size": [3, 24, 24]})
    prepared = prepare(Workload("test_resnet", "imagefolder", data_dir=root, checkpoint=ck,
                                image_size=24), progress=False)
    assert isinstance(prepared.splits.val, ImageFileDataset)
    fast = load_profile("cpu-1t")
    fast = replace(fast, batch_sizes=(2,), energy=replace(fast.energy, meter="modelled"),
                   timing=TimingSettings(warmup_iters=1, min_samples=3, min_time_s=0.0,
                                         max_time_s=0.05, target_rel_ci=0.5))
    inputs = prepared.eval_inputs(2, split="test")
    assert inputs[0].shape == (2, 3, 24, 24)
    assert torch.equal(inputs[0][1], prepared.splits.test[1][0])
    config = PruningConfig(method="antidote", global_keep=0.5)  # calibrates on train items
    m = evaluate(prepared, config, fast, split="test")
    assert m.accuracy_n == len(prepared.splits.test) == 9 and 0 <= m.accuracy_top1 <= 1
    assert m.latency_p50_ms > 0


def test_train_cli_on_a_streamed_tree_with_crop_flip_and_workers(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _tree(tmp_path / "data", {"train": 8, "val": 3}, side=(48, 60))
    args = ["train", "--model", "test_convnet", "--dataset", "imagefolder", "--data-dir",
            str(root), "--image-size", "40", "--recipe", "cifar-finetune", "--epochs", "1",
            "--batch-size", "8", "--workers", "2", "--json", "--quiet"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["input_size"] == [3, 40, 40] and result["num_classes"] == 3
    assert result["test_n"] == 9 and 0 <= result["accuracy_top1"] <= 1
    assert result["recipe"]["crop_padding"] == 4 and result["recipe"]["hflip"] is True
    (root / "train" / "cat" / "000.png").write_bytes(b"broken")
    assert main([*args, "--seed", "1"]) == 2  # the stats sample reads every train image here
    err = capsys.readouterr().err.strip()
    assert err.startswith("prunebench: error: cannot decode image ") and "000.png" in err
    assert len(err.splitlines()) == 1


def test_file_order_is_sorted_path_order_at_any_depth(tmp_path: Path) -> None:
    from PIL import Image

    pixel = Image.new("RGB", (4, 4))
    for rel in ("cat/z.png", "cat/B.JPG", "cat/a/x.png", "cat/a-b/y.png", "cat/a/b/w.png",
                "dog/1.png", "dog/notes.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith("txt"):
            (tmp_path / rel).write_text("not an image")
        else:
            pixel.save(tmp_path / rel)
    (tmp_path / "dog" / "folder.png").mkdir()  # a folder, not an image file
    paths, labels = fmt.list_image_files(tmp_path, ["cat", "dog"])
    want = sorted(p for p in tmp_path.rglob("*") if p.is_file()
                  and p.suffix.lower() in fmt.IMAGE_EXTENSIONS)
    assert [tmp_path / p for p in paths] == want and labels == [0] * 5 + [1]


def test_bench_data_tree_is_cached_and_trains(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util
    import sys

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_data.py"
    spec = importlib.util.spec_from_file_location("bench_data", script)
    bench = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    monkeypatch.setitem(sys.modules, "bench_data", bench)  # its generator pool pickles by name
    spec.loader.exec_module(bench)  # type: ignore[union-attr]
    root = bench.ensure_tree(tmp_path, 40, 48, jobs=2)
    files = sorted(root.rglob("*.jpg"))
    assert len(files) == 40 + bench.CLASSES * bench.VAL_PER_CLASS
    assert not list(root.rglob("*.tmp")) and (root / ".complete.json").is_file()
    stamp = files[0].stat().st_mtime_ns
    assert bench.ensure_tree(tmp_path, 40, 48, jobs=2) == root  # reused, not rewritten
    assert files[0].stat().st_mtime_ns == stamp
    record = bench.measure(root, workers=0, steps=2, batch=4, image_size=32, train_device="cpu")
    assert record["train_images"] == 36 and record["images_per_s"] > 0
    assert 0 < record["peak_rss_gib_after_load"] <= record["peak_rss_gib"]
