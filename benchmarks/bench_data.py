"""Benchmark (issue #20): an imagefolder tree streamed from disk, peak memory and images/s.

Generates ImageFolder trees of ``--images-small`` (default 5,000) and ``--images-large``
(default 20,000) training images at ``--source-side`` (256) pixels, JPEG quality 90, 10 classes,
plus 10 images per class under ``val/``. Each image is a smooth random colour field (an 8x8
random image resized bicubically) with Gaussian noise, so files are neither flat colour nor pure
noise (what decoding them costs is part of what is measured). The trees are cached in ``--work-dir``
(default ``$TMPDIR/prunebench-bench-data``) and reused: a tree counts as complete only once its
marker file is written, generation takes a file lock per tree (two runs never write one tree
at once), every image is written to a temporary name and renamed, and an interrupted
generation resumes where it stopped.

Each measurement runs in a fresh child process (this script with ``--child``), which loads the
tree with ``load_dataset("imagefolder", image_size=--image-size)`` (file lists, and the channel
statistics of a seeded sample of at most 1,000 train images), builds ``tv_resnet18`` and trains
it with ``harness.train.train_model`` and the ``imagenet-resnet`` recipe (random-resized crop
and flip; learning rate 0.01 instead of 0.1 so random data cannot diverge, which changes no
cost) for one epoch over the whole train split, stopped after ``--steps`` + 1 optimiser steps
of ``--batch`` images. ``images_per_s`` is ``steps x batch`` over the wall time from the first
step's forward pass to the last one's (the first step, which starts the loader, is not
counted). ``peak_rss_gib`` is the child's own peak resident set size (``ru_maxrss``: the
process that lists, decodes in the ``--workers 0`` case, and trains), and
``peak_rss_gib_after_load`` its peak before the model is built (what the data set itself
costs: Python, torch, the file lists and the statistics sample); ``peak_rss_gib_workers``
is the largest loader worker's (``RUSAGE_CHILDREN``; a forked worker's RSS counts the pages it
shares with its parent too).

Runs: small tree with 0 workers, large tree with 0 workers, large tree with 2 workers. The
keys ``peak_rss_gib_5k`` / ``peak_rss_gib_20k`` are those of the 0-worker runs on the small and
large tree (``images_small`` / ``images_large`` say how many images they held);
``images_per_s_workers0`` / ``images_per_s_workers2`` are from the large tree. The target
(issue #20): peak RSS under 2 GiB and not growing with the number of images.

Usage: ``python benchmarks/bench_data.py [--work-dir DIR] [--steps 20] [--batch 32]`` (the
default sizes generate some 25,000 JPEGs once, under 1 GB). A smoke run: ``--images-small 200
--images-large 400 --steps 2``. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

CLASSES = 10
VAL_PER_CLASS = 10
TREE_FORMAT = 1  # bump when the generated content changes, so old caches are not reused
GIB = 1024 ** 3


# --------------------------------------------------------------------------- the trees
def _image(seed: int, side: int) -> object:
    from PIL import Image

    rng = np.random.default_rng(seed)
    low = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    field = np.asarray(low.resize((side, side), Image.BICUBIC), dtype=np.float32)
    noisy = field + rng.normal(0.0, 12.0, field.shape).astype(np.float32)
    return Image.fromarray(noisy.clip(0, 255).astype(np.uint8))


def _write_chunk(jobs: list[tuple[str, int, int]]) -> int:
    """Write ``(path, seed, side)`` images that are not there yet; returns how many."""
    written = 0
    for path, seed, side in jobs:
        if os.path.exists(path):
            continue
        tmp = f"{path}.{os.getpid()}.tmp"
        _image(seed, side).save(tmp, format="JPEG", quality=90)  # type: ignore[attr-defined]
        os.replace(tmp, path)
        written += 1
    return written


def ensure_tree(work_dir: Path, n_train: int, side: int, jobs: int) -> Path:
    """The cached tree of ``n_train`` train images at ``side`` px (generated if missing)."""
    from filelock import FileLock

    root = work_dir / f"imagefolder-{n_train}-{side}px"
    marker = root / ".complete.json"
    want = {"train": n_train, "val": CLASSES * VAL_PER_CLASS, "side": side,
            "classes": CLASSES, "format": TREE_FORMAT}
    work_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root) + ".lock"):
        if marker.is_file():
            if json.loads(marker.read_text()) == want:
                return root
            shutil.rmtree(root)  # made by another version of this script
        todo: list[tuple[str, int, int]] = []
        for split, count, base in (("train", n_train, 0), ("val", CLASSES * VAL_PER_CLASS,
                                                             10 ** 9)):
            for c in range(CLASSES):
                (root / split / f"class{c:02d}").mkdir(parents=True, exist_ok=True)
            for i in range(count):  # image i goes to class i % CLASSES
                path = root / split / f"class{i % CLASSES:02d}" / f"{i:06d}.jpg"
                todo.append((str(path), base + i, side))
        start = time.perf_counter()
        chunks = [todo[k:k + 250] for k in range(0, len(todo), 250)]
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            written = sum(pool.map(_write_chunk, chunks))
        for tmp in root.rglob("*.tmp"):  # left by an interrupted run of this tree
            tmp.unlink()
        marker.write_text(json.dumps(want))
        print(f"bench_data: {root}: wrote {written} of {len(todo)} images in "
              f"{time.perf_counter() - start:.0f} s", file=sys.stderr)
    return root


# ------------------------------------------------------------------ one measurement (child)
class _Stop(Exception):
    """Raised from the loss hook after the last timed step: ends the epoch early."""


def measure(data_dir: Path, workers: int, steps: int, batch: int, image_size: int,
            train_device: str) -> dict:
    """Load ``data_dir``, train ``tv_resnet18`` ``steps`` + 1 steps; throughput and peak RSS."""
    import torch

    from prunebench.harness.datasets import load_dataset
    from prunebench.harness.devices import resolve_runtime
    from prunebench.harness.models import create_model
    from prunebench.harness.recipes import load_recipe
    from prunebench.harness.train import train_model

    start = time.perf_counter()
    splits = load_dataset("imagefolder", data_dir, image_size=image_size)
    load_s = time.perf_counter() - start
    after_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kilobytes
    if len(splits.train) < (steps + 1) * batch:
        raise SystemExit(f"bench_data: error: {len(splits.train)} train images hold fewer than "
                         f"--steps + 1 = {steps + 1} batches of {batch}; lower --steps")
    runtime = resolve_runtime(train_device, workers=workers)
    recipe = load_recipe("imagenet-resnet").with_(epochs=1, batch_size=batch, lr=0.01,
                                                  runtime=runtime)
    model = create_model("tv_resnet18", splits.num_classes, 3)
    stamps: list[float] = []

    def hook(model: object, x: object, out: object, y: object) -> None:
        if runtime.is_cuda:
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())
        if len(stamps) > steps:
            raise _Stop
        return None

    try:
        train_model(model, splits, recipe, loss_hook=hook, progress=False)
    except _Stop:
        pass
    gc.collect()  # the loader's workers are shut down and reaped with its iterator
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kilobytes
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return {"train_folder_images": len(splits.train) + len(splits.val),
            "train_images": len(splits.train),
            "workers": workers, "steps": steps, "batch": batch, "image_size": image_size,
            "load_s": round(load_s, 2),
            "images_per_s": round(steps * batch / (stamps[-1] - stamps[0]), 2),
            "peak_rss_gib": round(own / GIB, 3),
            "peak_rss_gib_after_load": round(after_load / GIB, 3),
            "peak_rss_gib_workers": round(kids / GIB, 3) if workers else None,
            "train_device": runtime.device, "torch_threads": torch.get_num_threads()}


def _run_child(cli: argparse.Namespace, tree: Path, workers: int) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(tree),
           "--workers", str(workers), "--steps", str(cli.steps), "--batch", str(cli.batch),
           "--image-size", str(cli.image_size), "--train-device", cli.train_device]
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"bench_data: error: the measurement {' '.join(cmd[2:])} exited "
                 f"{done.returncode}")
    record = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"bench_data: {tree.name} workers={workers}: {record['images_per_s']} images/s, "
          f"peak RSS {record['peak_rss_gib']} GiB (loaded in {record['load_s']} s)",
          file=sys.stderr)
    return record


def main() -> None:
    """Generate (or reuse) the trees, run the three measurements, print the JSON last."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path,
                        default=Path(tempfile.gettempdir()) / "prunebench-bench-data",
                        help="where the generated trees are cached (default: %(default)s)")
    parser.add_argument("--images-small", type=int, default=5000,
                        help="train images of the small tree (default 5000)")
    parser.add_argument("--images-large", type=int, default=20000,
                        help="train images of the large tree (default 20000)")
    parser.add_argument("--source-side", type=int, default=256,
                        help="side of the generated JPEGs in pixels (default 256)")
    parser.add_argument("--image-size", type=int, default=224,
                        help="--image-size the tree is loaded at (default 224)")
    parser.add_argument("--steps", type=int, default=20,
                        help="timed training steps per measurement (default 20)")
    parser.add_argument("--batch", type=int, default=32, help="training batch (default 32)")
    parser.add_argument("--train-device", default="cpu", help="auto, cpu or cuda[:N] "
                        "(default cpu)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="processes generating images (default: every core)")
    parser.add_argument("--workers", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    cli = parser.parse_args()
    for name in ("images_small", "images_large", "steps", "batch", "jobs"):
        if getattr(cli, name) < 1:
            parser.error(f"--{name.replace('_', '-')} {getattr(cli, name)} must be >= 1")
    if cli.image_size < 8 or cli.source_side < cli.image_size:
        parser.error(f"--image-size {cli.image_size} must be >= 8 and at most --source-side "
                     f"{cli.source_side}")
    trainable = cli.images_small - cli.images_small // 10  # after the 10% val carve
    if cli.child is None and (cli.steps + 1) * cli.batch > trainable:
        parser.error(f"--steps + 1 = {cli.steps + 1} batches of {cli.batch} need more train "
                     f"images than --images-small {cli.images_small} leaves after its 10% val; "
                     "lower --steps or --batch")
    from prunebench.harness.devices import resolve_runtime
    from prunebench.harness.errors import PrunebenchError

    try:
        resolve_runtime(cli.train_device)
    except PrunebenchError as exc:
        parser.error(str(exc))
    if cli.child is not None:
        print(json.dumps(measure(cli.child, cli.workers, cli.steps, cli.batch, cli.image_size,
                                 cli.train_device)))
        return
    small = ensure_tree(cli.work_dir, cli.images_small, cli.source_side, cli.jobs)
    large = ensure_tree(cli.work_dir, cli.images_large, cli.source_side, cli.jobs)
    runs = [_run_child(cli, small, 0), _run_child(cli, large, 0), _run_child(cli, large, 2)]
    import torch

    peak = max(r["peak_rss_gib"] for r in runs)
    growth = runs[1]["peak_rss_gib"] - runs[0]["peak_rss_gib"]
    print(json.dumps({
        "peak_rss_gib_5k": runs[0]["peak_rss_gib"], "peak_rss_gib_20k": runs[1]["peak_rss_gib"],
        "images_per_s_workers0": runs[1]["images_per_s"],
        "images_per_s_workers2": runs[2]["images_per_s"],
        "peak_rss_gib_20k_workers2": runs[2]["peak_rss_gib"],
        "peak_rss_gib_worker_process": runs[2]["peak_rss_gib_workers"],
        "peak_rss_gib_after_load_5k": runs[0]["peak_rss_gib_after_load"],
        "peak_rss_gib_after_load_20k": runs[1]["peak_rss_gib_after_load"],
        "rss_growth_gib": round(growth, 3), "under_2_gib": peak < 2.0,
        "images_small": cli.images_small, "images_large": cli.images_large,
        "source_side": cli.source_side, "image_size": cli.image_size, "steps": cli.steps,
        "batch": cli.batch, "model": "tv_resnet18", "recipe": "imagenet-resnet (lr 0.01)",
        "train_device": runs[0]["train_device"], "torch_threads": runs[0]["torch_threads"],
        "cpu_count": os.cpu_count(), "torch": str(torch.__version__), "runs": runs}))


if __name__ == "__main__":
    main()
