"""Data sets with fixed, seeded train/val/test splits: in memory as tensors, or streamed from disk.

Every data set yields a :class:`DatasetSplits` whose items are ``(image, label)`` with ``image`` a
float ``C x H x W`` tensor normalised per channel with the *train* split's mean and std, and
``label`` an int. digits, MNIST and CIFAR are held in memory (:class:`TensorImageDataset`) as
``uint8`` (or float in [0, 1] for digits) and normalised when fetched, so CIFAR-sized data stays
small; :func:`make_loader` fetches whole batches of them at once. An ``imagefolder`` tree is never
held in memory: its splits are :class:`~prunebench.harness.streaming.ImageFileDataset` file lists,
decoded and resized per item (in DataLoader workers when asked), normalised with statistics of a
bounded sample of train images (:data:`~prunebench.harness.streaming.STATS_SAMPLE`).

Registered: ``digits`` (embedded, scikit-learn), ``mnist`` (IDX files), ``cifar10``/``cifar100``
(torchvision's python pickles) and ``imagefolder`` (``train/``, ``val/``, optional ``test/``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from numbers import Integral
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from prunebench.harness import dataformats as fmt
from prunebench.harness.errors import DataError, PrunebenchError
from prunebench.harness.registry import Registry
from prunebench.harness.streaming import (
    ImageFileDataset,
    StreamLoader,
    channel_stats,
    collate_items,
    sample_stats,
)

SPLIT_NAMES = ("train", "val", "test")
DEFAULT_IMAGE_SIZE = 32  # the side imagefolder images are resized to unless told (the CIFAR size)


class TensorImageDataset(Dataset):
    """Images and labels in memory; ``ds[i]`` is one item, ``ds[[i, j, ...]]`` a whole batch.

    ``images``: ``(N, C, H, W)`` uint8 (0..255) or float (0..1); ``mean``/``std``: per channel, in
    the 0..1 scale; items come out as ``(x - mean) / std`` in float32.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: torch.Tensor,
                 std: torch.Tensor) -> None:
        self.images, self.labels = images, labels.to(torch.int64)
        self.mean, self.std = mean.view(-1, 1, 1).float(), std.view(-1, 1, 1).float()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int | Sequence[int] | torch.Tensor):
        x = self.images[index]
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
        x = (x - self.mean) / self.std
        if isinstance(index, int):
            return x, int(self.labels[index])
        return x, self.labels[index]

    @property
    def fill_value(self) -> list[float]:
        """Per channel, the value a black (0) pixel has after normalisation: what padding an
        augmented crop is filled with (:mod:`prunebench.harness.augment`)."""
        return (-self.mean / self.std).flatten().tolist()

    def subset(self, indices: Sequence[int] | np.ndarray) -> TensorImageDataset:
        """A new data set holding the items at ``indices`` (same normalisation)."""
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.int64)
        return TensorImageDataset(self.images[idx], self.labels[idx], self.mean, self.std)


@dataclass(frozen=True)
class DatasetSplits:
    """Train/val/test splits of one data set; ``input_size`` is ``(C, H, W)``.

    ``seed`` is the split seed and ``source`` where the data came from (a resolved directory or
    ``"sklearn:load_digits"``); together with ``name`` they identify the data for caches.
    """

    name: str
    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    input_size: tuple[int, int, int]
    seed: int = 0
    source: str = ""
    class_names: tuple[str, ...] = field(default=())

    def split(self, name: str) -> Dataset:
        """The split called ``name`` ("train", "val" or "test")."""
        if name not in SPLIT_NAMES:
            raise PrunebenchError(f"unknown split {name!r}; use one of {', '.join(SPLIT_NAMES)}")
        return getattr(self, name)


Loader = Callable[[Path | None, int, bool, int], DatasetSplits]
DATASETS: Registry[Loader] = Registry("dataset")


def load_dataset(name: str, data_dir: str | Path | None = None, *, seed: int = 0,
                 download: bool = False, image_size: int = DEFAULT_IMAGE_SIZE) -> DatasetSplits:
    """Load data set ``name`` with splits fixed by ``seed``.

    ``data_dir`` is the folder holding the files (see ``prunebench datasets`` for each layout);
    nothing is downloaded unless ``download=True`` (CIFAR, MNIST). ``image_size`` (pixels) is the
    side images of an ``imagefolder`` data set are resized to; the other data sets are 32x32.
    """
    loader = DATASETS.get(name)
    if isinstance(seed, bool) or not isinstance(seed, Integral) or not 0 <= seed < 2 ** 32:
        raise DataError(f"split seed {seed!r} must be a whole number in [0, 2**32); use e.g. 0")
    if image_size < 8:
        raise DataError(f"image size {image_size} is too small; use 8 pixels or more (e.g. 32)")
    return loader(Path(data_dir).expanduser() if data_dir is not None else None, seed, download,
                  image_size)


