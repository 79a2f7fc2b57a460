"""The hardware-profile TOML schema and its validation (every error names file, field, value)."""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prunebench.harness.errors import ProfileError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover  (Python 3.10)
    import tomli as tomllib

DTYPES = ("float32", "float16", "bfloat16")
MEMORY_FORMATS = ("contiguous", "channels_last")
ENERGY_METERS = ("auto", "rapl", "nvml", "modelled", "none")
# the registered engines (harness.engines.ENGINES; a test keeps the two lists equal)
ENGINE_NAMES = ("eager", "torchscript", "compile", "onnxruntime", "openvino")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_DEVICE = re.compile(r"^(cpu|cuda:\d+)$")

Check = Callable[[Any], str | None]  # returns a description of what is wrong, or None


def _int(lo: int) -> Check:
    def check(v: Any) -> str | None:
        if isinstance(v, bool) or not isinstance(v, int):
            return f"must be an integer, got {type(v).__name__}"
        return None if v >= lo else f"must be >= {lo}"
    return check


def _float(lo: float, hi: float = math.inf, lo_open: bool = False) -> Check:
    def check(v: Any) -> str | None:
        if isinstance(v, bool) or not isinstance(v, int | float):
            return f"must be a number, got {type(v).__name__}"
        if not math.isfinite(v) or v < lo or (lo_open and v == lo) or v > hi:
            low = f"> {lo}" if lo_open else f">= {lo}"
            return f"must be {low}" + (f" and <= {hi}" if hi != math.inf else "")
        return None
    return check


def _str(pattern: re.Pattern[str] | None = None, choices: tuple[str, ...] | None = None,
         hint: str = "") -> Check:
    def check(v: Any) -> str | None:
        if not isinstance(v, str):
            return f"must be a string, got {type(v).__name__}"
        if choices is not None and v not in choices:
            return f"must be one of {', '.join(choices)}"
        if pattern is not None and not pattern.match(v):
            return f"must look like {hint}"
        return None
    return check


def _threads(v: Any) -> str | None:
    if v == "all":
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        return 'must be an integer >= 1 or "all"'
    return None


def _batch_sizes(v: Any) -> str | None:
    if not isinstance(v, list) or not v:
        return "must be a non-empty list of integers, e.g. [1, 32]"
    if any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in v):
        return "must hold integers >= 1"
    return None


TOP: dict[str, Check] = {
    "name": _str(_NAME, hint="'cpu-1t' (letters, digits, '.', '_', '-')"),
    "version": _int(1),
    "description": _str(),
    "device": _str(_DEVICE, hint="'cpu' or 'cuda:0'"),
    "threads": _threads,
    "batch_sizes": _batch_sizes,
    "dtype": _str(choices=DTYPES),
    "memory_format": _str(choices=MEMORY_FORMATS),
}
# Optional top-level fields and their defaults (older profiles stay valid).
OPTIONAL: dict[str, tuple[Check, Any]] = {
    "engine": (_str(choices=ENGINE_NAMES), "eager"),
}
# Older names still read, each with a one-line deprecation message: name -> the field it became.
ALIASES = {"graph": "engine"}
SECTIONS: dict[str, dict[str, Check]] = {
    "timing": {
        "warmup_iters": _int(0),
        "min_samples": _int(3),
        "min_time_s": _float(0.0),
        "max_time_s": _float(0.0, lo_open=True),
        "target_rel_ci": _float(0.0, 1.0, lo_open=True),
    },
    "energy": {
        "meter": _str(choices=ENERGY_METERS),
        "watts_per_busy_core": _float(0.0),
        "idle_watts": _float(0.0),
        "source": _str(),
    },
    "fingerprint": {"cpu_model": _str(), "gpu_name": _str()},
}


def _fail(path: Path, field: str, value: Any, problem: str) -> ProfileError:
    return ProfileError(f"{path}: field {field!r} = {value!r} {problem}")


def _check_table(table: dict[str, Any], schema: dict[str, Check], path: Path,
                 prefix: str) -> dict[str, Any]:
    unknown = sorted(set(table) - set(schema))
    if unknown:
        key = unknown[0]
        raise _fail(path, prefix + key, table[key],
                    f"is not a known field; allowed here: {', '.join(schema)}")
    missing = [k for k in schema if k not in table]
    if missing:
        raise ProfileError(f"{path}: missing field {prefix + missing[0]!r}; add it (fields "
                           f"needed here: {', '.join(schema)})")
    out = {}
    for key, check in schema.items():
        problem = check(table[key])
        if problem:
            raise _fail(path, prefix + key, table[key], problem)
        out[key] = table[key]
    return out


def parse_profile(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """Validate a parsed TOML document; returns the fields (sections as dicts)."""
    tables = {k: v for k, v in data.items() if k in SECTIONS}
    data = _resolve_aliases(dict(data), path)
    top = {k: v for k, v in data.items() if k not in SECTIONS and k not in OPTIONAL}
    fields = _check_table(top, TOP, path, "")
    for key, (check, default) in OPTIONAL.items():
        value = data.get(key, default)
        problem = check(value)
        if problem:
            raise _fail(path, key, value, problem)
        fields[key] = value
    for section, schema in SECTIONS.items():
        if section not in tables:
            raise ProfileError(f"{path}: missing section [{section}]; add it with fields "
                               f"{', '.join(schema)}")
        if not isinstance(tables[section], dict):
            raise _fail(path, section, tables[section], "must be a table [section]")
        fields[section] = _check_table(tables[section], schema, path, f"{section}.")
    timing = fields["timing"]
    if timing["max_time_s"] < timing["min_time_s"]:
        raise _fail(path, "timing.max_time_s", timing["max_time_s"],
                    f"must be >= timing.min_time_s ({timing['min_time_s']})")
    if path.suffix == ".toml" and fields["name"] != path.stem:
        raise _fail(path, "name", fields["name"],
                    f"must equal the file name without .toml ({path.stem!r}); rename one")
    if fields["device"] == "cpu" and fields["dtype"] == "float16":
        raise _fail(path, "dtype", "float16", "is not supported for device 'cpu' by fast "
                    "kernels; use float32 or bfloat16")
    fields["batch_sizes"] = tuple(fields["batch_sizes"])
    return fields


def _resolve_aliases(data: dict[str, Any], path: Path) -> dict[str, Any]:
    import warnings

    for old, new in ALIASES.items():
        if old not in data:
            continue
        value = data.pop(old)
        if new in data and data[new] != value:
            raise _fail(path, old, value, f"contradicts {new} = {data[new]!r}; keep {new} only")
        data.setdefault(new, value)
        warnings.warn(f"{path}: field {old!r} is deprecated; write {new} = {value!r}",
                      DeprecationWarning, stacklevel=3)
    return data


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file; syntax and read errors become :class:`ProfileError` naming the file."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path}: not valid TOML ({exc}); fix the syntax") from None
    except OSError as exc:
        raise ProfileError(f"{path}: cannot be read ({exc.strerror})") from None
