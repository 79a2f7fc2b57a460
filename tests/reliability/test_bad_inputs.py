"""Bad input ends in one line naming the value and the fix, exit code 2, and nothing lost.

Each case runs the real command line (``prunebench.search.cli.main``) in a fresh folder that
already holds files (a run folder with a file in it), and checks: exit code 2, exactly one line
on stderr that names the value (no traceback), and every file that was there before is
byte-identical afterwards. Values are checked before any work: no dense reference is timed and
no base model is trained or cached for a refused value.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from prunebench.search.cli import main

Setup = Callable[[Path], None]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An untrained test_convnet checkpoint for digits and a profile with tiny timing."""
    from prunebench.harness.models import create_model
    from prunebench.harness.train import save_checkpoint

    d = tmp_path_factory.mktemp("bad-input-assets")
    save_checkpoint(create_model("test_convnet", 10, 1), d / "convnet.pt",
                    {"model": "test_convnet", "num_classes": 10, "in_channels": 1})
    text = (Path(__file__).resolve().parents[2] / "hw_profiles" / "cpu-1t.toml").read_text()
    for key, value in (("name", '"tiny-1t"'), ("warmup_iters", "1"), ("min_samples", "3"),
                       ("min_time_s", "0.01"), ("max_time_s", "0.05"), ("target_rel_ci", "0.2")):
        text = "\n".join(f"{key} = {value}" if line.split("=")[0].strip() == key else line
                         for line in text.splitlines())
    (d / "tiny-1t.toml").write_text(text + "\n")
    return {"checkpoint": str(d / "convnet.pt"), "profile": str(d / "tiny-1t.toml")}


