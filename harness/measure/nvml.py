"""NVIDIA GPU energy through NVML: the total-energy counter, or integrated power samples."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from prunebench.harness.measure.meter_base import METERS, EnergyMeter, MeterUnavailable
from prunebench.harness.profiles import HardwareProfile


class _PowerSampler(threading.Thread):
    """Samples ``nvmlDeviceGetPowerUsage`` (mW) every ``period_s`` and integrates it (J)."""

    def __init__(self, nvml: Any, handle: Any, period_s: float) -> None:
        super().__init__(daemon=True, name="prunebench-nvml-power")
        self.nvml, self.handle, self.period_s = nvml, handle, period_s
        self._stop_event = threading.Event()
        self.joules = 0.0

    def _watts(self) -> float:
        return self.nvml.nvmlDeviceGetPowerUsage(self.handle) / 1000.0

    def run(self) -> None:
        last_t, last_w = time.perf_counter(), self._watts()
        while True:
            stopping = self._stop_event.wait(self.period_s)
            now, watts = time.perf_counter(), self._watts()
            self.joules += (now - last_t) * (watts + last_w) / 2.0  # trapezoid
            last_t, last_w = now, watts
            if stopping:
                return

    def finish(self) -> float:
        """Stop sampling (one last sample) and return the integrated joules."""
        self._stop_event.set()
        self.join()
        return self.joules


@METERS.register("nvml")
class NvmlMeter(EnergyMeter):
    """GPU energy from NVML's total-energy counter (mJ); power sampling where it is missing."""

    method = "nvml"
    min_window_s = 1.0  # the energy counter advances about every 100 ms or slower
    idle_window_s = 1.0
    sample_period_s = 0.01
    tick_poll_s = 0.0005  # how often the counter is read while waiting for its next step
    tick_timeout_s = 0.5  # a counter that has not stepped by then is read as it is

    def __init__(self, nvml: Any, handle: Any, sampled: bool) -> None:
        self.nvml, self.handle, self.sampled = nvml, handle, sampled
        if sampled:
            self.method = "nvml-sampled"
            self.min_window_s = 2.0
        self._start_mj, self._start_t = 0, 0.0
        self._sampler: _PowerSampler | None = None

    @classmethod
    def probe(cls, profile: HardwareProfile, *, sysfs_root: Path | None = None,
              nvml: Any = None) -> NvmlMeter:
        """Open the profile's GPU through ``nvml`` (default: the ``pynvml`` module)."""
        if nvml is None:
            try:
                import pynvml as nvml
            except ImportError:
                raise MeterUnavailable("the NVML bindings are not installed",
                                       "pip install nvidia-ml-py") from None
        index = int(profile.device.split(":")[1]) if profile.is_cuda else 0
        try:
            nvml.nvmlInit()
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
        except nvml.NVMLError as exc:
            raise MeterUnavailable(f"NVML cannot open GPU {index} ({exc})",
                                   "install the NVIDIA driver and check `nvidia-smi` works") \
                from None
        try:
            nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
            return cls(nvml, handle, sampled=False)
        except nvml.NVMLError:
            pass  # pre-Volta GPUs: no energy counter, sample power instead
        try:
            nvml.nvmlDeviceGetPowerUsage(handle)
        except nvml.NVMLError as exc:
            raise MeterUnavailable(f"GPU {index} reports neither energy nor power ({exc})",
                                   "use a GPU with power readings or set meter = 'none'") \
                from None
        return cls(nvml, handle, sampled=True)

    def _next_tick(self) -> tuple[int, float]:
        """The counter's value at its next update, and when that update was seen.

        The counter advances in steps (on an H100 every ~100 ms, ~7 J at idle:
        ``results/reference/h100/energy_probe.txt``). Reading it at arbitrary moments puts up to
        one step into each window's error, which at batch 1 outweighed the load's own energy
        above idle; reading both ends just after a step, and timing the window between those
        steps, removes that error.
        """
        read = self.nvml.nvmlDeviceGetTotalEnergyConsumption
        first = read(self.handle)
        deadline = time.perf_counter() + self.tick_timeout_s
        while True:
            value, now = read(self.handle), time.perf_counter()
            if value != first or now >= deadline:
                return value, now
            time.sleep(self.tick_poll_s)

    def begin(self) -> None:
        """Read the counter at its next step, or start the power sampler."""
        self.window_s = None
        if self.sampled:
            self._sampler = _PowerSampler(self.nvml, self.handle, self.sample_period_s)
            self._sampler.start()
        else:
            self._start_mj, self._start_t = self._next_tick()

    def end(self) -> float:
        """Joules since :meth:`begin`."""
        if self.sampled:
            if self._sampler is None:
                raise RuntimeError("end() without begin()")
            joules, self._sampler = self._sampler.finish(), None
            return joules
        end_mj, end_t = self._next_tick()
        self.window_s = end_t - self._start_t
        return (end_mj - self._start_mj) / 1e3

    def close(self) -> None:
        """Shut NVML down."""
        try:
            self.nvml.nvmlShutdown()
        except self.nvml.NVMLError:
            pass
