"""Data sets on real files: digits, MNIST (shared IDX files), CIFAR pickles and ImageFolder trees
written here in their real on-disk formats."""

from __future__ import annotations

import gzip
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from prunebench.harness.datasets import DATASETS, TensorImageDataset, load_dataset, make_loader
from prunebench.harness.errors import DataError, PrunebenchError


def _labels(ds: TensorImageDataset) -> list[int]:
    return ds.labels.tolist()


# ------------------------------------------------------------------------------ digits
def test_digits_shapes_split_and_normalisation(digits) -> None:
    assert digits.input_size == (1, 32, 32) and digits.num_classes == 10
    sizes = [len(digits.train), len(digits.val), len(digits.test)]
    assert sum(sizes) == 1797 and sizes[1] == sizes[2] == 359
    assert set(_labels(digits.test)) == set(range(10))  # stratified
    x, y = digits.train[0]
    assert x.shape == (1, 32, 32) and x.dtype == torch.float32 and isinstance(y, int)
    all_x, _ = digits.train[list(range(len(digits.train)))]
    assert abs(float(all_x.mean())) < 1e-4 and abs(float(all_x.std()) - 1) < 1e-2
    assert digits.split("test") is digits.test
    with pytest.raises(PrunebenchError, match="unknown split 'dev'"):
        digits.split("dev")


def test_digits_same_seed_same_split_other_seed_other_split(digits) -> None:
    again = load_dataset("digits", seed=0)
    assert torch.equal(again.test.images, digits.test.images)
    assert _labels(again.train) == _labels(digits.train)
    other = load_dataset("digits", seed=1)
    assert not torch.equal(other.test.images, digits.test.images)
    assert other.seed == 1 and digits.seed == 0


def test_digits_takes_no_data_dir(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="digits is embedded .* drop --data-dir"):
        load_dataset("digits", tmp_path)


def test_make_loader_batches_and_seeded_shuffle(digits) -> None:
    batches = list(make_loader(digits.val, batch_size=100))
    assert [len(b[1]) for b in batches] == [100, 100, 100, 59]
    assert batches[0][0].shape == (100, 1, 32, 32)
    order = [torch.cat([y for _, y in make_loader(digits.train, 64, True, seed=s)]) for s in
             (3, 3, 4)]
    assert torch.equal(order[0], order[1]) and not torch.equal(order[0], order[2])
    plain = torch.utils.data.TensorDataset(torch.zeros(10, 1, 4, 4), torch.arange(10))
    assert [len(y) for _, y in make_loader(plain, 4, drop_last=True)] == [4, 4]


def test_registry_metadata_for_every_data_set() -> None:
    assert DATASETS.list() == ["cifar10", "cifar100", "digits", "imagefolder", "mnist"]
    for name in DATASETS.list():
        meta = DATASETS.metadata(name)
        assert meta["channels"] in (1, 3) and meta["classes"] and meta["layout"]


# ------------------------------------------------------------------------------- MNIST
def test_mnist_test_files_only_split(mnist_dir: Path) -> None:
    splits = load_dataset("mnist", mnist_dir)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (7000, 1000, 2000)
    assert splits.input_size == (1, 32, 32) and splits.source == str(mnist_dir)
    counts = torch.bincount(splits.test.labels, minlength=10)
    assert counts.min() >= 170  # stratified: ~200 of each digit
    again = load_dataset("mnist", mnist_dir, seed=0)
    assert torch.equal(again.val.images, splits.val.images)
    assert not torch.equal(load_dataset("mnist", mnist_dir, seed=5).val.images,
                           splits.val.images)


