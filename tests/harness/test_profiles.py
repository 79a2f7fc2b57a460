"""Hardware profiles: shipped files load; bad files fail naming file, field and value."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from prunebench.harness.errors import ProfileError
from prunebench.harness.fingerprint import MachineFingerprint
from prunebench.harness.profiles import (
    applied,
    builtin_profile_dir,
    check_usable,
    list_profiles,
    load_profile,
)

SHIPPED = ("cpu-1t", "cpu-1t-frozen", "cpu-all", "cuda-b1", "cuda-b32", "cuda-b1-fp16",
           "cpu-1t-compile", "cpu-1t-ort", "cpu-1t-openvino", "cpu-all-ort", "cpu-all-openvino",
           "cuda-b1-compile", "cuda-b1-ort")


def _text(name: str = "mine", **over: str) -> str:
    top = {"name": f'"{name}"', "version": "1", "description": '"test"', "device": '"cpu"',
           "threads": "1", "batch_sizes": "[1, 4]", "dtype": '"float32"',
           "memory_format": '"contiguous"'}
    timing = {"warmup_iters": "1", "min_samples": "5", "min_time_s": "0.0",
              "max_time_s": "0.2", "target_rel_ci": "0.05"}
    energy = {"meter": '"modelled"', "watts_per_busy_core": "5.0", "idle_watts": "1.0",
              "source": '"test"'}
    fp = {"cpu_model": '"*"', "gpu_name": '"*"'}
    for table in (top, timing, energy, fp):
        for k in list(table):
            if k in over:
                table[k] = over.pop(k)
    top.update(over)  # unknown keys land at top level
    lines = [f"{k} = {v}" for k, v in top.items() if v is not None]
    for head, table in (("timing", timing), ("energy", energy), ("fingerprint", fp)):
        lines += [f"[{head}]"] + [f"{k} = {v}" for k, v in table.items() if v is not None]
    return "\n".join(lines) + "\n"


def write_profile(tmp_path: Path, name: str = "mine", **over: str) -> Path:
    """A valid profile file (with ``over`` replacing values; ``None`` drops a field)."""
    path = tmp_path / f"{name}.toml"
    path.write_text(_text(name, **over))
    return path


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_profiles_load(name: str) -> None:
    p = load_profile(name)
    assert p.name == name and p.path is not None and p.path.parent == builtin_profile_dir()
    assert p.batch_sizes and p.default_batch_size == p.batch_sizes[0]
    assert set(SHIPPED) <= set(list_profiles())


def test_shipped_values() -> None:
    assert load_profile("cpu-1t").resolved_threads() == 1
    assert load_profile("cpu-all").batch_sizes == (1, 32)
    fp16 = load_profile("cuda-b1-fp16")
    assert fp16.torch_dtype is torch.float16 and fp16.torch_memory_format is torch.channels_last
    assert load_profile("cpu-1t").engine == "eager"
    assert load_profile("cpu-1t-frozen").engine == "torchscript"
    assert load_profile("cpu-1t-ort").engine == "onnxruntime"
    assert load_profile("cuda-b1-compile").engine == "compile"


def test_engine_defaults_to_eager_and_graph_still_reads(tmp_path: Path) -> None:
    assert load_profile(write_profile(tmp_path)).engine == "eager"  # older files stay valid
    old = tmp_path / "old"
    old.mkdir()
    path = old / "mine.toml"
    path.write_text(_text().replace('memory_format = "contiguous"',
                                    'memory_format = "contiguous"\ngraph = "torchscript"'))
    with pytest.warns(DeprecationWarning, match="'graph' is deprecated; write engine"):
        assert load_profile(path).engine == "torchscript"
    path.write_text(_text().replace('memory_format = "contiguous"', 'memory_format = '
                                    '"contiguous"\ngraph = "torchscript"\nengine = "eager"'))
    with pytest.raises(ProfileError, match="contradicts engine"):
        load_profile(path)


def test_schema_lists_every_registered_engine() -> None:
    from prunebench.harness.engines import ENGINES
    from prunebench.harness.profile_schema import ENGINE_NAMES

    assert sorted(ENGINE_NAMES) == sorted(ENGINES.list())


def test_valid_file_by_path_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_profile(tmp_path)
    assert load_profile(path).timing.max_time_s == 0.2
    monkeypatch.setenv("PRUNEBENCH_PROFILES", str(tmp_path))
    assert load_profile("mine").path == path


@pytest.mark.parametrize(("over", "field", "value"), [
    ({"colour": '"red"'}, "colour", "red"),
    ({"threads": '"many"'}, "threads", "many"),
    ({"threads": "0"}, "threads", "0"),
    ({"version": "1.5"}, "version", "1.5"),
    ({"dtype": '"float64"'}, "dtype", "float64"),
    ({"device": '"gpu"'}, "device", "gpu"),
    ({"batch_sizes": "[]"}, "batch_sizes", "[]"),
    ({"target_rel_ci": "0.0"}, "timing.target_rel_ci", "0.0"),
    ({"max_time_s": "-1"}, "timing.max_time_s", "-1"),
    ({"meter": '"wattmeter"'}, "energy.meter", "wattmeter"),
    ({"engine": '"onnx"'}, "engine", "onnx"),
])
def test_bad_values_name_file_field_value(tmp_path: Path, over: dict, field: str,
                                          value: str) -> None:
    path = write_profile(tmp_path, **over)
    with pytest.raises(ProfileError) as err:
        load_profile(path)
    msg = str(err.value)
    assert str(path) in msg and repr(field) in msg and value in msg


def test_name_must_equal_file_stem(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(_text("mine").replace('name = "mine"', 'name = "other"'))
    with pytest.raises(ProfileError, match=r"'name' = 'other'.*'mine'"):
        load_profile(path)


def test_missing_field_and_section(tmp_path: Path) -> None:
    path = write_profile(tmp_path, dtype=None)
    with pytest.raises(ProfileError, match=r"missing field 'dtype'") as err:
        load_profile(path)
    assert str(path) in str(err.value)
    path.write_text(_text().split("[timing]")[0])
    with pytest.raises(ProfileError, match=r"missing section \[timing\]"):
        load_profile(path)


def test_missing_file_and_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="does not exist"):
        load_profile(tmp_path / "nope.toml")
    with pytest.raises(ProfileError, match="cpu-1t"):  # lists the known ones
        load_profile("no-such-profile")
    (tmp_path / "broken.toml").write_text("name = ")
    with pytest.raises(ProfileError, match="not valid TOML"):
        load_profile(tmp_path / "broken.toml")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_profile_unusable_without_cuda() -> None:
    with pytest.raises(ProfileError, match="no usable CUDA device.*cpu-1t"):
        check_usable(load_profile("cuda-b1"))
    # --force accepts a foreign machine, never a missing device
    with pytest.raises(ProfileError, match="no usable CUDA device"):
        check_usable(load_profile("cuda-b1"), force=True)


def test_fingerprint_mismatch_needs_force(tmp_path: Path) -> None:
    p = load_profile(write_profile(tmp_path, cpu_model='"AMD EPYC*"'))
    other = MachineFingerprint(cpu_model="Intel(R) Xeon(R) Processor", gpu_name=None, cores=2)
    with pytest.raises(ProfileError, match="--force"):
        check_usable(p, fp=other)
    assert check_usable(p, force=True, fp=other) is True
    epyc = MachineFingerprint(cpu_model="AMD EPYC 7763", gpu_name=None, cores=2)
    assert check_usable(p, fp=epyc) is False


def test_applied_sets_and_restores_threads(tmp_path: Path) -> None:
    before = torch.get_num_threads()
    p = load_profile(write_profile(tmp_path, threads="2"))
    with applied(p):
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), applied(p):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before


def test_applied_limits_numpy_blas_to_the_profile_threads(tmp_path: Path) -> None:
    from threadpoolctl import threadpool_info

    def blas() -> list[int]:
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    before = blas()
    assert before  # NumPy's BLAS is loaded
    with applied(load_profile(write_profile(tmp_path, threads="1"))):
        assert blas() == [1] * len(before)
    assert blas() == before
