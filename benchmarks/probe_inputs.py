"""Does every bad input end in one clear line, exit code 2, and nothing lost?

Runs a table of bad command lines, bad files and bad environments through the real CLI, each as
a subprocess (``python -m prunebench.search.cli ...``, so a traceback shows as it would to a
user) in its own temporary folder, and calls a case *handled* when:

- the exit code is 2 (a case marked ``rc=0`` is a bad value that must be neutralised instead,
  e.g. HTML in a run name),
- stderr holds exactly one non-empty line and no ``Traceback``,
- every file that existed before the command (in the case's folder and the shared assets) is
  byte-identical afterwards (nothing lost),
- and the case's own check passes (the line names the value; no dense reference was timed; no
  file was written outside the profiles folder; a password is not echoed; no code from a data
  file or checkpoint ran).

The workloads are tiny (``test_convnet`` on digits from a saved checkpoint, a profile with tiny
timing, cost-only ``measure`` runs); PostgreSQL cases point at a closed 127.0.0.1 port. Usage,
from the repository root: ``.venv/bin/python benchmarks/probe_inputs.py [--jobs 2] [--only TEXT]
[--keep]``; it prints one row per case and, as its last line, one JSON object with ``tried``,
``handled`` and ``failing`` (case names with what went wrong).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 180
HTML_NAME = "<img src=x onerror=alert(1)>"  # a run folder's name (no '/')


# ----------------------------------------------------------------------------------- cases
@dataclass
class Ctx:
    """What a case sees: its own folder, the shared assets, a closed port."""

    ws: Path
    assets: Path
    port: int

    @property
    def ckpt(self) -> str:
        return str(self.assets / "convnet.pt")

    @property
    def profile(self) -> str:
        return str(self.assets / "tiny-1t.toml")


Check = Callable[[Ctx, str], "str | None"]  # (ctx, stderr) -> what is wrong, or None


@dataclass
class Case:
    """One bad input: ``argv(ctx)`` after ``setup(ctx)``, with ``env`` added."""

    name: str
    argv: Callable[[Ctx], list[str]]
    setup: Callable[[Ctx], None] | None = None
    env: Callable[[Ctx], dict[str, str]] | None = None
    checks: Sequence[Check] = ()
    rc: int = 2


def mentions(*words: str) -> Check:
    """The error line names each of ``words`` (the value, the option, the path)."""
    def check(ctx: Ctx, err: str) -> str | None:
        missing = [w for w in words if w.lower() not in err.lower()]
        return f"message does not name {missing}" if missing else None
    return check


def never_echoes(*secrets: str) -> Check:
    """Nothing of ``secrets`` (passwords) appears on stderr."""
    def check(ctx: Ctx, err: str) -> str | None:
        leaked = [s for s in secrets if s in err]
        return f"stderr shows {leaked}" if leaked else None
    return check


def absent(*paths: str) -> Check:
    """None of ``paths`` (relative to the case folder) exists afterwards."""
    def check(ctx: Ctx, err: str) -> str | None:
        there = [p for p in paths if (ctx.ws / p).exists()]
        return f"wrote {there}" if there else None
    return check


def not_timed(out: str = "out") -> Check:
    """Validation came before work: no dense reference was measured into ``out``."""
    def check(ctx: Ctx, err: str) -> str | None:
        return "dense was timed before the error" if (ctx.ws / out / "dense.json").exists() \
            else None
    return check


def untrained_not_cached(ctx: Ctx, err: str) -> str | None:
    """No checkpoint was written into the case's cache."""
    found = list((ctx.ws / "cache").rglob("*.pt"))
    return f"cached {found[0].name}" if found else None


def report_inert(ctx: Ctx, err: str) -> str | None:
    """The report of a run named with HTML holds no raw tag from that name."""
    md = next(ctx.ws.rglob("report.md"), None)
    if md is None:
        return "no report.md written"
    return "report.md carries the raw <img> tag" if "<img" in md.read_text().lower() else None


# -------------------------------------------------------------------------------- helpers
def touch(rel: str, text: str = "keep me\n") -> Callable[[Ctx], None]:
    def setup(ctx: Ctx) -> None:
        path = ctx.ws / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return setup


def steps(*fns: Callable[[Ctx], None]) -> Callable[[Ctx], None]:
    def setup(ctx: Ctx) -> None:
        for fn in fns:
            fn(ctx)
    return setup


def out_with_file(ctx: Ctx) -> None:
    """An existing run folder ``out`` holding a file the failing command must not touch."""
    touch("out/notes.txt")(ctx)


def copy_asset(name: str, to: str) -> Callable[[Ctx], None]:
    def setup(ctx: Ctx) -> None:
        shutil.copytree(ctx.assets / name, ctx.ws / to)
    return setup


def readonly(rel: str) -> Callable[[Ctx], None]:
    """A folder this process cannot write (chmod; as root also the immutable attribute)."""
    def setup(ctx: Ctx) -> None:
        path = ctx.ws / rel
        path.mkdir(parents=True, exist_ok=True)
        (path / "notes.txt").write_text("keep me\n")
        path.chmod(0o555)
        if _writable(path):
            subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
        if _writable(path):
            raise _Skip(f"cannot make {path} read-only here")
    return setup


def _writable(path: Path) -> bool:
    try:
        fd, name = tempfile.mkstemp(dir=path)
    except OSError:
        return False
    os.close(fd)
    os.unlink(name)
    return True


