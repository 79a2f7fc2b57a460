"""The public API: one installed name, ``prunebench``, and its small set of entry points."""

from __future__ import annotations

import shutil
import subprocess
import venv
from dataclasses import replace
from pathlib import Path

import pytest

import prunebench as pb

ROOT = Path(__file__).resolve().parents[1]


def test_public_names_resolve_to_the_library() -> None:
    from prunebench.harness.measurement import Measurement
    from prunebench.harness.pruning.config import PruningConfig

    assert pb.PruningConfig is PruningConfig and pb.Measurement is Measurement
    assert callable(pb.create_model) and callable(pb.load_dataset)
    assert callable(pb.load_profile) and callable(pb.run_search) and callable(pb.compare)
    assert pb.__version__ and set(pb.__all__) >= {"evaluate", "run_search", "compare"}
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        pb.nope  # noqa: B018


def test_evaluate_measures_one_configuration() -> None:
    from prunebench.harness.profiles import TimingSettings

    p = pb.load_profile("cpu-1t")
    fast = replace(p, timing=TimingSettings(warmup_iters=1, min_samples=5, min_time_s=0.0,
                                            max_time_s=0.1, target_rel_ci=0.5),
                   energy=replace(p.energy, meter="modelled"))
    dense = pb.evaluate("test_convnet", profile=fast, progress=False)
    cut = pb.evaluate("test_convnet", {"method": "l1", "global_ratio": 0.5}, profile=fast,
                      progress=False)
    assert isinstance(cut, pb.Measurement) and cut.method == "l1"
    assert cut.macs < dense.macs and dense.accuracy_top1 is None  # cost only without data
    assert cut.to_row()["config_key"] == pb.PruningConfig(method="l1", global_ratio=0.5).key


@pytest.mark.slow
def test_a_plain_install_has_one_top_level_name(tmp_path: Path) -> None:
    """``pip install .`` (not editable) into a fresh venv: ``prunebench`` imports and reports its
    version; ``search`` and ``harness`` are not installed as top-level names."""
    src = tmp_path / "src"  # a copy, so the build leaves nothing in the checkout
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".venv", ".git", "results", "build", "*.egg-info", "__pycache__", ".*_cache"))
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(src)], check=True,
                   cwd=tmp_path, timeout=600)

    def run(code: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(py), "-c", code], cwd=tmp_path, capture_output=True,
                              text=True, timeout=60)

    got = run("import prunebench; print(prunebench.__version__)")
    assert got.returncode == 0 and got.stdout.strip() == pb.__version__, got.stderr
    for name in ("search", "harness"):
        assert run(f"import {name}").returncode != 0, name
    site = next(env_dir.glob("lib/python*/site-packages"))
    for module in ("harness/pruning/static/cut.py", "harness/pruning/dynamic/antidote.py",
                   "harness/engines/onnxruntime.py", "search/runs/search_run.py",
                   "search/cli.py", "harness/py.typed"):
        assert (site / "prunebench" / module).is_file(), module
    assert not (site / "search").exists() and not (site / "harness").exists()
    assert list((env_dir / "share" / "prunebench" / "hw_profiles").glob("cpu-1t.toml"))


def test_pyproject_installs_every_package_folder() -> None:
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"])
    found = {"prunebench"}
    for top in ("harness", "search"):
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT).parts
            found.add(".".join(("prunebench", *rel)))
    assert found == listed, f"missing from pyproject: {sorted(found - listed)}"
