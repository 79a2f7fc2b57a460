"""`prunebench measure` and `prunebench profiles`: JSON output, exit codes, messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from prunebench.search.cli import main

FAST_PROFILE = """name = "fast"
version = 1
description = "short timing for tests"
device = "cpu"
threads = 1
batch_sizes = [1]
dtype = "float32"
memory_format = "contiguous"
[timing]
warmup_iters = 1
min_samples = 5
min_time_s = 0.0
max_time_s = 0.1
target_rel_ci = 0.5
[energy]
meter = "modelled"
watts_per_busy_core = 5.0
idle_watts = 1.0
source = "test figures"
[fingerprint]
cpu_model = "*"
gpu_name = "*"
"""


@pytest.fixture
def fast_profile(tmp_path: Path) -> Path:
    path = tmp_path / "fast.toml"
    path.write_text(FAST_PROFILE)
    return path


def test_measure_json_cost_only(fast_profile: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["measure", "--model", "test_convnet", "--input-shape", "3x16x16",
               "--num-classes", "4", "--profile", str(fast_profile), "--json", "--quiet"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["accuracy_top1"] is None and out["profile"] == "fast"
    assert out["params"] > 0 and out["macs"] > 0 and out["flops"] == 2 * out["macs"]
    assert set(out["latency_ms"]) >= {"p50", "p90", "p99", "n"} and out["latency_ms"]["n"] >= 5
    assert out["energy_method"] == "modelled" and out["energy_mj_per_inference"] > 0
    assert out["peak_memory_bytes"] > 0 and out["environment"]["conv_backend"]


def test_measure_passes_method_options(fast_profile: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    macs = {}
    for extra in ([], ["--option", "inputs=1"]):
        assert main(["measure", "--model", "test_resnet", "--method", "antidote", "--keep",
                     "0.5", *extra, "--profile", str(fast_profile), "--json", "--quiet"]) == 0
        out = json.loads(capsys.readouterr().out)
        macs[bool(extra)] = out["macs"]
        assert out["config"]["options"] == ({"inputs": 1} if extra else {})
    assert macs[True] < macs[False]  # the block inputs are gated too


@pytest.mark.parametrize("value", ["1", "true", "YES", "on"])
def test_measure_bool_option_from_text(value: str, fast_profile: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["measure", "--model", "test_convnet", "--method", "l1", "--ratio", "0.5",
                 "--option", f"kd={value}", "--option", "round_to=2", "--profile",
                 str(fast_profile), "--json", "--quiet"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["config"]["options"] == {"kd": True, "round_to": 2}


@pytest.mark.parametrize(("option", "message"), [
    ("kd=maybe", "option kd=maybe of method 'l1' must be a bool (1/0, true/false, yes/no, "
                 "on/off); e.g. kd=true"),
    ("round_to=0", "option round_to=0 of method 'l1' must be an int >= 1; e.g. round_to=8"),
    ("round_to=x", "option round_to=x of method 'l1' must be an int >= 1; e.g. round_to=8"),
    ("finetune_lr=0", "option finetune_lr=0 of method 'l1' must be a float > 0"),
    ("allocation=best", "option allocation=best of method 'l1' must be a str, one of local, "
                        "global"),
    ("target=params=0.5", "unknown option 'target' for method 'l1'; its options: allocation, "
                          "bn_recalibrate, finetune_epochs, finetune_lr, iterative_steps, kd, "
                          "kd_alpha, kd_temperature, round_to"),
])
def test_measure_bad_option_value_exits_2(option: str, message: str, fast_profile: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["measure", "--model", "test_convnet", "--method", "l1", "--ratio", "0.5",
                 "--option", option, "--profile", str(fast_profile)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("prunebench: error: ") and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_measure_table_says_modelled(fast_profile: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["measure", "--model", "test_convnet", "--input-shape", "3x16x16",
               "--profile", str(fast_profile), "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0 and "MODELLED" in out and "not measured" in out  # accuracy not measured


@pytest.mark.parametrize(("argv", "message"), [
    (["--profile", "no-such-profile"], "unknown hardware profile 'no-such-profile'"),
    (["--profile", "missing/dir/x.toml"], "does not exist"),
    (["--input-shape", "3x16"], "--input-shape '3x16' is not CxHxW"),
    (["--method", "no-such-method"], "unknown pruning method 'no-such-method'"),
    (["--method", "antidote", "--keep", "0.5", "--option", "inputs"],
     "option 'inputs' of method 'antidote' is not KEY=VALUE"),
    (["--method", "antidote", "--keep", "0.5", "--option", "colums=0.5"],
     "unknown option 'colums' for method 'antidote' (did you mean 'columns'?); its options: "
     "columns, inputs, p, rule"),
    (["--option", "inputs=1"], "--option needs a pruning method"),
])
def test_measure_bad_input_exits_2(argv: list[str], message: str,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["measure", "--model", "test_convnet", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_measure_invalid_profile_file_exits_2(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "fast.toml"
    bad.write_text(FAST_PROFILE.replace("threads = 1", "threads = -3"))
    assert main(["measure", "--model", "test_convnet", "--profile", str(bad)]) == 2
    assert "'threads' = -3" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_measure_cuda_profile_on_cpu_machine(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["measure", "--model", "test_convnet", "--profile", "cuda-b1"]) == 2
    err = capsys.readouterr().err
    assert "no usable CUDA device" in err and "cpu-1t" in err


def test_profiles_list_show_check(fast_profile: Path, capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRUNEBENCH_PROFILES", str(fast_profile.parent))
    assert main(["profiles", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["profiles"]}
    assert {"cpu-1t", "cpu-all", "cuda-b1", "fast"} <= set(rows)
    assert rows["cpu-1t"]["available"] == "yes" and rows["cpu-1t"]["fingerprint"] == "match"
    if not torch.cuda.is_available():
        assert rows["cuda-b1"]["available"] == "no"
    assert main(["profiles", "show", "fast", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["timing"]["max_time_s"] == 0.1
    assert main(["profiles", "check", str(fast_profile)]) == 0
    out = capsys.readouterr().out
    assert "threads: set 1" in out and "modelled" in out
    if not torch.cuda.is_available():
        assert main(["profiles", "check", "cuda-b1"]) == 2


def test_profiles_init_writes_a_loadable_matching_profile(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from prunebench.harness.profiles import check_usable, load_profile

    assert main(["profiles", "init", "here", "--dir", str(tmp_path), "--threads", "all",
                 "--batch-sizes", "1,8"]) == 0
    p = load_profile(tmp_path / "here.toml")
    assert p.threads == "all" and p.batch_sizes == (1, 8) and check_usable(p) is False
    assert main(["profiles", "init", "here", "--dir", str(tmp_path)]) == 2  # no overwrite
    assert "already exists" in capsys.readouterr().err
    assert main(["profiles", "init", "x", "--dir", str(tmp_path), "--threads", "lots"]) == 2
