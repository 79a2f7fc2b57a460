"""Checkpoints: a ``state_dict`` and a metadata dict, never pickled code, and the cache folder.

Written atomically by :func:`save_checkpoint`, read back with ``torch.load(weights_only=True)`` by
:func:`load_checkpoint`, which also takes a plain ``state_dict`` file (torchvision's, or
``torch.save(model.state_dict())``) for a given model. The metadata (model name, classes, input
channels, input size) is checked before any weight loads, and a network that does not fit is
one line naming the missing and unexpected keys and the shape mismatches.
``prunebench.harness.train`` re-exports these names.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunebench.harness.errors import CheckpointError
from prunebench.harness.files import replacing

CHECKPOINT_FORMAT = "prunebench-checkpoint-v1"
# the metadata a checkpoint is checked against before its weights are loaded
CHECKED_META = ("model", "num_classes", "in_channels", "input_size")


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