def _collate_batch(batch: object) -> object:
    return batch


def make_loader(ds: Dataset, batch_size: int = 128, shuffle: bool = False, seed: int = 0,
                drop_last: bool = False, *, workers: int = 0,
                pin_memory: bool = False) -> DataLoader:
    """A loader whose shuffling uses its own generator seeded with ``seed``.

    Iterating the loader again gives the next permutation of that generator, so a training run
    is reproducible without touching the global RNG (the sampler runs in the main process, also
    with ``workers`` > 0 worker processes). In-memory data sets are fetched a batch at a time
    (one indexing operation per batch); an :class:`ImageFileDataset` is read an item at a time,
    in the workers when there are any, and a file that cannot be decoded stops the loop with
    a :class:`DataError` naming it. ``pin_memory`` pins batches for fast copies to a GPU.
    """
    gen = torch.Generator().manual_seed(seed)
    extra = {"num_workers": workers, "pin_memory": pin_memory}
    if workers > 0:
        extra["generator"] = torch.Generator().manual_seed(seed)  # workers' base seed
    if isinstance(ds, TensorImageDataset):
        sampler = RandomSampler(ds, generator=gen) if shuffle else SequentialSampler(ds)
        return DataLoader(ds, batch_size=None, collate_fn=_collate_batch,
                          sampler=BatchSampler(sampler, batch_size, drop_last=drop_last),
                          **extra)
    extra["generator"] = gen
    if isinstance(ds, ImageFileDataset):
        return StreamLoader(ds, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                            collate_fn=collate_items, **extra)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, **extra)


# ----------------------------------------------------------------------------- shared helpers
def _resize(images: torch.Tensor, size: int, chunk: int = 4096) -> torch.Tensor:
    """Bilinear resize of ``(N, C, H, W)`` images to ``size x size``, keeping the dtype."""
    if images.shape[-2:] == (size, size):
        return images
    out = []
    for start in range(0, len(images), chunk):
        x = F.interpolate(images[start:start + chunk].float(), size=(size, size),
                          mode="bilinear", align_corners=False)
        out.append(x.round().clamp_(0, 255).to(torch.uint8) if images.dtype == torch.uint8 else x)
    return torch.cat(out)


