"""Energy per inference from meters behind one interface (probe, then fall back; a null object).

Meters (registered in :data:`METERS`):

- ``rapl``: Linux powercap counters ``<root>/intel-rapl:N/energy_uj`` of the CPU packages, with
  wraparound at ``max_energy_range_uj``. Measures the whole package, so the idle power measured
  just before is subtracted.
- ``nvml``: ``nvmlDeviceGetTotalEnergyConsumption`` (mJ, Volta and newer); where the counter is
  missing, power is sampled in a thread and integrated (method ``nvml-sampled``).
- ``modelled``: NOT a measurement: process CPU-seconds x ``watts_per_busy_core`` plus
  ``idle_watts`` x wall time, from the profile. Always labelled ``modelled``.
- ``none``: the null object; no energy figure.

``auto`` degrades quietly (CPU profiles: rapl -> modelled; CUDA profiles: nvml -> none, since a
CPU model says nothing about a GPU) and records why. A meter the user asked for by name that is
unavailable raises :class:`ProfileError` saying how to enable it. The sysfs root and the NVML
module are injectable so tests drive fake counters.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunebench.harness.errors import ProfileError
from prunebench.harness.measure.latency import gc_disabled
from prunebench.harness.measure.meter_base import METERS, EnergyMeter, MeterUnavailable
from prunebench.harness.measure.nvml import NvmlMeter
from prunebench.harness.profiles import HardwareProfile, applied

RAPL_ROOT = Path("/sys/class/powercap")


def _read_int(path: Path) -> int:
    """One integer from a sysfs file (a seam for tests)."""
    return int(path.read_text().strip())


@METERS.register("rapl")
class RaplMeter(EnergyMeter):
    """Sum of the RAPL package domains' ``energy_uj`` counters, wraparound-corrected."""

    method = "rapl"
    min_window_s = 0.2  # the counters update about every millisecond

    def __init__(self, zones: list[Path]) -> None:
        self.zones = zones
        self.ranges = [_read_int(z / "max_energy_range_uj") for z in zones]
        self._start: list[int] = []

    @classmethod
    def probe(cls, profile: HardwareProfile, *, sysfs_root: Path | None = None,
              nvml: Any = None) -> RaplMeter:
        """Find readable package domains under ``sysfs_root`` (default /sys/class/powercap)."""
        root = Path(sysfs_root or RAPL_ROOT)
        zones = [z for z in sorted(root.glob("intel-rapl:*")) if z.name.count(":") == 1
                 and (z / "energy_uj").exists()]
        packages = [z for z in zones if not (z / "name").exists()
                    or (z / "name").read_text().strip().startswith("package")]
        if not packages:
            raise MeterUnavailable(
                f"no RAPL package domains under {root}",
                "RAPL needs an Intel or AMD CPU and the intel_rapl_common kernel module "
                "(sudo modprobe intel_rapl_common); containers must mount /sys/class/powercap")
        try:
            meter = cls(packages)
            meter._counters()
        except PermissionError as exc:
            raise MeterUnavailable(
                f"RAPL counter {exc.filename or packages[0] / 'energy_uj'} is not readable "
                "(permission denied)",
                f"run `sudo chmod o+r {root}/intel-rapl:*/energy_uj` or measure as root") from None
        return meter

    def _counters(self) -> list[int]:
        return [_read_int(z / "energy_uj") for z in self.zones]

    def begin(self) -> None:
        """Read every counter."""
        self._start = self._counters()

    def end(self) -> float:
        """Joules since :meth:`begin`; a counter below its start value wrapped once."""
        total_uj = 0
        for start, now, rng in zip(self._start, self._counters(), self.ranges, strict=True):
            total_uj += now - start if now >= start else now + rng - start
        return total_uj / 1e6


@METERS.register("modelled")
class ModelledMeter(EnergyMeter):
    """A model, not a measurement: CPU-seconds x W per busy core + idle W x wall seconds."""

    method = "modelled"
    min_window_s = 0.2

    def __init__(self, watts_per_busy_core: float, idle_watts: float) -> None:
        self.watts_per_busy_core, self.idle_watts = watts_per_busy_core, idle_watts
        self._start = (0.0, 0.0)

    @classmethod
    def probe(cls, profile: HardwareProfile, *, sysfs_root: Path | None = None,
              nvml: Any = None) -> ModelledMeter:
        """Always available: it uses the profile's watt figures."""
        return cls(profile.energy.watts_per_busy_core, profile.energy.idle_watts)

    def begin(self) -> None:
        """Note process CPU time (every thread) and wall time."""
        self._start = (time.process_time(), time.perf_counter())

    def end(self) -> float:
        """Modelled joules since :meth:`begin`."""
        cpu_s = time.process_time() - self._start[0]
        wall_s = time.perf_counter() - self._start[1]
        return cpu_s * self.watts_per_busy_core + wall_s * self.idle_watts

    def idle_power_w(self) -> float | None:
        """The model's idle figure (nothing is measured)."""
        return self.idle_watts


