"""Training and fine-tuning loops (with optional distillation), and the checkpoint cache.

Training is seeded and deterministic on CPU for a given seed and thread count: the model is
initialised and shuffled from generators derived from ``Recipe.seed``; the global RNG state is
restored afterwards. Checkpoints (:mod:`prunebench.harness.checkpoints`, whose names this module
re-exports) hold a ``state_dict`` and a metadata dict only, never pickled code.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from prunebench.harness import devices
from prunebench.harness.augment import build_augmenter
from prunebench.harness.checkpoints import (
    CHECKED_META,
    CHECKPOINT_FORMAT,
    check_meta,
    checkpoint_meta,
    default_cache_dir,
    load_checkpoint,
    load_state,
    save_checkpoint,
)
from prunebench.harness.datasets import DatasetSplits, make_loader
from prunebench.harness.devices import CPU_RUNTIME, TrainRuntime
from prunebench.harness.errors import CheckpointError, PrunebenchError
from prunebench.harness.files import check_writable_dir

__all__ = [  # the checkpoint names are prunebench.harness.checkpoints', re-exported
    "CHECKED_META", "CHECKPOINT_FORMAT", "DEFAULT_RECIPE", "SCHEDULES", "EpochCallback",
    "LossHook", "Recipe", "check_meta", "check_recipe_fields", "checkpoint_meta",
    "default_cache_dir", "get_base_model", "load_checkpoint", "load_state",
    "recalibrate_batchnorm", "runtime_accuracy", "save_checkpoint", "train_model",
]

LossHook = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], "torch.Tensor | None"]
EpochCallback = Callable[[int, nn.Module], None]


SCHEDULES = ("cosine", "onecycle", "step")
# Fields added after checkpoints were first cached: they enter Recipe.key only when they differ
# from their default, so every recipe written before keeps its key (and its cached checkpoint).
_KEY_IF_CHANGED = ("milestones", "gamma", "nesterov", "crop_padding", "hflip",
                   "resized_crop_min_scale")


@dataclass(frozen=True)
class Recipe:
    """How to train: SGD with momentum and weight decay under a per-step LR schedule.

    ``lr`` is the peak learning rate; ``schedule`` is ``"cosine"`` (from ``lr`` down to 0),
    ``"onecycle"`` (warm-up to ``lr`` then anneal) or ``"step"`` (``lr`` times ``gamma`` at each
    epoch of ``milestones``); ``nesterov`` uses Nesterov momentum. Training augmentation:
    ``shift`` (largest random translation in pixels, edges replicated), ``crop_padding``
    (random crop of the image size after padding each side with this many black pixels),
    ``hflip`` (random horizontal flip), ``resized_crop_min_scale`` (random-resized crop to the
    image size covering this fraction of the area or more; 0: off). ``name`` labels the recipe
    and is not part of :attr:`key`. ``runtime`` is where it runs
    (:class:`~prunebench.harness.devices.TrainRuntime`): recorded beside results, never in
    :meth:`to_dict` or :attr:`key`. Invalid values raise :class:`PrunebenchError` naming the
    field.
    """

    epochs: int = 10
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    seed: int = 0
    label_smoothing: float = 0.0
    shift: int = 0
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    nesterov: bool = True
    crop_padding: int = 0
    hflip: bool = False
    resized_crop_min_scale: float = 0.0
    name: str = "custom"
    runtime: TrainRuntime = field(default=CPU_RUNTIME, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "milestones", tuple(self.milestones)
                           if isinstance(self.milestones, list | tuple) else self.milestones)
        check_recipe_fields(self)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every field but ``runtime`` (``Recipe(**d)`` rebuilds the recipe)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "runtime"}
        out["milestones"] = list(self.milestones)
        return out

    @property
    def key(self) -> str:
        """Short stable hash of what is trained (10 hex digits), for cache keys: every field
        but ``name`` and ``runtime``; a field of :data:`_KEY_IF_CHANGED` only off its default."""
        content = self.to_dict()
        content.pop("name")
        for name in _KEY_IF_CHANGED:
            if getattr(self, name) == _FIELD_DEFAULTS[name]:
                content.pop(name)
        return _digest(content)

    def with_(self, **changes: Any) -> Recipe:
        """A copy with some fields changed."""
        return replace(self, **changes)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


# field -> (check, what a good value is, example)
_CHECKS: dict[str, tuple[Callable[[Any], bool], str, str]] = {
    "epochs": (lambda v: _is_int(v) and v >= 0, "a whole number >= 0", "10"),
    "batch_size": (lambda v: _is_int(v) and v >= 1, "a whole number >= 1", "128"),
    "lr": (lambda v: _is_num(v) and v > 0, "a number > 0", "0.1"),
    "momentum": (lambda v: _is_num(v) and 0 <= v < 1, "a number in [0, 1)", "0.9"),
    "weight_decay": (lambda v: _is_num(v) and v >= 0, "a number >= 0", "1e-4"),
    "schedule": (lambda v: v in SCHEDULES, f"one of {', '.join(SCHEDULES)}", '"cosine"'),
    "seed": (lambda v: _is_int(v) and 0 <= v < 2 ** 32, "a whole number in [0, 2**32)", "0"),
    "label_smoothing": (lambda v: _is_num(v) and 0 <= v < 1, "a number in [0, 1)", "0.1"),
    "shift": (lambda v: _is_int(v) and v >= 0, "a whole number of pixels >= 0", "0"),
    "milestones": (lambda v: isinstance(v, tuple) and all(_is_int(m) and m >= 1 for m in v)
                   and list(v) == sorted(set(v)),
                   "increasing whole epoch numbers >= 1", "[91, 136]"),
    "gamma": (lambda v: _is_num(v) and 0 < v <= 1, "a number in (0, 1]", "0.1"),
    "nesterov": (lambda v: isinstance(v, bool), "true or false", "false"),
    "crop_padding": (lambda v: _is_int(v) and v >= 0, "a whole number of pixels >= 0", "4"),
    "hflip": (lambda v: isinstance(v, bool), "true or false", "true"),
    "resized_crop_min_scale": (lambda v: _is_num(v) and 0 <= v < 1,
                               "a fraction in [0, 1) (0: off)", "0.08"),
    "name": (lambda v: isinstance(v, str) and v.strip() != "", "a non-empty string", '"mine"'),
}


def check_recipe_fields(recipe: Recipe) -> None:
    """Raise :class:`PrunebenchError` naming the first field of ``recipe`` with a bad value."""
    for name, (ok, good, example) in _CHECKS.items():
        value = getattr(recipe, name)
        if not ok(value):
            raise PrunebenchError(f"recipe field {name} = {value!r} must be {good}; use e.g. "
                                  f"{name} = {example}")
    if recipe.schedule == "step" and not recipe.milestones:
        raise PrunebenchError("recipe field milestones is empty but schedule = \"step\" needs "
                              "the epochs at which the rate drops; use e.g. milestones = [91, 136]")
    if recipe.schedule != "step" and recipe.milestones:
        raise PrunebenchError(f"recipe field milestones = {list(recipe.milestones)} applies to "
                              f"schedule = \"step\" only, not {recipe.schedule!r}; drop it")
    if recipe.crop_padding and recipe.resized_crop_min_scale:
        raise PrunebenchError("recipe fields crop_padding and resized_crop_min_scale are two "
                              "kinds of random crop; set one of them to 0")


_FIELD_DEFAULTS = {f.name: f.default for f in fields(Recipe)}

# ResNet-20 on digits (split seed 0, 2 threads): val 98.3 %, test 99.7 % top-1 after 10 epochs
# (val 98.1 % already at epoch 6); about 4 s per epoch on 2 idle cores. The shipped recipe
# ``digits`` (harness/recipes/digits.toml) holds the same numbers.
DEFAULT_RECIPE = Recipe(name="digits")


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:10]


def _file_digest(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()[:16]


def _scheduler(opt: torch.optim.Optimizer, recipe: Recipe, total_steps: int,
               steps_per_epoch: int):
    if recipe.schedule == "step":  # per step, so that a milestone falls on an epoch's start
        bounds = [m * steps_per_epoch for m in recipe.milestones]
        return torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: recipe.gamma ** sum(step >= b for b in bounds))
    if recipe.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr,
                                                   total_steps=max(1, total_steps))
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps)
                                                / max(1, total_steps))))


def _random_shift(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Translate each image by up to ``pad`` pixels (edge pixels replicated)."""
    if pad <= 0:
        return x
    h, w = x.shape[-2:]
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    offs = torch.randint(0, 2 * pad + 1, (len(x), 2), generator=gen).tolist()
    return torch.stack([padded[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(offs)])


def _kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton et al. (2015) distillation: KL(teacher || student) at ``temperature``, times T^2."""
    return F.kl_div(F.log_softmax(student / temperature, dim=1),
                    F.log_softmax(teacher / temperature, dim=1), reduction="batchmean",
                    log_target=True) * temperature ** 2


def train_model(model: nn.Module, splits: DatasetSplits, recipe: Recipe, *,
                loss_hook: LossHook | None = None, teacher: nn.Module | None = None,
                kd_alpha: float = 0.0, kd_temperature: float = 4.0,
                epoch_callback: EpochCallback | None = None, progress: bool = True,
                desc: str = "train") -> nn.Module:
    """Train ``model`` in place on ``splits.train`` and return it in eval mode, on the CPU.

    The loss is cross-entropy (with ``recipe.label_smoothing``), mixed with distillation from
    ``teacher`` as ``(1 - kd_alpha) * CE + kd_alpha * KD`` when a teacher is given, plus whatever
    ``loss_hook(model, inputs, outputs, targets)`` returns. ``epoch_callback(epoch, model)`` runs
    after each epoch (0-based) with the model still on the training device; it may switch the
    model to eval mode and may raise (e.g. ``optuna.TrialPruned``) to stop. The recipe's
    augmentations apply to the training batches only. Training runs where ``recipe.runtime``
    says (device, AMP, channels_last, loader workers, determinism); the model and teacher come
    back on the CPU in the contiguous format either way. A tqdm bar on stderr shows progress
    unless ``progress=False``.
    """
    rt = recipe.runtime
    if teacher is not None:
        teacher.eval()
    with torch.random.fork_rng(devices=[]), devices.determinism(rt):
        torch.manual_seed(recipe.seed)
        bs = recipe.batch_size
        loader = make_loader(splits.train, bs, shuffle=True, seed=recipe.seed,
                             drop_last=len(splits.train) > bs,  # no size-1 batch for BN
                             workers=rt.workers, pin_memory=rt.pin_memory)
        aug_gen = torch.Generator().manual_seed(recipe.seed + 1)
        augment = build_augmenter(recipe, splits.input_size[1:],
                                  getattr(splits.train, "fill_value", None))
        _place(model, rt)
        if teacher is not None:
            _place(teacher, rt)
        decay = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.SGD(decay, lr=recipe.lr, momentum=recipe.momentum,
                              weight_decay=recipe.weight_decay,
                              nesterov=recipe.nesterov and recipe.momentum > 0)
        sched = _scheduler(opt, recipe, recipe.epochs * len(loader), len(loader))
        scaler = devices.grad_scaler(rt)
        bar = tqdm(total=recipe.epochs * len(loader), desc=desc, file=sys.stderr,
                   disable=not progress, leave=False, dynamic_ncols=True)
        try:
            for epoch in range(recipe.epochs):
                model.train()
                for x, y in loader:
                    x = _random_shift(x, recipe.shift, aug_gen)
                    x = x.to(rt.device, non_blocking=rt.pin_memory)
                    y = torch.as_tensor(y).to(rt.device, non_blocking=rt.pin_memory)
                    if augment is not None:
                        x = augment(x)
                    x = x.contiguous(memory_format=rt.memory_format)
                    with devices.autocast(rt):
                        out = model(x)
                        loss = F.cross_entropy(out, y, label_smoothing=recipe.label_smoothing)
                        if teacher is not None and kd_alpha > 0:
                            with torch.no_grad():
                                t_out = teacher(x)
                            loss = (1 - kd_alpha) * loss + kd_alpha * _kd_loss(
                                out.float(), t_out.float(), kd_temperature)
                        extra = loss_hook(model, x, out, y) if loss_hook is not None else None
                        if extra is not None:
                            loss = loss + extra
                    if not torch.isfinite(loss):
                        raise PrunebenchError(f"training diverged (loss {loss.item()}) in epoch "
                                              f"{epoch}; lower the learning rate (lr={recipe.lr})")
                    opt.zero_grad(set_to_none=True)
                    if scaler is not None:
                        scaler.scale(loss).backward()
                        scaler.step(opt)
                        scaler.update()
                    else:
                        loss.backward()
                        opt.step()
                    sched.step()
                    bar.update(1)
                    bar.set_postfix(epoch=epoch, loss=f"{loss.item():.3f}", refresh=False)
                if epoch_callback is not None:
                    epoch_callback(epoch, model)
        finally:
            bar.close()
            _place(model, CPU_RUNTIME)
            if teacher is not None:
                _place(teacher, CPU_RUNTIME)
    return model.eval()


def _place(model: nn.Module, runtime: TrainRuntime) -> None:
    """Move ``model`` in place to the runtime's device and memory format."""
    model.to(device=runtime.device, memory_format=runtime.memory_format)


def runtime_accuracy(model: nn.Module, dataset: Any, runtime: TrainRuntime) -> Any:
    """Top-1/top-5 of ``model`` on ``dataset`` computed on the training runtime's device, with
    its loader workers and pinned memory (a validation pass during training, not a
    measurement: those run on the hardware profile's device); the model stays on the CPU."""
    from prunebench.harness.measure.accuracy import accuracy

    model.to(device=runtime.device)
    try:
        return accuracy(model, dataset, workers=runtime.workers, pin_memory=runtime.pin_memory)
    finally:
        model.to(device="cpu")


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, splits: DatasetSplits, batches: int, *,
                          batch_size: int = 64, seed: int = 0) -> nn.Module:
    """Re-estimate every BatchNorm's running statistics on ``batches`` train batches, in place.

    "Adaptive BN" (Li et al. 2020, EagleEye): after filters are cut, the next layers' inputs
    change and the stored statistics no longer match them. The statistics are reset and replaced
    by the plain average over the batches (``momentum=None``); no weight changes. Returns the
    model in eval mode.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             and m.track_running_stats]
    if not norms or batches < 1:
        return model.eval()
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    try:
        loader = make_loader(splits.train, batch_size, shuffle=True, seed=seed,
                             drop_last=len(splits.train) > batch_size)
        for i, (x, _) in enumerate(loader):
            if i >= batches:
                break
            model(x)
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
    return model.eval()


def _fresh_model(model_name: str, splits: DatasetSplits, seed: int) -> nn.Module:
    from prunebench.harness.models import create_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return create_model(model_name, splits.num_classes, splits.input_size[0])


def get_base_model(model_name: str, dataset_name: str, splits: DatasetSplits, recipe: Recipe, *,
                   data_dir: str | Path | None = None, cache_dir: str | Path | None = None,
                   progress: bool = True, init_weights: str | Path | None = None,
                   ) -> tuple[nn.Module, Path]:
    """The dense model trained with ``recipe``, from the checkpoint cache or trained now.

    The cache key covers the model, the data set (name, ``data_dir`` or the splits' source, split
    seed, split sizes, input size, classes), ``recipe.key`` and, when training starts from
    ``init_weights`` (a prunebench checkpoint or a plain ``state_dict`` of this model, checked
    before any training) instead of a seeded random initialisation, that file's SHA-256. Training
    runs on ``recipe.runtime``, which the checkpoint's metadata records (``train_runtime``) with
    the input size it was made for. A damaged cached checkpoint is reported on stderr, moved
    aside to ``<name>.corrupt`` and retrained. Returns the model in eval mode and the checkpoint
    path.
    """
    from filelock import FileLock

    source = str(Path(data_dir).expanduser().resolve()) if data_dir is not None else splits.source
    identity = {"model": model_name, "dataset": dataset_name, "source": source,
                "split_seed": splits.seed, "input_size": list(splits.input_size),
                "num_classes": splits.num_classes,
                "sizes": [len(splits.train), len(splits.val), len(splits.test)],  # type: ignore
                "recipe": recipe.key}
    start_from = None
    if init_weights is not None:
        start_from = _fresh_model(model_name, splits, recipe.seed)
        load_checkpoint(init_weights, start_from, expect={
            "model": model_name, "num_classes": splits.num_classes,
            "in_channels": splits.input_size[0], "input_size": list(splits.input_size)})
        identity["init_weights"] = _file_digest(Path(init_weights))
    if recipe.epochs < 1:  # an untrained base would be cached and reused as if trained
        raise PrunebenchError(f"a base model needs at least 1 training epoch, not "
                              f"{recipe.epochs}; use e.g. --epochs {DEFAULT_RECIPE.epochs}")
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    check_writable_dir(cache, "checkpoint cache" if cache_dir is not None or
                       not os.environ.get("PRUNEBENCH_CACHE") else "$PRUNEBENCH_CACHE")
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", model_name)  # package.module:factory names too
    path = cache / "checkpoints" / f"{stem}-{dataset_name}-{_digest(identity)}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if path.exists():
            try:
                model, _ = load_checkpoint(path, _fresh_model(model_name, splits, recipe.seed),
                                           expect=identity)
                return model, path
            except CheckpointError as exc:
                aside = path.with_name(path.name + ".corrupt")
                os.replace(path, aside)
                reason = str(exc).split("; ")[0]
                print(f"prunebench: warning: {reason}; moved it aside to {aside} and retraining",
                      file=sys.stderr)
        model = start_from if start_from is not None else \
            _fresh_model(model_name, splits, recipe.seed)
        start = time.perf_counter()
        train_model(model, splits, recipe, progress=progress,
                    desc=f"train {model_name} on {dataset_name}")
        meta = {**identity, "in_channels": splits.input_size[0], "recipe": recipe.to_dict(),
                "recipe_key": recipe.key, "train_seconds": time.perf_counter() - start,
                "train_runtime": recipe.runtime.to_dict(),
                "init_weights_file": None if init_weights is None else str(init_weights),
                "val_top1": runtime_accuracy(model, splits.val, recipe.runtime).top1,
                "torch": str(torch.__version__)}
        save_checkpoint(model, path, meta)
    return model, path