def _split_indices(labels: np.ndarray, n_take: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of ``range(len(labels))`` into (rest, ``n_take`` taken), stratified when
    every class has two or more items."""
    from sklearn.model_selection import train_test_split

    counts = np.bincount(labels)
    n_classes = int((counts > 0).sum())
    can_stratify = counts[counts > 0].min() >= 2 and min(n_take, len(labels) - n_take) >= n_classes
    stratify = labels if can_stratify else None
    rest, taken = train_test_split(np.arange(len(labels)), test_size=n_take, random_state=seed,
                                   shuffle=True, stratify=stratify)
    return np.sort(rest), np.sort(taken)


def _build(name: str, parts: dict[str, tuple[torch.Tensor, torch.Tensor]], num_classes: int,
           seed: int, source: str, class_names: Sequence[str] = ()) -> DatasetSplits:
    """Normalise every split with the train split's statistics and wrap them."""
    mean, std = channel_stats(parts["train"][0])
    dsets = {k: TensorImageDataset(x, y, mean, std) for k, (x, y) in parts.items()}
    c, h, w = parts["train"][0].shape[1:]
    return DatasetSplits(name, dsets["train"], dsets["val"], dsets["test"], num_classes,
                         (int(c), int(h), int(w)), seed, source, tuple(class_names))


def _carve(x: torch.Tensor, y: torch.Tensor, n_val: int, seed: int,
           ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Train and val parts carved from one labelled pool (``n_val`` items to val)."""
    rest, val = _split_indices(y.numpy(), n_val, seed)
    tr, va = torch.from_numpy(rest), torch.from_numpy(val)
    return {"train": (x[tr], y[tr]), "val": (x[va], y[va])}


def _require_dir(name: str, data_dir: Path | None, layout: str) -> Path:
    if data_dir is None:
        raise DataError(f"data set {name!r} needs a data directory (--data-dir DIR) holding "
                        f"{layout}")
    if data_dir.exists() and not data_dir.is_dir():
        raise DataError(f"data directory {data_dir} is a file, not a folder; give the folder "
                        f"that holds it: {name} expects {layout}")
    if not data_dir.is_dir():
        raise DataError(f"data directory {data_dir} does not exist; {name} expects {layout}")
    return data_dir.resolve()


# ----------------------------------------------------------------------------------- digits
_DIGITS_LAYOUT = "embedded (scikit-learn load_digits, 1797 8x8 images; no files needed)"


@DATASETS.register("digits", channels=1, classes=10, input="1x32x32", layout=_DIGITS_LAYOUT)
def _load_digits(data_dir: Path | None, seed: int, download: bool, size: int) -> DatasetSplits:
    """sklearn digits resized 8x8 -> 32x32 (bilinear); stratified 60/20/20 split by ``seed``."""
    from sklearn.datasets import load_digits

    if data_dir is not None:
        raise DataError(f"digits is embedded in scikit-learn and reads no files; drop --data-dir "
                        f"{data_dir}")
    bunch = load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    x = _resize(x, 32).clamp_(0.0, 1.0)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    n_test = round(0.2 * len(y))
    parts = _carve(x, y, n_test, seed)
    test = parts.pop("val")
    parts = _carve(*parts["train"], n_test, seed)
    parts["test"] = test
    return _build("digits", parts, 10, seed, "sklearn:load_digits")


# ------------------------------------------------------------------------------------ MNIST
_MNIST_LAYOUT = ("the MNIST IDX files (raw or .gz) in DIR or DIR/MNIST/raw: "
                 "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte and, optionally, "
                 "train-images-idx3-ubyte, train-labels-idx1-ubyte")


@DATASETS.register("mnist", channels=1, classes=10, input="1x32x32", layout=_MNIST_LAYOUT)
def _load_mnist(data_dir: Path | None, seed: int, download: bool, size: int) -> DatasetSplits:
    """MNIST resized 28x28 -> 32x32 (bilinear) so the CIFAR networks apply.

    With the train files: val is 1/12 of train (5,000 of 60,000, seeded), test the official
    10,000. With only the t10k files: 2,000 test, 1,000 val and 7,000 train, stratified by ``seed``.
    """
    if download and data_dir is not None:
        _torchvision_download("MNIST", data_dir)
    root = _require_dir("mnist", data_dir, _MNIST_LAYOUT)
    found = {stem: fmt.find_idx(root, f"{stem}-idx{3 if 'images' in stem else 1}-ubyte")
             for stem in ("train-images", "train-labels", "t10k-images", "t10k-labels")}
    if found["t10k-images"] is None or found["t10k-labels"] is None:
        raise DataError(f"no MNIST test files in {root}; expected {_MNIST_LAYOUT}")
    x_test, y_test = fmt.read_idx_pair(found["t10k-images"], found["t10k-labels"])
    if found["train-images"] is not None and found["train-labels"] is not None:
        x_tr, y_tr = fmt.read_idx_pair(found["train-images"], found["train-labels"])
        parts = _carve(_resize(x_tr, 32), y_tr, max(1, len(y_tr) // 12), seed)  # 5,000 of 60,000
        parts["test"] = (_resize(x_test, 32), y_test)
    else:
        if len(y_test) < 100:
            raise DataError(f"{found['t10k-images']} holds only {len(y_test)} images; "
                            "expected the 10,000-image MNIST test set")
        x_all = _resize(x_test, 32)
        n_test, n_val = len(y_test) // 5, len(y_test) // 10  # 2,000 / 1,000 of 10,000
        pool = _carve(x_all, y_test, n_test, seed)
        test = pool.pop("val")
        parts = _carve(*pool["train"], n_val, seed)
        parts["test"] = test
    return _build("mnist", parts, 10, seed, str(root))


# ---------------------------------------------------------------------------- CIFAR-10/100
_CIFAR10_LAYOUT = ("DIR/cifar-10-batches-py/ with data_batch_1..5 and test_batch "
                   "(torchvision's python pickles)")
_CIFAR100_LAYOUT = "DIR/cifar-100-python/ with train and test (torchvision's python pickles)"


def _torchvision_download(cls_name: str, data_dir: Path) -> None:
    import torchvision

    try:
        getattr(torchvision.datasets, cls_name)(str(data_dir), download=True)
    except (OSError, RuntimeError) as exc:
        raise DataError(f"download of {cls_name} into {data_dir} failed ({exc}); place the "
                        "files there yourself and drop --download") from None


def _cifar(name: str, data_dir: Path | None, seed: int, download: bool) -> DatasetSplits:
    ten = name == "cifar10"
    folder, layout = ("cifar-10-batches-py", _CIFAR10_LAYOUT) if ten else \
        ("cifar-100-python", _CIFAR100_LAYOUT)
    if download and data_dir is not None:
        data_dir.mkdir(parents=True, exist_ok=True)
        _torchvision_download("CIFAR10" if ten else "CIFAR100", data_dir)
    root = _require_dir(name, data_dir, layout)
    base = root / folder
    if not base.is_dir():
        raise DataError(f"no {folder}/ in {root}; {name} expects {layout} "
                        "(or pass --download to fetch it)")
    key = b"labels" if ten else b"fine_labels"
    train_files = [base / f"data_batch_{i}" for i in range(1, 6)] if ten else [base / "train"]
    test_files = [base / "test_batch"] if ten else [base / "test"]
    x_tr, y_tr = fmt.read_cifar(train_files, key)
    classes = 10 if ten else 100
    if int(y_tr.max()) >= classes or int(y_tr.min()) < 0:
        raise DataError(f"labels in {base} fall outside 0..{classes - 1}; is this {name}?")
    parts = _carve(x_tr, y_tr, max(1, len(y_tr) // 10), seed)  # 5,000 of the 50,000
    parts["test"] = fmt.read_cifar(test_files, key)
    return _build(name, parts, classes, seed, str(root))


@DATASETS.register("cifar10", channels=3, classes=10, input="3x32x32", layout=_CIFAR10_LAYOUT)
def _load_cifar10(data_dir: Path | None, seed: int, download: bool, size: int) -> DatasetSplits:
    """CIFAR-10: val is 10% of train (seeded, stratified); test is the official test batch."""
    return _cifar("cifar10", data_dir, seed, download)


@DATASETS.register("cifar100", channels=3, classes=100, input="3x32x32", layout=_CIFAR100_LAYOUT)
def _load_cifar100(data_dir: Path | None, seed: int, download: bool, size: int) -> DatasetSplits:
    """CIFAR-100 (fine labels): val is 10% of train (seeded, stratified)."""
    return _cifar("cifar100", data_dir, seed, download)


# ------------------------------------------------------------------------------ ImageFolder
_FOLDER_LAYOUT = ("DIR/train/<class>/*.png|jpg, DIR/val/<class>/..., optional DIR/test/<class>/...;"
                  " without test/, val/ is the test split and val is 10% of train; RGB, shorter "
                  "side resized to --image-size (default 32) and centre-cropped")


@DATASETS.register("imagefolder", channels=3, classes="from train/ folders", input="3xSxS",
                   layout=_FOLDER_LAYOUT)
def _load_imagefolder(data_dir: Path | None, seed: int, download: bool,
                      size: int) -> DatasetSplits:
    """A torchvision ImageFolder tree streamed from disk at ``size`` pixels (32 suits the CIFAR
    nets): only the file lists are read here, and at most ``STATS_SAMPLE`` train images are
    decoded for the channel statistics; any other image is decoded when it is fetched."""
    root = _require_dir("imagefolder", data_dir, _FOLDER_LAYOUT)
    if download:
        raise DataError("imagefolder data cannot be downloaded; drop --download")
    for sub in ("train", "val"):
        if not (root / sub).is_dir():
            raise DataError(f"no {sub}/ folder in {root}; imagefolder expects {_FOLDER_LAYOUT}")
    classes = fmt.list_classes(root / "train")
    if len(classes) < 2:
        raise DataError(f"{root / 'train'} has {len(classes)} class folder(s); need at least 2")

    def files(sub: str) -> ImageFileDataset:
        return ImageFileDataset.from_paths(root / sub, *fmt.list_image_files(root / sub, classes),
                                           size)

    train, val = files("train"), files("val")
    if (root / "test").is_dir():
        parts = {"train": train, "val": val, "test": files("test")}
    else:  # the same seeded, stratified carve as the in-memory data sets
        rest, carved = _split_indices(train.labels.numpy(), max(1, len(train) // 10), seed)
        parts = {"train": train.subset(rest), "val": train.subset(carved), "test": val}
    mean, std = sample_stats(parts["train"], seed)
    dsets = {k: d.normalised(mean, std) for k, d in parts.items()}
    return DatasetSplits("imagefolder", dsets["train"], dsets["val"], dsets["test"],
                         len(classes), (3, size, size), seed, str(root), tuple(classes))
