"""Readers for on-disk data formats: MNIST IDX, CIFAR python pickles, ImageFolder trees.

The MNIST and CIFAR readers return raw ``uint8`` images ``(N, C, H, W)`` and ``int64`` labels
``(N,)`` as tensors; an ImageFolder tree is listed (paths and labels) and its images decoded one
at a time (:func:`decode_image`), so it is never held in memory. Every reader raises
:class:`DataError` naming the path and the layout that was expected. Normalisation happens in
:mod:`prunebench.harness.datasets`.
"""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import torch

from prunebench.harness.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")

# ---------------------------------------------------------------------------------------- IDX
_IDX_DTYPES = {0x08: np.uint8}


def find_idx(directory: Path, stem: str) -> Path | None:
    """``directory/stem`` or ``directory/stem.gz`` (also torchvision's ``MNIST/raw``), if any."""
    for folder in (directory, directory / "MNIST" / "raw"):
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    return None


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (raw or gzipped) into an array of its declared shape (uint8 only)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise DataError(
            f"cannot read IDX file {path}: {exc}; replace it with a complete copy") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an unsigned-byte IDX file (bad magic number); "
                        "expected the MNIST files from http://yann.lecun.com/exdb/mnist/")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if len(data) != header + int(np.prod(shape)):
        raise DataError(f"{path} is truncated or padded: header says shape {shape}, "
                        f"file has {len(data) - header} data bytes; replace it with a complete "
                        "copy")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def read_idx_pair(images: Path, labels: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST images ``(N, 1, 28, 28)`` uint8 and labels ``(N,)`` int64 from two IDX files."""
    x, y = read_idx(images), read_idx(labels)
    if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
        raise DataError(f"{images.name} ({x.shape}) and {labels.name} ({y.shape}) do not pair: "
                        "expected images (N, H, W) and N labels")
    return torch.from_numpy(x.copy()).unsqueeze(1), torch.from_numpy(y.astype(np.int64))


# ------------------------------------------------------------------------------ CIFAR pickles
class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists and numpy arrays only: no code from a data directory runs."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_cifar_batch(path: Path, label_key: bytes) -> tuple[torch.Tensor, torch.Tensor]:
    """One CIFAR python batch: images ``(N, 3, 32, 32)`` uint8 and labels ``(N,)`` int64."""
    if not path.is_file():
        raise DataError(f"missing CIFAR batch file {path}")
    try:
        with open(path, "rb") as f:
            entry = _ArrayUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, OSError, ValueError, TypeError) as exc:
        raise DataError(f"cannot read CIFAR batch {path}: {exc}; "
                        "expected a pickled dict with b'data' and labels") from None
    if not isinstance(entry, dict) or b"data" not in entry or label_key not in entry:
        raise DataError(f"CIFAR batch {path} lacks b'data' or {label_key!r}; "
                        "is this torchvision's python-version archive?")
    data = np.asarray(entry[b"data"], dtype=np.uint8)
    labels = np.asarray(entry[label_key], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise DataError(f"CIFAR batch {path} has data of shape {data.shape} and "
                        f"{len(labels)} labels; expected (N, 3072) and N labels")
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), torch.from_numpy(labels)


def read_cifar(paths: list[Path], label_key: bytes) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate several CIFAR batches."""
    parts = [read_cifar_batch(p, label_key) for p in paths]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


# ------------------------------------------------------------------------------- ImageFolder
def list_classes(root: Path) -> list[str]:
    """Sorted class folder names under ``root`` (torchvision ImageFolder convention)."""
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def list_image_files(root: Path, classes: list[str]) -> tuple[list[str], list[int]]:
    """Every image file under ``root/<class>/`` (any depth), without opening one.

    Returns the paths relative to ``root`` as strings (``"<class>/.../name.png"``), class folders
    in sorted order and each one's files sorted by path components (the order
    ``sorted(Path.rglob)`` gives), and each one's label (its class's index in ``classes``).
    Folders whose name is not in ``classes`` are an error (the splits would disagree), and so is
    a class folder without images.
    """
    index = {c: i for i, c in enumerate(classes)}
    paths: list[str] = []
    labels: list[int] = []
    for cls in list_classes(root):
        if cls not in index:
            raise DataError(f"class folder {root / cls} does not exist under train/; "
                            "every split must use the train/ class names")
        found = [os.path.relpath(os.path.join(folder, name), root)
                 for folder, _, names in os.walk(root / cls, followlinks=True) for name in names
                 if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS]
        if not found:  # a class that is never seen would still count in num_classes
            raise DataError(f"class folder {root / cls} holds no images "
                            f"({', '.join(IMAGE_EXTENSIONS)}); add images or remove the folder")
        found.sort(key=lambda rel: rel.split(os.sep))
        paths += found
        labels += [index[cls]] * len(found)
    if not paths:
        raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {root}/<class>/")
    return paths, labels


def decode_image(path: Path, size: int) -> np.ndarray:
    """One image file as RGB ``(size, size, 3)`` uint8: shorter side resized to ``size``
    (bilinear), centre-cropped. A file PIL cannot decode (not an image, truncated, too large)
    raises :class:`DataError` naming it."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return _square(img.convert("RGB"), size)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot decode image {path}: {exc}; remove or replace it") from None


def _square(img: object, size: int) -> np.ndarray:
    """Resize the shorter side to ``size`` (bilinear) and take the centre ``size x size`` crop."""
    from PIL import Image

    w, h = img.size  # type: ignore[attr-defined]
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((nw, nh), Image.BILINEAR)  # type: ignore[attr-defined]
    left, top = (nw - size) // 2, (nh - size) // 2
    return np.array(img.crop((left, top, left + size, top + size)), dtype=np.uint8)