def _unlock(ws: Path) -> None:
    for path in [ws, *ws.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            subprocess.run(["chattr", "-i", str(path)], capture_output=True, check=False)
            path.chmod(0o755)


class _Skip(Exception):
    """A case that cannot be set up on this machine (not counted)."""


def code_pickle(path: Path, marker: Path) -> None:
    """A pickle whose loading would run ``touch marker`` (it must never be loaded)."""
    class Evil:
        def __reduce__(self):  # noqa: D105
            return (os.system, (f"touch {marker}",))

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps({b"data": Evil(), b"labels": [0]}))


def bad_profile(text_change: tuple[str, str] | None = None, raw: str | None = None
                ) -> Callable[[Ctx], None]:
    def setup(ctx: Ctx) -> None:
        text = raw if raw is not None else (ctx.assets / "tiny-1t.toml").read_text()
        if text_change is not None:
            lines = [f"{text_change[0]} = {text_change[1]}"
                     if ln.split("=")[0].strip() == text_change[0] else ln
                     for ln in text.splitlines()]
            text = "\n".join(lines) + "\n"
        (ctx.ws / "bad.toml").write_text(text)
    return setup


def imagefolder(empty_class: bool = False, no_val: bool = False) -> Callable[[Ctx], None]:
    def setup(ctx: Ctx) -> None:
        from PIL import Image

        for split in ("train",) + (() if no_val else ("val",)):
            for cls in ("cat", "dog"):
                folder = ctx.ws / "imgs" / split / cls
                folder.mkdir(parents=True, exist_ok=True)
                for i in range(3):
                    Image.new("RGB", (12, 12), (40 * i, 80, 120)).save(folder / f"{i}.png")
        if empty_class:
            (ctx.ws / "imgs" / "train" / "bird").mkdir()
            (ctx.ws / "imgs" / "val" / "bird").mkdir(exist_ok=True)
    return setup