def test_mnist_raw_files_equal_gzipped(mnist_dir: Path, tmp_path: Path) -> None:
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (tmp_path / name).write_bytes(gzip.decompress((mnist_dir / f"{name}.gz").read_bytes()))
    raw, gz = load_dataset("mnist", tmp_path), load_dataset("mnist", mnist_dir)
    assert torch.equal(raw.test.images, gz.test.images)
    assert torch.equal(raw.train.labels, gz.train.labels)


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_mnist_with_train_files_uses_official_test(mnist_dir: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    _write_idx(tmp_path / "train-images-idx3-ubyte", rng.integers(0, 256, (120, 28, 28)))
    _write_idx(tmp_path / "train-labels-idx1-ubyte", np.arange(120) % 10)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(mnist_dir / name, tmp_path / name)
    splits = load_dataset("mnist", tmp_path)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (110, 10, 10000)


def test_mnist_bad_paths_and_truncated_files(mnist_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="needs a data directory .*t10k-images-idx3-ubyte"):
        load_dataset("mnist")
    with pytest.raises(DataError, match=f"data directory {tmp_path / 'nope'} does not exist"):
        load_dataset("mnist", tmp_path / "nope")
    with pytest.raises(DataError, match=f"no MNIST test files in {tmp_path}; expected"):
        load_dataset("mnist", tmp_path)
    data = gzip.decompress((mnist_dir / "t10k-images-idx3-ubyte.gz").read_bytes())
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(data[: len(data) // 2])
    shutil.copy(mnist_dir / "t10k-labels-idx1-ubyte.gz", tmp_path)
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte is truncated"):
        load_dataset("mnist", tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(b"GIF89a not an idx file")
    with pytest.raises(DataError, match="bad magic number"):
        load_dataset("mnist", tmp_path)


# ------------------------------------------------------------------------------- CIFAR
def _cifar_batch(path: Path, n: int, classes: int, label_key: bytes, offset: int) -> np.ndarray:
    # Unique images (the first pixel encodes the running index) so splits can be checked.
    data = np.random.default_rng(offset).integers(0, 256, (n, 3072), dtype=np.uint8)
    data[:, 0], data[:, 1] = (offset + np.arange(n)) % 256, (offset + np.arange(n)) // 256
    entry = {b"batch_label": b"synthetic", label_key: [int(i % classes) for i in range(n)],
             b"data": data, b"filenames": [b"img%d.png" % i for i in range(n)]}
    if label_key == b"fine_labels":
        entry[b"coarse_labels"] = [int(i % 20) for i in range(n)]
    with open(path, "wb") as f:
        pickle.dump(entry, f, protocol=2)
    return data


@pytest.fixture()
def cifar10_dir(tmp_path: Path) -> Path:
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    for i in range(1, 6):
        _cifar_batch(base / f"data_batch_{i}", 20, 10, b"labels", 20 * i)
    _cifar_batch(base / "test_batch", 30, 10, b"labels", 1000)
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [b"c%d" % i for i in range(10)]}, f, protocol=2)
    return tmp_path


def _keys(ds: TensorImageDataset) -> set[int]:
    return set((ds.images[:, 0, 0, 0].int() + 256 * ds.images[:, 0, 0, 1].int()).tolist())


def test_cifar10_from_pickled_batches(cifar10_dir: Path) -> None:
    splits = load_dataset("cifar10", cifar10_dir, seed=0)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (90, 10, 30)
    assert splits.input_size == (3, 32, 32) and splits.num_classes == 10
    assert not _keys(splits.train) & _keys(splits.val)
    assert _keys(splits.train) | _keys(splits.val) == set(range(20, 120))
    raw = np.asarray(pickle.load(open(cifar10_dir / "cifar-10-batches-py/test_batch", "rb"),
                                 encoding="bytes")[b"data"][0]).reshape(3, 32, 32)
    x, y = splits.test[0]
    expected = (torch.from_numpy(raw).float() / 255 - splits.test.mean) / splits.test.std
    assert y == 0 and torch.allclose(x, expected)
    other = load_dataset("cifar10", cifar10_dir, seed=1)
    assert _keys(other.val) != _keys(splits.val)
    assert _keys(load_dataset("cifar10", cifar10_dir, seed=0).val) == _keys(splits.val)


def test_cifar100_fine_labels(tmp_path: Path) -> None:
    base = tmp_path / "cifar-100-python"
    base.mkdir()
    _cifar_batch(base / "train", 300, 100, b"fine_labels", 0)
    _cifar_batch(base / "test", 100, 100, b"fine_labels", 500)
    splits = load_dataset("cifar100", tmp_path)
    assert splits.num_classes == 100 and (len(splits.train), len(splits.val)) == (270, 30)
    assert sorted(set(splits.test.labels.tolist())) == list(range(100))


def test_cifar_missing_corrupt_and_unsafe(cifar10_dir: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=f"no cifar-10-batches-py/ in {empty}; .*data_batch_1"):
        load_dataset("cifar10", empty)
    with pytest.raises(DataError, match="no cifar-100-python/"):
        load_dataset("cifar100", empty)
    batch = cifar10_dir / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:500])
    with pytest.raises(DataError, match="cannot read CIFAR batch .*data_batch_3"):
        load_dataset("cifar10", cifar10_dir)
    batch.write_bytes(pickle.dumps(os.system, protocol=2))
    with pytest.raises(DataError, match="refusing to load"):
        load_dataset("cifar10", cifar10_dir)
    batch.write_bytes(pickle.dumps({b"data": np.zeros((4, 100), np.uint8), b"labels": [0] * 4}))
    with pytest.raises(DataError, match=r"shape \(4, 100\).*expected \(N, 3072\)"):
        load_dataset("cifar10", cifar10_dir)
    os.remove(batch)
    with pytest.raises(DataError, match="missing CIFAR batch file .*data_batch_3"):
        load_dataset("cifar10", cifar10_dir)


# -------------------------------------------------------------------------- ImageFolder
def _image_tree(root: Path, splits: tuple[str, ...], per_class: int = 4) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in splits:
        for ci, cls in enumerate(("cat", "dog", "eel")):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
                pixels[..., ci] = 255  # a class signal in one channel
                Image.fromarray(pixels).save(folder / f"{i}.png")


def test_imagefolder_with_test_folder(tmp_path: Path) -> None:
    _image_tree(tmp_path, ("train", "val", "test"))
    splits = load_dataset("imagefolder", tmp_path, image_size=16)
    assert splits.input_size == (3, 16, 16) and splits.num_classes == 3
    assert splits.class_names == ("cat", "dog", "eel")
    assert (len(splits.train), len(splits.val), len(splits.test)) == (12, 12, 12)
    assert _labels(splits.test) == [0] * 4 + [1] * 4 + [2] * 4


def test_imagefolder_without_test_uses_val_as_test(tmp_path: Path) -> None:
    _image_tree(tmp_path, ("train", "val"), per_class=10)
    splits = load_dataset("imagefolder", tmp_path)
    assert splits.input_size == (3, 32, 32)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (27, 3, 30)


def test_imagefolder_layout_errors(tmp_path: Path) -> None:
    _image_tree(tmp_path, ("train",))
    with pytest.raises(DataError, match=f"no val/ folder in {tmp_path}; imagefolder expects"):
        load_dataset("imagefolder", tmp_path)
    (tmp_path / "val" / "cow").mkdir(parents=True)
    with pytest.raises(DataError, match="class folder .*cow does not exist under train/"):
        load_dataset("imagefolder", tmp_path)
    shutil.rmtree(tmp_path / "val" / "cow")
    (tmp_path / "val" / "cat").mkdir()
    with pytest.raises(DataError, match="class folder .*val/cat holds no images"):
        load_dataset("imagefolder", tmp_path)
    with pytest.raises(DataError, match="image size 4 is too small"):
        load_dataset("imagefolder", tmp_path, image_size=4)
