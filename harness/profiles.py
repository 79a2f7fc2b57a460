"""Hardware profiles: one TOML file per machine setting, loaded into frozen dataclasses.

A profile says *how* to measure (device, threads, batch sizes, dtype, memory format, timing and
energy settings) and *where* its numbers are valid (a fingerprint of glob patterns matched against
the machine). Profiles are validated when loaded; every error names the file, the field and the
value. Discovery order for a bare name: the directories in ``$PRUNEBENCH_PROFILES``
(``os.pathsep``-separated), then the built-in ``hw_profiles/`` directory.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from prunebench.harness.errors import ProfileError
from prunebench.harness.fingerprint import MachineFingerprint, machine_fingerprint
from prunebench.harness.profile_schema import parse_profile, read_toml

__all__ = [
    "EnergySettings", "Fingerprint", "HardwareProfile", "MachineFingerprint", "TimingSettings",
    "applied", "builtin_profile_dir", "check_usable", "cuda_usable", "fingerprint_matches",
    "list_profiles", "load_profile", "machine_fingerprint", "profile_dirs",
]


@dataclass(frozen=True)
class TimingSettings:
    """Latency measurement settings (seconds, iterations, relative CI half-width)."""

    warmup_iters: int
    min_samples: int
    min_time_s: float
    max_time_s: float
    target_rel_ci: float


@dataclass(frozen=True)
class EnergySettings:
    """Energy meter choice and the figures the ``modelled`` meter uses (watts)."""

    meter: str  # auto | rapl | nvml | modelled | none
    watts_per_busy_core: float
    idle_watts: float
    source: str  # where the watt figures come from (datasheet, measurement, ...)


@dataclass(frozen=True)
class Fingerprint:
    """Glob patterns (case-insensitive, ``*`` matches anything) a machine must match."""

    cpu_model: str
    gpu_name: str


@dataclass(frozen=True)
class HardwareProfile:
    """One registered machine setting; ``batch_sizes[0]`` is the default batch size."""

    name: str
    version: int
    description: str
    device: str  # "cpu" or "cuda:N"
    threads: int | str  # >= 1, or "all"
    batch_sizes: tuple[int, ...]
    dtype: str  # float32 | float16 | bfloat16
    memory_format: str  # contiguous | channels_last
    timing: TimingSettings
    energy: EnergySettings
    fingerprint: Fingerprint
    path: Path | None = None
    engine: str = "eager"  # how networks are run when timed: harness.engines.ENGINES

    @property
    def is_cuda(self) -> bool:
        """Whether the profile runs on a CUDA device."""
        return self.device.startswith("cuda")

    @property
    def default_batch_size(self) -> int:
        """The first listed batch size."""
        return self.batch_sizes[0]

    @property
    def torch_dtype(self) -> torch.dtype:
        """The ``torch.dtype`` named by :attr:`dtype`."""
        return getattr(torch, self.dtype)

    @property
    def torch_memory_format(self) -> torch.memory_format:
        """``torch.contiguous_format`` or ``torch.channels_last``."""
        return torch.channels_last if self.memory_format == "channels_last" else \
            torch.contiguous_format

    def resolved_threads(self) -> int:
        """The intra-op thread count this profile sets (``"all"`` = usable cores)."""
        if self.threads == "all":
            return available_cores()
        return int(self.threads)


def available_cores() -> int:
    """CPU cores this process may run on (affinity-aware)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# --------------------------------------------------------------------------- discovery
def builtin_profile_dir() -> Path | None:
    """The shipped ``hw_profiles/`` directory: the repo's (editable install) or the installed one.

    Wheels install the TOML files as data files under ``<prefix>/share/prunebench/hw_profiles``.
    """
    candidates = [Path(__file__).resolve().parent.parent / "hw_profiles",
                  Path(sys.prefix) / "share" / "prunebench" / "hw_profiles"]
    for cand in candidates:
        if cand.is_dir():
            return cand
    return None


def profile_dirs() -> list[Path]:
    """Directories searched for ``<name>.toml``, in order (``$PRUNEBENCH_PROFILES`` first)."""
    dirs = [Path(p).expanduser() for p in os.environ.get("PRUNEBENCH_PROFILES", "").split(
        os.pathsep) if p]
    builtin = builtin_profile_dir()
    if builtin is not None:
        dirs.append(builtin)
    return dirs


def list_profiles() -> dict[str, Path]:
    """Every discoverable profile name and its file (the first directory holding it wins)."""
    found: dict[str, Path] = {}
    for d in profile_dirs():
        if d.is_dir():
            for f in sorted(d.glob("*.toml")):
                found.setdefault(f.stem, f)
    return dict(sorted(found.items()))


def _looks_like_path(name_or_path: str | Path) -> bool:
    s = str(name_or_path)
    return isinstance(name_or_path, Path) or s.endswith(".toml") or os.sep in s or "/" in s