@METERS.register("none")
class NullMeter(EnergyMeter):
    """The null object: measures nothing, reports no energy."""

    method = "none"
    measures = False
    min_window_s = 0.0

    @classmethod
    def probe(cls, profile: HardwareProfile, *, sysfs_root: Path | None = None,
              nvml: Any = None) -> NullMeter:
        """Always available."""
        return cls()

    def begin(self) -> None:
        """Nothing to start."""

    def end(self) -> float:
        """Always 0 J (and :attr:`measures` is False, so no figure is reported)."""
        return 0.0

    def idle_power_w(self) -> float | None:
        """Not measured."""
        return None


_AUTO_CHAIN = {"cpu": ("rapl", "modelled"), "cuda": ("nvml", "none")}
_CACHE: dict[tuple[Any, ...], EnergyMeter] = {}


def open_meter(profile: HardwareProfile, *, sysfs_root: Path | None = None,
               nvml: Any = None) -> EnergyMeter:
    """The meter ``profile.energy.meter`` asks for (``auto``: the first that works here).

    Real (non-injected) meters are cached per profile setting so idle power is measured once.
    """
    requested = profile.energy.meter
    key = (requested, profile.device, profile.energy)
    if sysfs_root is None and nvml is None and key in _CACHE:
        return _CACHE[key]
    if requested == "auto":
        notes: list[str] = []
        for name in _AUTO_CHAIN["cuda" if profile.is_cuda else "cpu"]:
            try:
                meter = METERS.get(name).probe(profile, sysfs_root=sysfs_root, nvml=nvml)
                break
            except MeterUnavailable as exc:
                notes.append(f"{name}: {exc.reason}")
        meter.notes = tuple(notes)
    else:
        try:
            meter = METERS.get(requested).probe(profile, sysfs_root=sysfs_root, nvml=nvml)
        except MeterUnavailable as exc:
            where = profile.path or profile.name
            raise ProfileError(
                f"{where}: energy meter {requested!r} is unavailable here ({exc.reason}); "
                f"{exc.fix}, or set [energy] meter = \"auto\"") from None
    if sysfs_root is None and nvml is None:
        _CACHE[key] = meter
    return meter


@dataclass(frozen=True)
class EnergyResult:
    """Energy per inference (one input example) in millijoules, and how it was obtained.

    ``mj_per_inference`` is net of idle power (``idle_power_w`` x window) and ``None`` when the
    meter measures nothing or the net energy came out non-positive (a busier idle than load).
    """

    mj_per_inference: float | None
    method: str
    idle_power_w: float | None
    joules_gross: float
    window_s: float
    inferences: int  # input examples processed in the window
    notes: tuple[str, ...] = ()


def measure_energy(model: nn.Module, batches: Sequence[torch.Tensor], profile: HardwareProfile,
                   meter: EnergyMeter, *, min_window_s: float | None = None) -> EnergyResult:
    """Repeat forward passes on cycled real ``batches`` for a window the meter resolves.

    ``model`` and ``batches`` must already be on the profile's device and dtype (see
    ``latency.place_model`` / ``place_input``). The window lasts at least ``min_window_s``
    (default: the meter's own minimum) and at least three forward passes.
    """
    if not meter.measures:
        return EnergyResult(None, meter.method, None, 0.0, 0.0, 0, meter.notes)
    window = max(meter.min_window_s, min_window_s or 0.0)
    cuda = torch.device(profile.device).type == "cuda"
    with applied(profile), torch.inference_mode(), gc_disabled():
        idle_w = meter.idle_power_w()
        for x in batches[:3]:  # warm caches and allocator before the window opens
            model(x)
        if cuda:
            torch.cuda.synchronize()
        meter.begin()
        t0, n, examples = time.perf_counter(), 0, 0
        while n < 3 or time.perf_counter() - t0 < window:
            x = batches[n % len(batches)]
            model(x)
            n, examples = n + 1, examples + int(x.shape[0])
            if cuda:
                torch.cuda.synchronize()
        joules = meter.end()
        wall = meter.window_s or time.perf_counter() - t0
    net = joules - (idle_w or 0.0) * wall
    notes = meter.notes
    if net <= 0:
        notes += (f"net energy {net:.3g} J <= 0 (idle {idle_w} W busier than the load window); "
                  "no figure reported",)
    return EnergyResult(net * 1e3 / examples if net > 0 else None, meter.method, idle_w,
                        joules, wall, examples, notes)


__all__ = ["METERS", "EnergyMeter", "EnergyResult", "MeterUnavailable", "ModelledMeter",
           "NullMeter", "NvmlMeter", "RaplMeter", "measure_energy", "open_meter"]
