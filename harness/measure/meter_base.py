"""The energy-meter interface and registry (meters themselves live in energy.py and nvml.py)."""

from __future__ import annotations

import abc
import time
from pathlib import Path
from typing import Any, ClassVar

from prunebench.harness.profiles import HardwareProfile
from prunebench.harness.registry import Registry


class MeterUnavailable(Exception):
    """A meter cannot work here: ``reason`` says why, ``fix`` how to enable it."""

    def __init__(self, reason: str, fix: str) -> None:
        super().__init__(f"{reason}; {fix}")
        self.reason, self.fix = reason, fix


class EnergyMeter(abc.ABC):
    """Cumulative energy between :meth:`begin` and :meth:`end`, in joules."""

    method: ClassVar[str]
    min_window_s: ClassVar[float] = 0.2  # shortest window the counter resolves well (s)
    idle_window_s: ClassVar[float] = 0.5  # how long idle power is sampled (s)
    measures: ClassVar[bool] = True  # False only for the null meter
    notes: tuple[str, ...] = ()  # why ``auto`` fell back, if it did
    # the last window's length as the meter itself timed it (aligned to its counter's steps),
    # or None: then the caller's wall clock around begin()/end() is the window
    window_s: float | None = None
    _idle_w: float | None = None

    @classmethod
    @abc.abstractmethod
    def probe(cls, profile: HardwareProfile, *, sysfs_root: Path | None = None,
              nvml: Any = None) -> EnergyMeter:
        """A working meter, or :class:`MeterUnavailable`."""

    @abc.abstractmethod
    def begin(self) -> None:
        """Start a window."""

    @abc.abstractmethod
    def end(self) -> float:
        """Close the window; joules consumed since :meth:`begin`."""

    def idle_power_w(self) -> float | None:
        """Idle power (W), measured once by sleeping ``idle_window_s``; cached."""
        if self._idle_w is None:
            self.begin()
            t0 = time.perf_counter()
            time.sleep(self.idle_window_s)
            joules = self.end()
            self._idle_w = joules / (self.window_s or time.perf_counter() - t0)
        return self._idle_w

    def close(self) -> None:  # noqa: B027  (optional hook, not abstract)
        """Release the sensor (no-op unless overridden)."""


METERS: Registry[type[EnergyMeter]] = Registry("energy meter")
