"""Image files streamed from disk: a data set that holds a file list, never the images.

:class:`ImageFileDataset` is what an ``imagefolder`` split is. It holds the image paths (as one
numpy byte-string array relative to the split's folder, so DataLoader workers forked from the
main process do not copy a list of Python objects page by page) and the labels; ``ds[i]``
decodes file ``i``, resizes its shorter side to the image size, takes the centre crop
(:func:`prunebench.harness.dataformats.decode_image`) and normalises it per channel exactly as
:class:`~prunebench.harness.datasets.TensorImageDataset` does. No file stays open between items,
and the data set pickles small, so it works with any number of loader workers.

Per-channel statistics come from a bounded, seeded sample of the train split
(:data:`STATS_SAMPLE` images, :func:`sample_stats`): a split that holds no more than that uses
every image, so small trees normalise exactly as when they were held in memory.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from numbers import Integral
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate, get_worker_info

from prunebench.harness import dataformats as fmt
from prunebench.harness.errors import DataError

STATS_SAMPLE = 1000  # train images the channel mean and std are computed from (seeded sample)
_STATS_CHUNK = 16  # sample images decoded (on threads) and reduced together


class ImageFileDataset(Dataset):
    """Images read from files per item; ``ds[i]`` is ``(C x size x size float tensor, label)``.

    ``root``: the folder ``files`` are relative to; ``files``: byte-string paths (numpy ``S``
    array); ``labels``: ``(N,)`` int64; ``size``: the side in pixels items come out at;
    ``mean``/``std``: per channel, in the 0..1 scale (items are ``(x / 255 - mean) / std``).
    """

    def __init__(self, root: str | Path, files: np.ndarray, labels: torch.Tensor, size: int,
                 mean: torch.Tensor, std: torch.Tensor) -> None:
        self.root, self.files, self.size = str(root), np.asarray(files, dtype=np.bytes_), size
        self.labels = torch.as_tensor(labels, dtype=torch.int64)
        self.mean = torch.as_tensor(mean).view(-1, 1, 1).float()
        self.std = torch.as_tensor(std).view(-1, 1, 1).float()
        if len(self.files) != len(self.labels):
            raise DataError(f"{len(self.files)} image files but {len(self.labels)} labels "
                            f"under {self.root}; every file needs one label")

    @classmethod
    def from_paths(cls, root: Path, paths: Sequence[str], labels: Sequence[int],
                   size: int) -> ImageFileDataset:
        """A data set of ``paths`` (relative to ``root``), not yet normalised (mean 0, std 1)."""
        files = np.array([os.fsencode(p) for p in paths], dtype=np.bytes_)
        return cls(root, files, torch.tensor(labels, dtype=torch.int64), size, torch.zeros(3),
                   torch.ones(3))

    def __len__(self) -> int:
        return len(self.labels)

    def path(self, index: int) -> Path:
        """The file item ``index`` is read from."""
        return Path(self.root) / os.fsdecode(self.files[index])

    def read(self, index: int) -> np.ndarray:
        """Item ``index``'s image as ``(3, size, size)`` uint8, before normalisation."""
        pixels = fmt.decode_image(self.path(index), self.size)
        return np.ascontiguousarray(pixels.transpose(2, 0, 1))

    def __getitem__(self, index: int | Sequence[int] | torch.Tensor):
        if isinstance(index, torch.Tensor | np.ndarray) and index.ndim == 0:
            index = int(index)
        if isinstance(index, Integral):
            if not -len(self) <= index < len(self):
                raise IndexError(f"item {index} of a {len(self)}-image data set")
            # the in-memory formula, (x / 255 - mean) / std in float32, done in NumPy: one
            # image is too small for torch's intra-op threads, whose hand-offs cost more than
            # the arithmetic where the cores are busy (the main process with 0 workers)
            x = self.read(int(index)).astype(np.float32)
            x /= np.float32(255.0)
            x -= self.mean.numpy()
            x /= self.std.numpy()
            return torch.from_numpy(x), int(self.labels[index])
        return collate_items([self[int(i)] for i in index])  # a batch, as in memory

    @property
    def fill_value(self) -> list[float]:
        """Per channel, the value a black (0) pixel has after normalisation: what padding an
        augmented crop is filled with (:mod:`prunebench.harness.augment`)."""
        return (-self.mean / self.std).flatten().tolist()

    def subset(self, indices: Sequence[int] | np.ndarray) -> ImageFileDataset:
        """A new data set of the files at ``indices`` (same size and normalisation)."""
        idx = np.asarray(indices, dtype=np.int64)
        return ImageFileDataset(self.root, self.files[idx], self.labels[torch.from_numpy(idx)],
                                self.size, self.mean, self.std)

    def normalised(self, mean: torch.Tensor, std: torch.Tensor) -> ImageFileDataset:
        """The same files with the per-channel ``mean`` and ``std`` (0..1 scale)."""
        return ImageFileDataset(self.root, self.files, self.labels, self.size, mean, std)