def resolve_profile_path(name_or_path: str | Path) -> Path:
    """The file a profile name or path refers to; unknown names list the known ones."""
    if _looks_like_path(name_or_path):
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise ProfileError(f"profile file {str(path)!r} does not exist; give an existing "
                               "TOML file or a name from `prunebench profiles list`")
        return path
    known = list_profiles()
    if str(name_or_path) not in known:
        raise ProfileError(
            f"unknown hardware profile {str(name_or_path)!r}; known profiles: "
            f"{', '.join(known) or '(none)'} (add directories with $PRUNEBENCH_PROFILES)")
    return known[str(name_or_path)]


def load_profile(name_or_path: str | Path | HardwareProfile) -> HardwareProfile:
    """Load and validate a profile by name (see :func:`profile_dirs`) or by path."""
    if isinstance(name_or_path, HardwareProfile):
        return name_or_path
    path = resolve_profile_path(name_or_path)
    fields = parse_profile(read_toml(path), path)
    return HardwareProfile(
        **{k: v for k, v in fields.items() if k not in ("timing", "energy", "fingerprint")},
        timing=TimingSettings(**fields["timing"]), energy=EnergySettings(**fields["energy"]),
        fingerprint=Fingerprint(**fields["fingerprint"]), path=path)


# --------------------------------------------------------------------------- usability
def cuda_usable(device: str) -> bool:
    """Whether ``device`` ("cuda:N") exists here and torch can use it."""
    if not torch.cuda.is_available():
        return False
    index = int(device.split(":")[1]) if ":" in device else 0
    return index < torch.cuda.device_count()


def fingerprint_matches(profile: HardwareProfile,
                        fp: MachineFingerprint | None = None) -> list[str]:
    """The fingerprint fields that do not match this machine (empty list: it matches)."""
    fp = fp or machine_fingerprint()
    bad = []
    if not fnmatch.fnmatch(fp.cpu_model.lower(), profile.fingerprint.cpu_model.lower()):
        bad.append(f"cpu_model {profile.fingerprint.cpu_model!r} vs this CPU {fp.cpu_model!r}")
    pattern = profile.fingerprint.gpu_name
    if pattern != "*" and not fnmatch.fnmatch((fp.gpu_name or "").lower(), pattern.lower()):
        bad.append(f"gpu_name {pattern!r} vs this GPU {fp.gpu_name or '(none)'!r}")
    if profile.threads != "all" and int(profile.threads) > fp.cores:
        bad.append(f"threads {profile.threads} vs {fp.cores} usable cores")
    return bad


def check_usable(profile: HardwareProfile, force: bool = False,
                 fp: MachineFingerprint | None = None) -> bool:
    """Raise :class:`ProfileError` if ``profile`` cannot be measured here; return ``forced``.

    A CUDA profile without a usable CUDA device is never measurable (``--force`` cannot conjure
    a GPU). A fingerprint mismatch (CPU/GPU model, more threads than cores) is allowed with
    ``force=True``; the return value is then ``True`` and is recorded in the Measurement.
    """
    if profile.is_cuda and not cuda_usable(profile.device):
        raise ProfileError(
            f"profile {profile.name!r} needs device {profile.device!r} but this machine has no "
            "usable CUDA device; pick a CPU profile such as 'cpu-1t' (see `prunebench profiles "
            "list`)")
    bad = fingerprint_matches(profile, fp)
    if bad and not force:
        raise ProfileError(
            f"profile {profile.name!r} does not match this machine ({'; '.join(bad)}); pass "
            "--force to measure anyway (recorded as forced) or create one with `prunebench "
            "profiles init NAME`")
    return bool(bad)


@contextlib.contextmanager
def applied(profile: HardwareProfile) -> Iterator[HardwareProfile]:
    """Set torch's and NumPy's BLAS thread counts from ``profile`` for the block, then restore them.

    On CPU, denormal floats are also flushed to zero (FTZ/DAZ) inside the block, as inference
    benchmarks do: trained networks on real inputs produce denormals whose microcode stalls
    otherwise decide the timing (measured: ResNet-20 on digits, 1 thread, p50 4.5-5.2 ms
    without, 3.05 ms with), not the pruning being compared. Recorded as ``flush_denormal``.
    """
    from threadpoolctl import threadpool_limits

    previous = torch.get_num_threads()
    threads = profile.resolved_threads()
    torch.set_num_threads(threads)
    ftz = profile.device == "cpu" and torch.set_flush_denormal(True)
    try:
        # NumPy's BLAS too (its own pool, 2 threads on this VM): a method computing on the host
        # in NumPy (antidote_fast's width decisions) must not use more cores than the profile
        with threadpool_limits(limits=threads, user_api="blas"):
            yield profile
    finally:
        if ftz:
            torch.set_flush_denormal(False)
        torch.set_num_threads(previous)
