"""Training and fine-tuning loops (with optional distillation), and the checkpoint cache.

Training is seeded and deterministic on CPU for a given seed and thread count: the model is
initialised and shuffled from generators derived from ``Recipe.seed``; the global RNG state is
restored afterwards. Checkpoints hold a ``state_dict`` and a metadata dict only (never pickled
code) and are read back with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from prunebench.harness import devices
from prunebench.harness.augment import build_augmenter
from prunebench.harness.datasets import DatasetSplits, make_loader
from prunebench.harness.devices import CPU_RUNTIME, TrainRuntime
from prunebench.harness.errors import CheckpointError, PrunebenchError
from prunebench.harness.files import check_writable_dir, replacing

LossHook = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], "torch.Tensor | None"]
EpochCallback = Callable[[int, nn.Module], None]
CHECKPOINT_FORMAT = "prunebench-checkpoint-v1"
# the metadata a checkpoint is checked against before its weights are loaded
CHECKED_META = ("model", "num_classes", "in_channels", "input_size")


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


# ------------------------------------------------------------------------------- checkpoints
def default_cache_dir() -> Path:
    """``$PRUNEBENCH_CACHE`` or ``~/.cache/prunebench``."""
    env = os.environ.get("PRUNEBENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "prunebench"


def save_checkpoint(model: nn.Module, path: str | Path, meta: dict[str, Any]) -> None:
    """Write ``state_dict`` + ``meta`` atomically (temporary file, then ``os.replace``).

    A pruned network's ``prunebench_arch`` is stored in ``meta["arch"]`` unless given. ``meta``
    must hold JSON types only (str, numbers, bools, None, lists, dicts with str keys).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(meta)
    arch = getattr(model, "prunebench_arch", None)
    if arch is not None and "arch" not in meta:
        meta["arch"] = arch
    # Plain JSON types only, so weights_only loading accepts them (tuples come back as lists).
    meta = json.loads(json.dumps(meta))
    payload = {"format": CHECKPOINT_FORMAT, "meta": meta,
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    with replacing(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | Path, model: nn.Module | None = None, *,
                    expect: Mapping[str, Any] | None = None,
                    ) -> tuple[nn.Module, dict[str, Any]]:
    """Load a checkpoint into ``model`` (or a fresh registered model named in its metadata).

    ``expect`` holds what the caller uses the network as (any of :data:`CHECKED_META`:
    ``model`` name, ``num_classes``, ``in_channels``, ``input_size``; ``None`` values are not
    checked): the metadata must hold and match each (``input_size`` where the checkpoint
    records one), or no weight is loaded. A plain ``state_dict`` file (e.g. torchvision's, or
    ``torch.save(model.state_dict())``) is accepted when ``model`` is given; it has no metadata,
    so only its keys and shapes are checked and the returned metadata is
    ``{"weights_format": "state_dict"}``. Raises :class:`CheckpointError` naming the file if it
    is missing, truncated, corrupt, neither kind of file, lacks or contradicts that metadata, or
    does not fit the model (naming the missing and unexpected keys and the shape mismatches).
    A pruned checkpoint (``meta["arch"]``) needs the rebuilt ``model`` passed in.
    """
    from prunebench.harness.models import create_model

    path = Path(path)
    payload = _read_payload(path)
    if not (isinstance(payload, dict) and payload.get("format") == CHECKPOINT_FORMAT
            and isinstance(payload.get("state_dict"), dict)
            and isinstance(payload.get("meta"), dict)):
        if model is None or not _is_state_dict(payload):
            raise CheckpointError(f"{path} is not a prunebench checkpoint (state_dict + meta) "
                                  "nor a plain state_dict for a given model; save it with "
                                  "prunebench.harness.train.save_checkpoint or "
                                  "torch.save(model.state_dict(), path)")
        load_state(model, payload, path)
        return model.eval(), {"weights_format": "state_dict"}
    meta = payload["meta"]
    rebuild = dict.fromkeys(CHECKED_META[:3], True) if model is None else {}  # built from these
    check_meta(path, meta, {**rebuild, **{k: v for k, v in (expect or {}).items()
                                          if v is not None}})
    if model is None:
        if "arch" in meta:
            raise CheckpointError(f"{path} holds a pruned network; rebuild its architecture "
                                  "and pass it as model=")
        model = create_model(meta["model"], meta["num_classes"], meta["in_channels"])
    load_state(model, payload["state_dict"], path)
    return model.eval(), meta


def checkpoint_meta(path: str | Path) -> dict[str, Any] | None:
    """The metadata of a prunebench checkpoint, ``None`` for a plain ``state_dict`` file
    (:class:`CheckpointError` for anything else): read before data is loaded, so that the
    image geometry it was made for can be used and checked."""
    path = Path(path)
    payload = _read_payload(path)
    if isinstance(payload, dict) and payload.get("format") == CHECKPOINT_FORMAT \
            and isinstance(payload.get("meta"), dict):
        return dict(payload["meta"])
    if _is_state_dict(payload):
        return None
    raise CheckpointError(f"{path} is not a prunebench checkpoint (state_dict + meta) nor a "
                          "plain state_dict; save it with prunebench.harness.train."
                          "save_checkpoint or torch.save(model.state_dict(), path)")


def _read_payload(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; check the path")
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickles before refusing them
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt "
                              f"({type(exc).__name__}); delete it and retrain") from None


def _is_state_dict(payload: Any) -> bool:
    return isinstance(payload, Mapping) and bool(payload) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in payload.items())