def mnist_truncated(ctx: Ctx) -> None:
    d = ctx.ws / "mnist"
    d.mkdir()
    header = bytes([0, 0, 8, 3]) + (100).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    with gzip.open(d / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(header + bytes(1000))  # 1,000 of 78,400 data bytes
    labels = bytes([0, 0, 8, 1]) + (100).to_bytes(4, "big") + bytes(100)
    with gzip.open(d / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(labels)


def mnist_bad_magic(ctx: Ctx) -> None:
    d = ctx.ws / "mnist"
    d.mkdir()
    (d / "t10k-images-idx3-ubyte").write_bytes(b"PK\x03\x04 not idx at all")
    (d / "t10k-labels-idx1-ubyte").write_bytes(b"PK\x03\x04 not idx at all")


def cifar_code(ctx: Ctx) -> None:
    base = ctx.ws / "cifar" / "cifar-10-batches-py"
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        code_pickle(base / name, ctx.ws / "pwned")


def cifar_garbage(ctx: Ctx) -> None:
    base = ctx.ws / "cifar" / "cifar-10-batches-py"
    base.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (base / name).write_bytes(os.urandom(256))


def ckpt_corrupt(ctx: Ctx) -> None:
    data = (ctx.assets / "convnet.pt").read_bytes()
    (ctx.ws / "bad.pt").write_bytes(data[: len(data) // 3])


def ckpt_code(ctx: Ctx) -> None:
    code_pickle(ctx.ws / "bad.pt", ctx.ws / "pwned")


def ckpt_other(ctx: Ctx) -> None:
    import torch

    torch.save({"weights": torch.zeros(3)}, ctx.ws / "bad.pt")


# ------------------------------------------------------------------------------- the table
def fill(ctx: Ctx, words: Sequence[str]) -> list[str]:
    """``{port}``, ``{profile}`` and ``{ckpt}`` in ``words`` replaced by the case's."""
    subs = {"{port}": str(ctx.port), "{profile}": ctx.profile, "{ckpt}": ctx.ckpt}
    out = []
    for w in words:
        for key, value in subs.items():
            w = w.replace(key, value)
        out.append(w)
    return out


def cases() -> list[Case]:
    """Every probed input (names are unique)."""
    def search(*extra: str, out: str = "out", ckpt: bool = True) -> Callable[[Ctx], list[str]]:
        def argv(ctx: Ctx) -> list[str]:
            base = ["search", "--model", "test_convnet", "--dataset", "digits", "--profile",
                    ctx.profile, "--warm-start", "0", "--trials", "1", "--remeasure-max", "0",
                    "--quiet", "--out", out]
            return base + (["--checkpoint", ctx.ckpt] if ckpt else []) + fill(ctx, extra)
        return argv

    def baseline(*extra: str, out: str = "out", ckpt: bool = True
                 ) -> Callable[[Ctx], list[str]]:
        def argv(ctx: Ctx) -> list[str]:
            base = ["baseline", "--model", "test_convnet", "--dataset", "digits", "--profile",
                    ctx.profile, "--ratios", "0.5", "--quiet", "--out", out]
            return base + (["--checkpoint", ctx.ckpt] if ckpt else []) + fill(ctx, extra)
        return argv

    def cost(*extra: str) -> Callable[[Ctx], list[str]]:
        return lambda ctx: ["measure", "--model", "test_convnet", "--input-shape", "1x32x32",
                            "--num-classes", "10", "--profile", ctx.profile, "--quiet",
                            *extra]

    def data(dataset: str, data_dir: str, *extra: str) -> Callable[[Ctx], list[str]]:
        return lambda ctx: ["measure", "--model", "test_convnet", "--dataset", dataset,
                            "--data-dir", data_dir, "--profile", ctx.profile, "--quiet",
                            *extra]

    def argv(*words: str) -> Callable[[Ctx], list[str]]:
        return lambda ctx: fill(ctx, words)

    pg = "postgresql://pbuser:{pw}@127.0.0.1:{port}/pbdb"
    cache_file = {"PRUNEBENCH_CACHE": "afile"}
    t = [
        # ---- 6: files and folders that cannot be written
        Case("search --out is a file", search(out="afile"), touch("afile"),
             checks=[mentions("afile", "not a folder")]),
        Case("search --out read-only", search(out="ro/run"), readonly("ro"),
             checks=[mentions("ro/run")]),
        Case("search --out under a file", search(out="afile/run"), touch("afile"),
             checks=[mentions("afile")]),
        Case("search journal read-only", search("--storage", "ro/study.journal"),
             steps(out_with_file, readonly("ro")), checks=[mentions("ro/study.journal")]),
        Case("search journal is a folder", search("--storage", "jdir"), touch("jdir/x"),
             checks=[mentions("jdir")]),
        Case("search PRUNEBENCH_CACHE is a file", search(ckpt=False), touch("afile"),
             env=lambda ctx: cache_file, checks=[mentions("afile"), not_timed()]),
        Case("baseline --out is a file", baseline(out="afile"), touch("afile"),
             checks=[mentions("afile")]),
        Case("baseline --out read-only", baseline(out="ro/run"), readonly("ro"),
             checks=[mentions("ro/run")]),
        Case("compare --out is a file", argv("compare", "base", "--out", "afile", "--formats",
                                             "png"),
             steps(copy_asset("baseline-run", "base"), touch("afile")),
             checks=[mentions("afile")]),
        Case("report --out read-only", argv("report", "base", "--out", "ro/rep", "--formats",
                                            "png"),
             steps(copy_asset("baseline-run", "base"), readonly("ro")),
             checks=[mentions("ro/rep")]),
        Case("train --cache-dir is a file", argv("train", "--model", "test_convnet",
                                                 "--epochs", "1", "--cache-dir", "afile",
                                                 "--quiet"), touch("afile"),
             checks=[mentions("afile")]),
        Case("train PRUNEBENCH_CACHE is a file", argv("train", "--model", "test_convnet",
                                                      "--epochs", "1", "--quiet"),
             touch("afile"), env=lambda ctx: cache_file, checks=[mentions("afile")]),
        Case("finetune --out is a folder", argv("finetune", "--model", "test_convnet",
                                                "--dataset", "digits", "--checkpoint",
                                                "{ckpt}", "--method", "antidote",
                                                "--feature-decay", "1e-4", "--out", "out",
                                                "--quiet"), out_with_file,
             checks=[mentions("out")]),
        Case("search --ratio-step 0", search("--ratio-step", "0"), out_with_file,
             checks=[mentions("--ratio-step"), not_timed()]),
        Case("search --ratio-step -0.1", search("--ratio-step", "-0.1"), out_with_file,
             checks=[mentions("--ratio-step"), not_timed()]),
        Case("search --ratio-step above --max-ratio", search("--ratio-step", "0.9"),
             out_with_file, checks=[mentions("--ratio-step"), not_timed()]),
        # ---- 8: --exec checked with the spec
        Case("search --exec foo", search("--space", "dynamic", "--exec", "foo"), out_with_file,
             checks=[mentions("foo"), not_timed()]),
        Case("search --exec fast for antidote", search("--space", "dynamic", "--exec", "fast"),
             out_with_file, checks=[mentions("fast"), not_timed()]),
        Case("search --exec in a static space", search("--exec", "masked"), out_with_file,
             checks=[mentions("--exec"), not_timed()]),
        Case("measure --exec fast for antidote", cost("--method", "antidote", "--keep", "0.5",
                                                      "--exec", "fast"),
             checks=[mentions("fast")]),
        # ---- 9: accepted though wrong
        Case("search --trials 0", search("--trials", "0"), out_with_file,
             checks=[mentions("--trials"), not_timed()]),
        Case("search --round-to 0", search("--round-to", "0"), out_with_file,
             checks=[mentions("round_to"), not_timed()]),
        Case("train --epochs 0", argv("train", "--model", "test_convnet", "--epochs", "0",
                                      "--cache-dir", "cache", "--quiet"),
             checks=[mentions("--epochs"), untrained_not_cached]),
        Case("baseline --epochs 0", baseline("--epochs", "0", ckpt=False), out_with_file,
             checks=[mentions("--epochs"), not_timed()]),
        Case("train imagefolder empty class folder",
             argv("train", "--model", "test_convnet", "--dataset", "imagefolder",
                  "--data-dir", "imgs", "--epochs", "1", "--cache-dir", "cache", "--quiet"),
             imagefolder(empty_class=True), checks=[mentions("bird"), untrained_not_cached]),
        Case("profiles init ../evil", argv("profiles", "init", "../evil", "--dir", "profs"),
             touch("profs/keep.toml", "# keep\n"),
             checks=[mentions("../evil"), absent("evil.toml", "../evil.toml")]),
        Case("profiles init sub/evil", argv("profiles", "init", "sub/evil", "--dir", "profs"),
             touch("profs/keep.toml", "# keep\n"),
             checks=[mentions("sub/evil"), absent("profs/sub")]),
        Case("measure --data-dir is a file", data("mnist", "afile"), touch("afile"),
             checks=[mentions("afile", "file")]),
        Case("search storage password with '@'",
             search("--storage", pg.format(pw="p@ss@w0rd", port="{port}")),
             checks=[never_echoes("p@ss", "ss@w0rd", "w0rd")]),
        Case("report of a run named with HTML", argv("report", HTML_NAME, "--formats", "png"),
             copy_asset("baseline-run", HTML_NAME), checks=[report_inert], rc=0),
        # ---- range checks of the other numbers
        Case("search --trials -1", search("--trials", "-1"), out_with_file,
             checks=[mentions("--trials"), not_timed()]),
        Case("search --timeout 0", search("--timeout", "0"), out_with_file,
             checks=[mentions("--timeout"), not_timed()]),
        Case("search --timeout -5", search("--timeout", "-5"), out_with_file,
             checks=[mentions("--timeout")]),
        Case("search --max-ratio 1.5", search("--max-ratio", "1.5"), out_with_file,
             checks=[mentions("--max-ratio")]),
        Case("search --max-ratio -0.2", search("--max-ratio", "-0.2"), out_with_file,
             checks=[mentions("--max-ratio")]),
        Case("search --keep-min 0", search("--space", "dynamic", "--keep-min", "0"),
             out_with_file, checks=[mentions("--keep-min")]),
        Case("search --keep-min 1.5", search("--space", "dynamic", "--keep-min", "1.5"),
             out_with_file, checks=[mentions("--keep-min")]),
        Case("search --finetune-epochs -1", search("--finetune-epochs", "-1"), out_with_file,
             checks=[mentions("--finetune-epochs")]),
        Case("search --remeasure-max -1", search("--remeasure-max", "-1"), out_with_file,
             checks=[mentions("--remeasure-max")]),
        Case("search --warm-start -2", search("--warm-start", "-2"), out_with_file,
             checks=[mentions("--warm-start")]),
        Case("search --seed -1", search("--seed", "-1"), out_with_file,
             checks=[mentions("--seed")]),
        Case("search --latency-margin 1", search("--latency-margin", "1"), out_with_file,
             checks=[mentions("--latency-margin")]),
        Case("search --latency-margin -0.1", search("--latency-margin", "-0.1"), out_with_file,
             checks=[mentions("--latency-margin")]),
        Case("search --latency-budget-ms 0", search("--latency-budget-ms", "0"), out_with_file,
             checks=[mentions("--latency-budget-ms")]),
        Case("search --latency-budget-ms -3", search("--latency-budget-ms", "-3"),
             out_with_file, checks=[mentions("--latency-budget-ms")]),
        Case("search --energy-budget-mj nan", search("--energy-budget-mj", "nan"),
             out_with_file, checks=[mentions("--energy-budget-mj")]),
        Case("search --macs-budget 0", search("--macs-budget", "0"), out_with_file,
             checks=[mentions("--macs-budget")]),
        Case("search --params-budget -1", search("--params-budget", "-1"), out_with_file,
             checks=[mentions("--params-budget")]),
        Case("search --latency-anchor-ms inf", search("--latency-anchor-ms", "inf"),
             out_with_file, checks=[mentions("--latency-anchor-ms")]),
        Case("search --trials 1.5", search("--trials", "1.5"), checks=[mentions("--trials")]),
        Case("baseline --seed -1", baseline("--seed", "-1"), out_with_file,
             checks=[mentions("--seed")]),
        Case("baseline --round-to 0", baseline("--round-to", "0"), out_with_file,
             checks=[mentions("round")]),
        Case("baseline --finetune-epochs -1", baseline("--finetune-epochs", "-1"),
             out_with_file, checks=[mentions("finetune")]),
        Case("measure --seed -1", argv("measure", "--model", "test_convnet", "--dataset",
                                       "digits", "--checkpoint", "{ckpt}", "--profile",
                                       "{profile}", "--seed", "-1", "--quiet"),
             checks=[mentions("--seed")]),
        Case("measure --num-classes 0", cost("--num-classes", "0"),
             checks=[mentions("--num-classes")]),
        Case("measure --ratio 1.5", cost("--method", "l1", "--ratio", "1.5"),
             checks=[mentions("1.5")]),
        Case("measure --keep 0", cost("--method", "antidote", "--keep", "0"),
             checks=[mentions("--keep")]),
        Case("measure --input-shape 3x", cost("--input-shape", "3x"),
             checks=[mentions("3x")]),
        Case("measure --trial -1", argv("measure", "--from", "base", "--trial", "-1"),
             copy_asset("baseline-run", "base"), checks=[mentions("--trial")]),
        Case("train --lr 0", argv("train", "--model", "test_convnet", "--lr", "0", "--quiet"),
             checks=[mentions("--lr")]),
        Case("train --batch-size 0", argv("train", "--model", "test_convnet", "--batch-size",
                                          "0", "--quiet"), checks=[mentions("--batch-size")]),
        Case("train --image-size 4", argv("train", "--model", "test_convnet", "--image-size",
                                          "4", "--quiet"), checks=[mentions("--image-size")]),
        Case("train --split-seed -3", argv("train", "--model", "test_convnet", "--split-seed",
                                           "-3", "--quiet"), checks=[mentions("--split-seed")]),
        Case("finetune --epochs 0", argv("finetune", "--model", "test_convnet", "--dataset",
                                         "digits", "--checkpoint", "{ckpt}", "--method",
                                         "antidote", "--feature-decay", "1e-4", "--epochs",
                                         "0", "--quiet"), checks=[mentions("--epochs")]),
        Case("finetune --kd 1", argv("finetune", "--model", "test_convnet", "--dataset",
                                     "digits", "--checkpoint", "{ckpt}", "--method",
                                     "antidote", "--feature-decay", "1e-4", "--kd", "1",
                                     "--quiet"), checks=[mentions("--kd")]),
        Case("finetune --lr -1", argv("finetune", "--model", "test_convnet", "--dataset",
                                      "digits", "--method", "antidote", "--feature-decay",
                                      "1e-4", "--lr", "-1", "--quiet"),
             checks=[mentions("--lr")]),
        # ---- training device, recipes, weights (issue 20)
        Case("train --train-device cuda:9", argv("train", "--model", "test_convnet",
                                                 "--train-device", "cuda:9", "--quiet"),
             checks=[mentions("cuda:9"), untrained_not_cached]),
        Case("train --amp fp8", argv("train", "--model", "test_convnet", "--amp", "fp8",
                                     "--quiet"), checks=[mentions("--amp")]),
        Case("train --recipe nope", argv("train", "--model", "test_convnet", "--recipe", "nope",
                                         "--quiet"), checks=[mentions("nope", "cifar-resnet")]),
        Case("train --recipe-file lr = -1", argv("train", "--model", "test_convnet",
                                                 "--recipe-file", "r.toml", "--quiet"),
             touch("r.toml", "lr = -1\n"), checks=[mentions("lr = -1"), untrained_not_cached]),
        Case("train --recipe-file unknown field", argv("train", "--model", "test_convnet",
                                                       "--recipe-file", "r.toml", "--quiet"),
             touch("r.toml", "learning_rate = 0.1\n"), checks=[mentions("learning_rate")]),
        Case("train --weights of another network", argv("train", "--model", "test_resnet",
                                                        "--weights", "{ckpt}", "--quiet"),
             checks=[mentions("test_convnet"), untrained_not_cached]),
        Case("search --image-size 4", argv("search", "--model", "test_convnet", "--dataset",
                                           "digits", "--image-size", "4", "--out", "out",
                                           "--quiet"),
             checks=[mentions("--image-size"), absent("out")]),
        Case("model package.module:factory missing", argv("train", "--model",
                                                          "no_such_pkg.nets:cnn", "--quiet"),
             checks=[mentions("no_such_pkg.nets")]),
        Case("compare --budget-ms -1", argv("compare", "base", "--budget-ms", "-1"),
             copy_asset("baseline-run", "base"), checks=[mentions("--budget-ms")]),
        Case("worker --trials 0", argv("worker", "--storage",
                                       "postgresql://u:pw@127.0.0.1:{port}/db",
                                       "--study", "s", "--trials", "0"),
             checks=[mentions("--trials")]),
        Case("worker --max-retry -1", argv("worker", "--storage",
                                           "postgresql://u:pw@127.0.0.1:{port}/db",
                                           "--study", "s", "--max-retry", "-1"),
             checks=[mentions("--max-retry")]),
        Case("worker --heartbeat-interval 0", argv("worker", "--storage",
                                                   "postgresql://u:pw@127.0.0.1:{port}/db",
                                                   "--study", "s", "--heartbeat-interval",
                                                   "0"), checks=[mentions("--heartbeat")]),
        Case("profiles init --threads many", argv("profiles", "init", "box", "--dir", "profs",
                                                  "--threads", "many"),
             checks=[mentions("many"), absent("profs/box.toml")]),
        Case("profiles init --batch-sizes 0", argv("profiles", "init", "box", "--dir", "profs",
                                                   "--batch-sizes", "0"),
             checks=[absent("profs/box.toml")]),
        # ---- 7: method options
        Case("measure --option kd=maybe", cost("--method", "l1", "--ratio", "0.5", "--option",
                                               "kd=maybe"), checks=[mentions("kd")]),
        Case("measure --option kd=2", cost("--method", "l1", "--ratio", "0.5", "--option",
                                           "kd=2"), checks=[mentions("kd")]),
        Case("measure --option unknown key", cost("--method", "l1", "--ratio", "0.5",
                                                  "--option", "nosuch=1"),
             checks=[mentions("nosuch")]),
        Case("measure --option without =", cost("--method", "l1", "--ratio", "0.5",
                                                "--option", "kd"), checks=[mentions("kd")]),
        Case("measure --option round_to=0", cost("--method", "l1", "--ratio", "0.5",
                                                 "--option", "round_to=0"),
             checks=[mentions("round_to")]),
        Case("measure --option for dense", cost("--option", "kd=1"),
             checks=[mentions("--option")]),
        # ---- names
        Case("search unknown model", lambda ctx: search(ckpt=False)(ctx)[:2] + ["nosuchnet"]
             + search(ckpt=False)(ctx)[3:], out_with_file, checks=[mentions("nosuchnet")]),
        Case("search unknown dataset", lambda ctx: [
            "nosuchdata" if w == "digits" else w for w in search()(ctx)], out_with_file,
             checks=[mentions("nosuchdata")]),
        Case("search unknown method", search("--method", "nosuchprune"), out_with_file,
             checks=[mentions("nosuchprune")]),
        Case("search unknown profile", lambda ctx: [
            "nosuchbox" if w == ctx.profile else w for w in search()(ctx)], out_with_file,
             checks=[mentions("nosuchbox")]),
        Case("search unknown sampler", search("--sampler", "annealing"), out_with_file,
             checks=[mentions("annealing")]),
        Case("search unknown objective", search("--objectives", "accuracy,speed"),
             out_with_file, checks=[mentions("speed")]),
        Case("search unknown space", search("--space", "spiral"), out_with_file,
             checks=[mentions("spiral")]),
        Case("search unknown latency frame", search("--latency-frame", "wobbly"),
             out_with_file, checks=[mentions("wobbly")]),
        Case("search dynamic method in static space", search("--method", "antidote"),
             out_with_file, checks=[mentions("antidote")]),
        Case("baseline dynamic method", baseline("--method", "antidote"), out_with_file,
             checks=[mentions("antidote")]),
        Case("baseline unknown method", baseline("--method", "nosuchprune"), out_with_file,
             checks=[mentions("nosuchprune")]),
        Case("baseline --ratios a,b", baseline("--ratios", "a,b"), out_with_file,
             checks=[mentions("a,b")]),
        Case("baseline --ratios 1.0", baseline("--ratios", "1.0"), out_with_file,
             checks=[mentions("1.0")]),
        Case("measure unknown model", argv("measure", "--model", "nosuchnet", "--input-shape",
                                           "1x32x32", "--profile", "{profile}"),
             checks=[mentions("nosuchnet")]),
        Case("measure unknown method", cost("--method", "nosuchprune"),
             checks=[mentions("nosuchprune")]),
        Case("measure unknown profile", argv("measure", "--model", "test_convnet",
                                             "--input-shape", "1x32x32", "--profile",
                                             "nosuchbox"), checks=[mentions("nosuchbox")]),
        Case("train unknown dataset", argv("train", "--model", "test_convnet", "--dataset",
                                           "nosuchdata", "--quiet"),
             checks=[mentions("nosuchdata")]),
        # ---- profile files
        Case("profile TOML syntax error", argv("measure", "--model", "test_convnet",
                                               "--input-shape", "1x32x32", "--profile",
                                               "bad.toml"),
             bad_profile(raw="name = \"bad\"\nthreads = [\n"), checks=[mentions("bad.toml")]),
        Case("profile threads -1", argv("measure", "--model", "test_convnet", "--input-shape",
                                        "1x32x32", "--profile", "bad.toml"),
             bad_profile(("threads", "-1")), checks=[mentions("threads")]),
        Case("profile unknown dtype", argv("measure", "--model", "test_convnet",
                                           "--input-shape", "1x32x32", "--profile", "bad.toml"),
             bad_profile(("dtype", '"float7"')), checks=[mentions("float7")]),
        Case("profile name differs from file", argv("profiles", "show", "bad.toml"),
             bad_profile(), checks=[mentions("bad")]),
        Case("profiles check of a bad file", argv("profiles", "check", "bad.toml"),
             bad_profile(("min_samples", '"many"')), checks=[mentions("min_samples")]),
        Case("profiles init over an existing file", argv("profiles", "init", "keep", "--dir",
                                                         "profs"),
             touch("profs/keep.toml", "# keep\n"), checks=[mentions("--overwrite")]),
        # ---- data files
        Case("mnist truncated IDX", data("mnist", "mnist"), mnist_truncated,
             checks=[mentions("t10k-images")]),
        Case("mnist IDX bad magic", data("mnist", "mnist"), mnist_bad_magic,
             checks=[mentions("magic")]),
        Case("mnist folder without files", data("mnist", "empty"), touch("empty/readme.txt"),
             checks=[mentions("empty")]),
        Case("cifar pickle with code", data("cifar10", "cifar"), cifar_code,
             checks=[absent("pwned"), mentions("data_batch_1")]),
        Case("cifar corrupt pickle", data("cifar10", "cifar"), cifar_garbage,
             checks=[mentions("data_batch_1")]),
        Case("cifar wrong folder", data("cifar10", "empty"), touch("empty/readme.txt"),
             checks=[mentions("cifar-10-batches-py")]),
        Case("imagefolder without val/", data("imagefolder", "imgs"),
             imagefolder(no_val=True), checks=[mentions("val")]),
        Case("imagefolder empty class folder (measure)", data("imagefolder", "imgs"),
             imagefolder(empty_class=True), checks=[mentions("bird")]),
        Case("data dir missing", data("mnist", "nowhere"), checks=[mentions("nowhere")]),
        Case("digits with --data-dir", data("digits", "empty"), touch("empty/x"),
             checks=[mentions("--data-dir")]),
        # ---- checkpoints
        Case("search checkpoint missing", lambda ctx: [
            "nope.pt" if w == ctx.ckpt else w for w in search()(ctx)], out_with_file,
             checks=[mentions("nope.pt")]),
        Case("search checkpoint corrupt", lambda ctx: [
            "bad.pt" if w == ctx.ckpt else w for w in search()(ctx)],
             steps(out_with_file, ckpt_corrupt), checks=[mentions("bad.pt"), not_timed()]),
        Case("measure checkpoint with code", argv("measure", "--model", "test_convnet",
                                                  "--dataset", "digits", "--checkpoint",
                                                  "bad.pt", "--profile", "{profile}",
                                                  "--quiet"),
             ckpt_code, checks=[mentions("bad.pt"), absent("pwned")]),
        Case("measure checkpoint of another kind", argv("measure", "--model", "test_convnet",
                                                        "--dataset", "digits", "--checkpoint",
                                                        "bad.pt", "--profile", "{profile}",
                                                        "--quiet"),
             ckpt_other, checks=[mentions("bad.pt")]),
        Case("baseline checkpoint of another model", baseline("--model", "resnet20"),
             out_with_file, checks=[mentions("convnet.pt")]),
        # ---- storages
        Case("search storage bad scheme", search("--storage", "ftp://host/study"),
             out_with_file, checks=[mentions("ftp")]),
        Case("search storage unreachable port",
             search("--storage", "postgresql://pbuser@127.0.0.1:{port}/pbdb"), out_with_file,
             checks=[mentions("127.0.0.1")]),
        Case("search storage wrong password (closed port)",
             search("--storage", pg.format(pw="s3cr3t-pw", port="{port}")), out_with_file,
             checks=[never_echoes("s3cr3t-pw")]),
        Case("search storage without database",
             search("--storage", "postgresql://u:pw@127.0.0.1:{port}"), out_with_file,
             checks=[mentions("database")]),
        Case("search --resume of no study", search("--resume"), out_with_file,
             checks=[mentions("--resume")]),
        Case("worker storage unreachable", argv("worker", "--storage",
                                                pg.format(pw="s3cr3t-pw", port="{port}"),
                                                "--study", "s", "--quiet"),
             checks=[never_echoes("s3cr3t-pw")]),
        Case("worker journal storage", argv("worker", "--storage", "study.journal", "--study",
                                            "s", "--quiet"), checks=[mentions("journal")]),
        Case("study status bad scheme", argv("study", "status", "--storage", "ftp://h/x",
                                             "--study", "s"), checks=[mentions("ftp")]),
        Case("study create unreachable", lambda ctx: [
            "study", "create", "--storage", pg.format(pw="s3cr3t-pw", port=ctx.port),
            "--study", "s", "--model", "test_convnet", "--dataset", "digits", "--profile",
            ctx.profile, "--trials", "2"], checks=[never_echoes("s3cr3t-pw")]),
        Case("report storage without --study", argv("report",
                                                    "postgresql://u:pw@127.0.0.1:{port}/db"),
             checks=[mentions("--study")]),
        # ---- run folders
        Case("compare missing folder", argv("compare", "nowhere", "--formats", "png"),
             checks=[mentions("nowhere")]),
        Case("compare wrong folder", argv("compare", "empty", "--formats", "png"),
             touch("empty/readme.txt"), checks=[mentions("empty")]),
        Case("report missing folder", argv("report", "nowhere"), checks=[mentions("nowhere")]),
        Case("compare --formats gif", argv("compare", "base", "--formats", "gif"),
             copy_asset("baseline-run", "base"), checks=[mentions("gif")]),
        Case("compare unknown objective", argv("compare", "base", "--objectives",
                                               "accuracy,speed", "--formats", "png"),
             copy_asset("baseline-run", "base"), checks=[mentions("speed")]),
        Case("measure --from missing run", argv("measure", "--from", "nowhere", "--trial",
                                                "1"), checks=[mentions("nowhere")]),
        Case("measure --from unknown point", argv("measure", "--from", "base", "--point",
                                                  "l1 r=0.99", "--quiet"),
             copy_asset("baseline-run", "base"), checks=[mentions("0.99")]),
        Case("measure --trial without --from", cost("--trial", "3"),
             checks=[mentions("--from")]),
        Case("baseline resume with other arguments", baseline("--method", "fpgm", out="base"),
             copy_asset("baseline-run", "base"), checks=[mentions("base")]),
        Case("search resume with a smaller budget", search("--trials", "0", out="prev"),
             copy_asset("search-run", "prev"), checks=[mentions("--trials")]),
        Case("search resume with --exec foo", search("--space", "dynamic", "--exec", "foo",
                                                     out="prev"),
             copy_asset("search-run", "prev"), checks=[mentions("foo")]),
    ]
    names = [c.name for c in t]
    assert len(names) == len(set(names)), "case names must be unique"
    return t


# ------------------------------------------------------------------------------- the runner
def closed_port() -> int:
    """A 127.0.0.1 port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env(cwd: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of one command: its own checkpoint cache, one BLAS thread."""
    return {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "PRUNEBENCH_CACHE": str(cwd / "cache"), **(env or {})}


def cli(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m prunebench.search.cli argv`` in ``cwd`` (to make the assets)."""
    return subprocess.run([sys.executable, "-m", "prunebench.search.cli", *argv], cwd=cwd,
                          env={**os.environ, **child_env(cwd)}, capture_output=True,
                          text=True, timeout=TIMEOUT_S, check=False)


class Running:
    """One command under way: a fresh interpreter (``subprocess``) or a fork of this warm one.

    A fork runs the console script's ``main`` as a new interpreter would (an exception that
    escapes it prints its traceback on stderr, exit code 1) without paying torch's import for
    every case; ``--subprocess`` starts each case in a fresh interpreter instead.
    """

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str] | None,
                 fresh: bool) -> None:
        self.err_path = cwd.parent / f"{cwd.name}.stderr"
        self.start = time.monotonic()
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid = 0
        if fresh:
            with open(self.err_path, "wb") as err:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "prunebench.search.cli", *argv], cwd=cwd,
                    env={**os.environ, **child_env(cwd, env)}, stdout=subprocess.DEVNULL,
                    stderr=err)
            return
        self.pid = os.fork()
        if self.pid == 0:  # the child: never returns
            _run_forked(argv, cwd, child_env(cwd, env), self.err_path)

    def poll(self) -> int | None:
        """The exit code, or ``None`` while it runs; killed after ``TIMEOUT_S``."""
        timed_out = time.monotonic() - self.start > TIMEOUT_S
        if self.proc is not None:
            if timed_out and self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
                return -9
            return self.proc.poll()
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        if pid == 0:
            if not timed_out:
                return None
            os.kill(self.pid, 9)
            _, status = os.waitpid(self.pid, 0)
        return os.waitstatus_to_exitcode(status)

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")


def _run_forked(argv: list[str], cwd: Path, env: dict[str, str], err_path: Path) -> None:
    import traceback

    rc = 1
    try:
        os.chdir(cwd)
        os.environ.update(env)
        err = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(err, 2)
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
        from prunebench.search.cli import main as cli_main

        try:
            rc = cli_main(argv)
        except SystemExit as exc:  # argparse
            code = exc.code
            rc = code if isinstance(code, int) else (0 if code is None else 1)
            if not isinstance(code, int | None):
                print(code, file=sys.stderr)
        except BaseException:  # what the interpreter would print for an escaping exception
            traceback.print_exc()
            rc = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)


def make_assets(d: Path) -> None:
    """The checkpoint, the tiny profile, one baseline run and one search run."""
    from prunebench.harness.models import create_model
    from prunebench.harness.train import save_checkpoint

    d.mkdir(parents=True, exist_ok=True)
    save_checkpoint(create_model("test_convnet", 10, 1), d / "convnet.pt",
                    {"model": "test_convnet", "num_classes": 10, "in_channels": 1})
    text = (ROOT / "hw_profiles" / "cpu-1t.toml").read_text()
    for key, value in (("name", '"tiny-1t"'), ("warmup_iters", "1"), ("min_samples", "3"),
                       ("min_time_s", "0.01"), ("max_time_s", "0.05"),
                       ("target_rel_ci", "0.2")):
        text = "\n".join(f"{key} = {value}" if line.split("=")[0].strip() == key else line
                         for line in text.splitlines())
    (d / "tiny-1t.toml").write_text(text + "\n")
    common = ["--model", "test_convnet", "--dataset", "digits", "--checkpoint",
              str(d / "convnet.pt"), "--profile", str(d / "tiny-1t.toml"), "--quiet"]
    for argv in (["baseline", *common, "--ratios", "0.5", "--out", "baseline-run"],
                 ["search", *common, "--trials", "1", "--warm-start", "0", "--remeasure-max",
                  "0", "--sampler", "random", "--out", "search-run"]):
        done = cli(argv, d)
        if done.returncode != 0:
            raise SystemExit(f"could not make the probe's assets: {done.stderr.strip()}")
    shutil.rmtree(d / "cache", ignore_errors=True)


def snapshot(*roots: Path) -> dict[str, str]:
    """sha256 of every file under ``roots``."""
    out = {}
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def judge(case: Case, ctx: Ctx, rc: int | None, err: str, before: dict[str, str]) -> dict:
    """``{"name", "ok", "rc", "line", "problems"}`` of one finished case."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    problems = []
    if rc != case.rc:
        problems.append(f"exit code {rc}, not {case.rc}")
    if "Traceback" in err:
        problems.append("traceback on stderr")
    if case.rc == 2 and len(lines) != 1:
        problems.append(f"{len(lines)} stderr lines, not 1")
    after = snapshot(ctx.ws, ctx.assets)
    lost = [Path(p).name for p, h in before.items() if after.get(p) != h]
    if lost:
        problems.append(f"changed or lost {lost[:3]}")
    for check in case.checks:
        problem = check(ctx, err)
        if problem:
            problems.append(problem)
    return {"name": case.name, "ok": not problems, "rc": rc, "line": lines[-1] if lines else "",
            "problems": problems}


def run_all(todo: list[Case], root: Path, jobs: int, fresh: bool) -> list[dict]:
    """Every case, ``jobs`` at a time; results in table order."""
    port = closed_port()
    queue = [(i, c, Ctx(root / f"case-{i:03d}", root / "assets", port))
             for i, c in enumerate(todo)]
    results: list[dict] = [{} for _ in todo]
    running: list[tuple[int, Case, Ctx, dict[str, str], Running]] = []
    while queue or running:
        while queue and len(running) < max(1, jobs):
            i, case, ctx = queue.pop(0)
            ctx.ws.mkdir(parents=True)
            try:
                if case.setup is not None:
                    case.setup(ctx)
            except _Skip as exc:
                _unlock(ctx.ws)
                results[i] = {"name": case.name, "ok": None, "rc": None, "line": str(exc),
                              "problems": []}
                continue
            before = snapshot(ctx.ws, ctx.assets)
            env = case.env(ctx) if case.env else None
            running.append((i, case, ctx, before, Running(case.argv(ctx), ctx.ws, env, fresh)))
        for item in list(running):
            i, case, ctx, before, child = item
            rc = child.poll()
            if rc is None:
                continue
            running.remove(item)
            _unlock(ctx.ws)
            err = child.stderr() if rc != -9 else f"timed out after {TIMEOUT_S} s"
            results[i] = judge(case, ctx, rc, err, before)
        time.sleep(0.02)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Run the table and print it; the last line is the JSON summary."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=2, help="cases run at once (default 2)")
    p.add_argument("--only", default=None, help="run only cases whose name contains TEXT")
    p.add_argument("--subprocess", action="store_true",
                   help="start every case in a fresh interpreter instead of a fork of this one")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = p.parse_args(argv)
    todo = [c for c in cases() if args.only is None or args.only.lower() in c.name.lower()]
    fresh = args.subprocess or not hasattr(os, "fork")
    root = Path(tempfile.mkdtemp(prefix="prunebench-probe-"))
    try:
        make_assets(root / "assets")
        if not fresh:
            from prunebench.search.cli import build_parser

            build_parser()  # import every command module once, before forking
        results = run_all(todo, root, args.jobs, fresh)
    finally:
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            _unlock(root)
            shutil.rmtree(root, ignore_errors=True)
    width = max(len(r["name"]) for r in results)
    for r in results:
        verdict = {True: "ok", False: "FAIL", None: "skip"}[r["ok"]]
        note = "; ".join(r["problems"]) if r["problems"] else r["line"]
        print(f"{r['name'].ljust(width)}  {verdict:4}  rc={r['rc']!s:4}  {note[:110]}")
    tried = [r for r in results if r["ok"] is not None]
    summary = {"tried": len(tried), "handled": sum(1 for r in tried if r["ok"]),
               "failing": [f"{r['name']}: {'; '.join(r['problems'])}" for r in tried
                           if not r["ok"]],
               "skipped": [r["name"] for r in results if r["ok"] is None]}
    print(json.dumps(summary))
    return 0 if not summary["failing"] else 1


if __name__ == "__main__":
    sys.exit(main())
