"""Energy meters driven by fake counters: wraparound, missing sensors, permissions, labels."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from prunebench.harness.errors import ProfileError
from prunebench.harness.measure import energy
from prunebench.harness.measure.energy import (
    METERS,
    ModelledMeter,
    NullMeter,
    NvmlMeter,
    RaplMeter,
    measure_energy,
    open_meter,
)
from prunebench.harness.profiles import EnergySettings, load_profile


def profile(meter: str = "auto", device: str = "cpu") -> object:
    p = load_profile("cpu-1t")
    return replace(p, device=device, energy=EnergySettings(meter, 10.0, 2.0, "test figures"))


def fake_rapl(root: Path, energy_uj: int, max_uj: int = 1000, name: str = "package-0") -> Path:
    zone = root / "intel-rapl:0"
    zone.mkdir(parents=True, exist_ok=True)
    (zone / "name").write_text(name + "\n")
    (zone / "energy_uj").write_text(f"{energy_uj}\n")
    (zone / "max_energy_range_uj").write_text(f"{max_uj}\n")
    sub = root / "intel-rapl:0:0"  # a subdomain (core): inside the package, never added
    sub.mkdir(exist_ok=True)
    (sub / "energy_uj").write_text("5\n")
    return zone


def test_registry_has_all_meters() -> None:
    assert METERS.list() == ["modelled", "none", "nvml", "rapl"]


def test_rapl_delta_and_wraparound(tmp_path: Path) -> None:
    zone = fake_rapl(tmp_path, 900)
    meter = open_meter(profile("rapl"), sysfs_root=tmp_path)
    assert isinstance(meter, RaplMeter) and meter.method == "rapl"
    meter.begin()
    (zone / "energy_uj").write_text("950\n")
    assert meter.end() == pytest.approx(50e-6)
    meter.begin()
    (zone / "energy_uj").write_text("100\n")  # wrapped at 1000 uJ: 50 + 100
    assert meter.end() == pytest.approx(150e-6)


def test_rapl_missing_sensor(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="no RAPL package domains.*modprobe"):
        open_meter(profile("rapl"), sysfs_root=tmp_path)
    meter = open_meter(profile("auto"), sysfs_root=tmp_path)  # auto: quietly modelled
    assert meter.method == "modelled" and "rapl" in meter.notes[0]


def test_rapl_permission_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_rapl(tmp_path, 10)
    real = energy._read_int

    def denied(path: Path) -> int:
        if path.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(energy, "_read_int", denied)
    with pytest.raises(ProfileError, match="permission denied.*chmod o\\+r"):
        open_meter(profile("rapl"), sysfs_root=tmp_path)
    assert open_meter(profile("auto"), sysfs_root=tmp_path).method == "modelled"


class FakeNvml:
    """Just enough of pynvml: a total-energy counter (mJ) or power only (mW)."""

    class NVMLError(Exception):
        pass

    def __init__(self, energy_counter: bool = True, driver: bool = True) -> None:
        self.energy_mj, self.power_mw = 1_000, 50_000
        self.energy_counter, self.driver = energy_counter, driver

    def nvmlInit(self) -> None:  # noqa: N802  (pynvml's names)
        if not self.driver:
            raise self.NVMLError("Driver Not Loaded")

    def nvmlShutdown(self) -> None:  # noqa: N802
        pass

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:  # noqa: N802
        return i

    def nvmlDeviceGetTotalEnergyConsumption(self, h: int) -> int:  # noqa: N802
        if not self.energy_counter:
            raise self.NVMLError("Not Supported")
        return self.energy_mj

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:  # noqa: N802
        return self.power_mw


def test_nvml_energy_counter() -> None:
    nvml = FakeNvml()
    meter = open_meter(profile("nvml", "cuda:0"), nvml=nvml)
    assert isinstance(meter, NvmlMeter) and meter.method == "nvml"
    meter.tick_timeout_s = 0.01  # this fake counter only moves when the test moves it
    meter.begin()
    nvml.energy_mj += 2_500
    assert meter.end() == pytest.approx(2.5)


class SteppingNvml(FakeNvml):
    """A counter that, like a real GPU's, advances only every ``step_s`` at ``watts``."""

    def __init__(self, step_s: float, watts: float) -> None:
        super().__init__()
        self.step_s, self.watts, self.t0 = step_s, watts, time.perf_counter()

    def nvmlDeviceGetTotalEnergyConsumption(self, h: int) -> int:  # noqa: N802
        steps = int((time.perf_counter() - self.t0) / self.step_s)
        return round(steps * self.step_s * self.watts * 1e3)


def test_nvml_windows_are_aligned_to_the_counters_steps() -> None:
    """A 60 ms window on a counter stepping every 40 ms reads the true power, not 0 or 2x."""
    nvml = SteppingNvml(step_s=0.04, watts=100.0)
    meter = open_meter(profile("nvml", "cuda:0"), nvml=nvml)
    for _ in range(3):
        meter.begin()
        time.sleep(0.06)
        joules = meter.end()
        assert meter.window_s is not None and meter.window_s >= 0.06
        assert joules / meter.window_s == pytest.approx(100.0, rel=0.15)
    assert meter.idle_power_w() == pytest.approx(100.0, rel=0.15)


def test_nvml_power_sampling_fallback() -> None:
    nvml = FakeNvml(energy_counter=False)
    meter = open_meter(profile("nvml", "cuda:0"), nvml=nvml)
    assert meter.method == "nvml-sampled"
    meter.sample_period_s = 0.005
    meter.begin()
    time.sleep(0.1)
    assert meter.end() == pytest.approx(50.0 * 0.1, rel=0.3)  # 50 W for ~0.1 s


def test_nvml_missing_driver() -> None:
    with pytest.raises(ProfileError, match="NVML cannot open GPU 0.*nvidia-smi"):
        open_meter(profile("nvml", "cuda:0"), nvml=FakeNvml(driver=False))
    assert open_meter(profile("auto", "cuda:0"), nvml=FakeNvml(driver=False)).method == "none"


def test_modelled_meter_is_labelled_and_follows_cpu_time() -> None:
    meter = open_meter(profile("modelled"))
    assert isinstance(meter, ModelledMeter) and meter.method == "modelled"
    assert meter.idle_power_w() == 2.0
    meter.begin()
    x = torch.randn(200, 200)
    for _ in range(50):
        x = (x @ x).tanh()
    assert meter.end() > 0


def test_measure_energy_per_inference_and_null() -> None:
    p = profile("modelled")
    model = nn.Linear(8, 8).eval()
    meter = ModelledMeter(10.0, 2.0)
    meter.min_window_s = 0.05  # instance override keeps the test short
    res = measure_energy(model, [torch.randn(4, 8)], p, meter)
    assert res.method == "modelled" and res.inferences >= 12 and res.inferences % 4 == 0
    assert res.idle_power_w == 2.0 and res.window_s >= 0.05
    if res.mj_per_inference is not None:  # net of idle; None only if CPU time stayed ~0
        assert res.mj_per_inference > 0
    null = measure_energy(model, [torch.randn(4, 8)], p, NullMeter())
    assert null.mj_per_inference is None and null.method == "none"