def _listed(names: list[str], limit: int = 4) -> str:
    more = f" (+{len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def load_state(model: nn.Module, state: Mapping[str, Any], path: str | Path) -> None:
    """``model.load_state_dict(state)``, strictly; a misfit raises one line naming the missing
    and unexpected keys and the shape mismatches (file vs model)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} in the file vs {tuple(v.shape)} in the model"
              for k, v in own.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    parts = [f"{label}: {_listed(items)}" for label, items in
             (("missing keys", missing), ("unexpected keys", unexpected),
              ("shape mismatches", shapes)) if items]
    if not parts:
        try:
            model.load_state_dict(state)
            return
        except RuntimeError as exc:  # e.g. a dtype the parameter cannot take
            parts = [str(exc).strip().splitlines()[0]]
    raise CheckpointError(f"checkpoint {path} does not fit the model "
                          f"{type(model).__name__} ({'; '.join(parts)}); check --model, the data "
                          "set's classes and channels, and that the file holds this network")


def check_meta(path: str | Path, meta: Mapping[str, Any], expect: Mapping[str, Any]) -> None:
    """Raise :class:`CheckpointError` unless ``meta`` holds every key of ``expect`` whose value
    is not ``None``, with that value (``True``: present, any value)."""
    wanted = {k: v for k, v in expect.items() if v is not None}
    # input_size is checked where recorded: checkpoints written before it was are still read
    missing = [k for k in CHECKED_META[:3] if k in wanted and k not in meta]
    if missing:
        raise CheckpointError(
            f"checkpoint {path} has no {', '.join(missing)} in its metadata (it has: "
            f"{', '.join(sorted(meta)) or 'nothing'}), so what it holds cannot be checked; save "
            "it with prunebench.harness.train.save_checkpoint(model, path, {'model': NAME, "
            "'num_classes': N, 'in_channels': C})")
    want = wanted.get("model")
    if want is not True and want is not None and meta["model"] != want:
        raise CheckpointError(f"checkpoint {path} holds a {meta['model']} network, not {want}; "
                              f"pass --model {meta['model']} or a checkpoint of {want}")
    for key, what in (("num_classes", "classes"), ("in_channels", "input channels")):
        want = wanted.get(key)
        if want is not True and want is not None and meta[key] != want:
            raise CheckpointError(
                f"checkpoint {path} ({meta.get('model', 'a network')}) was made for "
                f"{meta[key]} {what}, but this data set has {want}; use a checkpoint "
                "trained on this data set (or pass the data set it was trained on)")
    want = wanted.get("input_size")
    have = meta.get("input_size")
    if want is not True and want is not None and have is not None and list(have) != list(want):
        raise CheckpointError(
            f"checkpoint {path} ({meta.get('model', 'a network')}) was made for "
            f"{'x'.join(map(str, have))} inputs, but the data is {'x'.join(map(str, want))}; "
            f"load the data at its size (--image-size {have[-1]}, imagefolder) or use a "
            "checkpoint made at this size")


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