@pytest.fixture(scope="module")
def sweep_run(tiny: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished baseline sweep (dense + one point) to compare, report and resume."""
    out = tmp_path_factory.mktemp("bad-input-sweep") / "base"
    assert main(["baseline", "--model", "test_convnet", "--dataset", "digits", "--checkpoint",
                 tiny["checkpoint"], "--profile", tiny["profile"], "--ratios", "0.5",
                 "--quiet", "--out", str(out)]) == 0
    return out


def run_cli(argv: list[str]) -> int:
    """``main(argv)``; argparse's own errors exit through SystemExit."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def one_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def make_readonly(path: Path, request: pytest.FixtureRequest) -> None:
    """``path`` a folder this process cannot write (as root: the immutable attribute)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "notes.txt").write_text("keep me\n")
    path.chmod(0o555)

    def undo() -> None:
        subprocess.run(["chattr", "-i", str(path)], capture_output=True, check=False)
        path.chmod(0o755)

    request.addfinalizer(undo)
    if _writable(path):
        subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
    if _writable(path):
        pytest.skip(f"cannot make {path} read-only on this machine")


def _writable(path: Path) -> bool:
    try:
        fd, name = tempfile.mkstemp(dir=path)
    except OSError:
        return False
    os.close(fd)
    os.unlink(name)
    return True


def search(tiny: dict[str, str], *extra: str, out: str = "out") -> list[str]:
    return ["search", "--model", "test_convnet", "--dataset", "digits", "--checkpoint",
            tiny["checkpoint"], "--profile", tiny["profile"], "--warm-start", "0", "--trials",
            "1", "--quiet", "--out", out, *extra]


def baseline(tiny: dict[str, str], *extra: str, out: str = "out") -> list[str]:
    return ["baseline", "--model", "test_convnet", "--dataset", "digits", "--checkpoint",
            tiny["checkpoint"], "--profile", tiny["profile"], "--ratios", "0.5", "--quiet",
            "--out", out, *extra]


def _file(name: str) -> Setup:
    return lambda d: (d / name).write_text("not a folder\n")


def _empty_class(d: Path) -> None:
    from PIL import Image

    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            (d / "imgs" / split / cls).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (10, 10), (60 * i, 90, 30)).save(d / "imgs" / split / cls
                                                                   / f"{i}.png")
    (d / "imgs" / "train" / "bird").mkdir()


# (id, argv(tiny, sweep_run), setup(folder), words the line names, no dense timed in out/)
CASES: list[tuple[str, Callable[..., list[str]], Setup | None, tuple[str, ...], bool]] = [
    # 6: files and folders
    ("search --out is a file", lambda t, r: search(t, out="afile"), _file("afile"),
     ("--out afile", "not a folder"), False),
    ("baseline --out is a file", lambda t, r: baseline(t, out="afile"), _file("afile"),
     ("--out afile", "not a folder"), False),
    ("compare --out is a file", lambda t, r: ["compare", str(r), "--out", "afile",
                                              "--formats", "png"], _file("afile"),
     ("--out afile", "not a folder"), False),
    ("PRUNEBENCH_CACHE is a file", lambda t, r: ["train", "--model", "test_convnet",
                                                 "--epochs", "1", "--quiet"], _file("afile"),
     ("$PRUNEBENCH_CACHE", "afile", "not a folder"), False),
    ("--ratio-step 0", lambda t, r: search(t, "--ratio-step", "0"), None,
     ("--ratio-step 0.0",), True),
    # 8 and 9
    ("search --exec foo", lambda t, r: search(t, "--space", "dynamic", "--exec", "foo"), None,
     ("'foo'", "masked"), True),
    ("search --trials 0", lambda t, r: search(t, "--trials", "0"), None, ("--trials 0",), True),
    ("search --round-to 0", lambda t, r: search(t, "--round-to", "0"), None,
     ("round_to=0",), True),
    ("train --epochs 0", lambda t, r: ["train", "--model", "test_convnet", "--epochs", "0",
                                       "--quiet"], None, ("--epochs", "0 must be >= 1"), False),
    ("imagefolder empty class folder", lambda t, r: [
        "train", "--model", "test_convnet", "--dataset", "imagefolder", "--data-dir", "imgs",
        "--epochs", "1", "--quiet"], _empty_class, ("imgs/train/bird", "no images"), False),
    ("profiles init ../evil", lambda t, r: ["profiles", "init", "../evil", "--dir", "profs"],
     lambda d: (d / "profs").mkdir(), ("'../evil'", "plain name"), False),
    ("--data-dir is a file", lambda t, r: [
        "measure", "--model", "test_convnet", "--dataset", "mnist", "--data-dir", "afile",
        "--profile", t["profile"], "--quiet"], _file("afile"), ("afile", "is a file"), False),
    ("storage password with '@'", lambda t, r: search(
        t, "--storage", "postgresql://pbuser:p@ss@w0rd@127.0.0.1:9/pbdb"), None,
     ("pbuser:***@127.0.0.1", "%40"), True),
    # numbers without range checks before
    ("search --trials -1", lambda t, r: search(t, "--trials", "-1"), None, ("--trials -1",),
     True),
    ("search --timeout 0", lambda t, r: search(t, "--timeout", "0"), None, ("--timeout 0",),
     True),
    ("search --max-ratio 1.5", lambda t, r: search(t, "--max-ratio", "1.5"), None,
     ("--max-ratio 1.5",), True),
    ("search --keep-min 0", lambda t, r: search(t, "--space", "dynamic", "--keep-min", "0"),
     None, ("--keep-min 0",), True),
    ("search --finetune-epochs -1", lambda t, r: search(t, "--finetune-epochs", "-1"), None,
     ("--finetune-epochs -1",), True),
    ("search --remeasure-max -1", lambda t, r: search(t, "--remeasure-max", "-1"), None,
     ("--remeasure-max -1",), True),
    ("search --warm-start -1", lambda t, r: search(t, "--warm-start", "-1"), None,
     ("--warm-start -1",), True),
    ("search --sensitivity -1", lambda t, r: search(t, "--sensitivity", "-1"), None,
     ("--sensitivity -1",), True),
    ("search --sensitivity 7", lambda t, r: search(t, "--sensitivity", "7"), None,
     ("--sensitivity 7", "at most 6"), True),
    ("search --latency-budget-ms 0", lambda t, r: search(t, "--latency-budget-ms", "0"), None,
     ("--latency-budget-ms 0",), True),
    ("search --energy-budget-mj -1", lambda t, r: search(t, "--energy-budget-mj", "-1"), None,
     ("--energy-budget-mj -1",), True),
    ("search --seed -1", lambda t, r: search(t, "--seed", "-1"), None, ("--seed -1",), True),
    ("search --latency-margin 1", lambda t, r: search(t, "--latency-margin", "1"), None,
     ("--latency-margin 1",), True),
    ("measure --seed -1", lambda t, r: ["measure", "--model", "test_convnet", "--dataset",
                                        "digits", "--checkpoint", t["checkpoint"], "--profile",
                                        t["profile"], "--seed", "-1"], None,
     ("--seed", "-1"), False),
    ("baseline --epochs 0", lambda t, r: baseline(t, "--epochs", "0"), None,
     ("--epochs", "0 must be >= 1"), True),
    ("baseline resume with other arguments", lambda t, r: baseline(t, "--method", "fpgm",
                                                                   out="prev"),
     None, ("--out prev", "different arguments"), False),
]


@pytest.fixture()
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The working folder of one case, holding an earlier run folder with a file in it."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("written before; must survive\n")
    yield tmp_path


@pytest.mark.parametrize("name, argv, setup, words, before_work", CASES,
                         ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_nothing_lost(
        name: str, argv: Callable[..., list[str]], setup: Setup | None, words: tuple[str, ...],
        before_work: bool, folder: Path, tiny: dict[str, str], sweep_run: Path,
        _private_cache: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    if setup is not None:
        setup(folder)
    if name.startswith("PRUNEBENCH_CACHE"):
        monkeypatch.setenv("PRUNEBENCH_CACHE", str(folder / "afile"))
    if "resume" in name:
        shutil.copytree(sweep_run, folder / "prev")
    before = snapshot(folder)
    rc = run_cli(argv(tiny, sweep_run))
    line = one_line(capsys.readouterr().err)
    assert rc == 2, line
    for word in words:
        assert word in line
    assert "w0rd" not in line  # no part of a password is echoed
    assert snapshot(folder).items() >= before.items()  # every earlier file byte-identical
    if before_work:
        assert not (folder / "out" / "dense.json").exists()  # refused before dense was timed
    assert not list(_private_cache.rglob("*.pt")), "a base model was trained and cached"
    assert not (folder.parent / "evil.toml").exists()


@pytest.mark.parametrize("where", ["--out", "journal"])
def test_read_only_out_or_journal(where: str, folder: Path, tiny: dict[str, str],
                                  request: pytest.FixtureRequest,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    make_readonly(folder / "ro", request)
    extra = ("--storage", "ro/study.journal") if where == "journal" else ()
    before = snapshot(folder)
    rc = run_cli(search(tiny, *extra, out="ro/run" if where == "--out" else "out"))
    line = one_line(capsys.readouterr().err)
    assert rc == 2 and "cannot be written" in line
    assert ("ro/study.journal" if where == "journal" else "--out ro/run") in line
    assert snapshot(folder) == before


@pytest.mark.parametrize("value", ["1", "true", "True"])
def test_measure_option_kd_reads_a_bool(value: str, tiny: dict[str, str],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    import json

    rc = run_cli(["measure", "--model", "test_convnet", "--input-shape", "1x32x32",
                  "--num-classes", "10", "--profile", tiny["profile"], "--method", "l1",
                  "--ratio", "0.5", "--option", f"kd={value}", "--quiet", "--json"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert json.loads(out.out)["config"]["options"] == {"kd": True}


def test_measure_option_kd_refuses_a_non_bool(tiny: dict[str, str],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    rc = run_cli(["measure", "--model", "test_convnet", "--input-shape", "1x32x32",
                  "--profile", tiny["profile"], "--method", "l1", "--ratio", "0.5",
                  "--option", "kd=maybe"])
    line = one_line(capsys.readouterr().err)
    assert rc == 2 and "kd=maybe" in line and "bool" in line


def test_report_neutralises_html_in_run_names(sweep_run: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    run = tmp_path / "<img src=x onerror=alert(1)>"
    shutil.copytree(sweep_run, run)
    assert run_cli(["report", str(run), "--formats", "png", "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "<img src=x" not in md and "&lt;img src=x onerror=alert(1)&gt;" in md
    assert "<img src=x" not in html


def test_redact_hides_the_whole_password() -> None:
    from prunebench.search.storage import redact

    for password in ("p@ss@w0rd", "a/b?c#d", "plain"):
        text = redact(f"postgresql://user:{password}@db.example:5432/studies")
        assert text == "postgresql://user:***@db.example:5432/studies"