def channel_stats(images: torch.Tensor | Iterable[torch.Tensor], chunk: int = 4096,
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std (0..1 scale) of ``(N, C, H, W)`` images, in chunks of ``chunk``
    (or of images given as an iterable of such chunks, e.g. decoded a few at a time)."""
    parts = images if not isinstance(images, torch.Tensor) else \
        (images[start:start + chunk] for start in range(0, len(images), chunk))
    total = sq = torch.zeros((), dtype=torch.float64)
    count = 0
    for part in parts:
        x = part.double() / 255.0 if part.dtype == torch.uint8 else part.double()
        total = total + x.sum(dim=(0, 2, 3))
        sq = sq + (x * x).sum(dim=(0, 2, 3))
        count += x.numel() // x.shape[1]
    mean = total / count
    std = (sq / count - mean * mean).clamp_min(1e-12).sqrt()
    return mean.float(), std.float()


def sample_stats(ds: ImageFileDataset, seed: int, n: int | None = None,
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std (0..1 scale) of ``n`` (default :data:`STATS_SAMPLE`) images of
    ``ds`` drawn with ``seed`` (all of them when it holds ``n`` or fewer), by the in-memory data
    sets' :func:`channel_stats`. The images are decoded on threads (PIL releases the GIL while it
    decodes) :data:`_STATS_CHUNK` at a time, the next chunk while one is summed: only two chunks
    and the running sums stay in memory."""

    n, count = STATS_SAMPLE if n is None else n, len(ds)
    idx = np.arange(count) if count <= n else \
        np.sort(np.random.default_rng(seed).choice(count, n, replace=False))
    parts = [idx[k:k + _STATS_CHUNK].tolist() for k in range(0, len(idx), _STATS_CHUNK)]
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        def chunks() -> Iterator[torch.Tensor]:
            ahead = None
            for part in [*parts, None]:  # submit a chunk, then sum the one before it
                done, ahead = ahead, pool.map(ds.read, part) if part else None
                if done is not None:
                    yield torch.from_numpy(np.stack(list(done)))

        return channel_stats(chunks())


def collate_items(batch: Sequence[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images (N, C, H, W), labels (N,) int64)`` of ``ds[i]`` items. In the main process the
    images are stacked by NumPy: ``torch.stack`` of a batch runs on torch's intra-op threads,
    whose hand-offs can cost far more than the copy itself on a machine whose cores are busy
    (no benchmark in the repository times this); in a loader worker, torch's own collate writes
    the batch straight into shared memory."""
    if get_worker_info() is not None:
        return default_collate(batch)
    images = torch.from_numpy(np.stack([x.numpy() for x, _ in batch]))
    return images, torch.tensor([int(y) for _, y in batch], dtype=torch.int64)


class StreamLoader(DataLoader):
    """A DataLoader whose workers' :class:`DataError` (a file that cannot be decoded) reaches
    the caller as the worker's one-line message, not wrapped in the worker's traceback."""

    def __iter__(self):
        try:
            yield from super().__iter__()
        except DataError as exc:
            text = str(exc)
            if not text.startswith("Caught DataError"):
                raise
            last = text.strip().splitlines()[-1]
            raise DataError(last.split("DataError: ", 1)[-1]) from None
