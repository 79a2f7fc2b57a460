"""Fixtures for search tests: a real PostgreSQL server on 127.0.0.1 (no mocks).

The server is started once per session with ``initdb``/``pg_ctl`` from the Debian packages
(``/usr/lib/postgresql/*/bin``) in a fresh data directory on a free port, with password (SCRAM)
authentication so wrong-password paths are real. When running as root the server runs as the
``postgres`` system user (PostgreSQL refuses to run as root). Without the binaries the tests are
skipped locally but fail in CI (``CI=true``), where ``.ci/run`` installs them.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PG_USER = "prunebench"
PG_PASSWORD = "pb-test-secret"


@dataclass(frozen=True)
class PostgresServer:
    """A running test server; ``url(db)`` gives a SQLAlchemy URL for one database on it."""

    host: str
    port: int
    user: str
    password: str

    def url(self, database: str = "postgres", password: str | None = None) -> str:
        pw = self.password if password is None else password
        return f"postgresql+psycopg2://{self.user}:{pw}@{self.host}:{self.port}/{database}"

    def create_database(self) -> str:
        """Create a fresh, empty database and return its name."""
        import psycopg2

        name = f"pbtest_{uuid.uuid4().hex[:10]}"
        conn = psycopg2.connect(host=self.host, port=self.port, user=self.user,
                                password=self.password, dbname="postgres")
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return name


def _pg_bindir() -> Path | None:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(os.path.realpath(found)).parent
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_as(user: str | None, cmd: list[str]) -> subprocess.CompletedProcess[str]:
    full = ["runuser", "-u", user, "--", *cmd] if user else cmd
    return subprocess.run(full, capture_output=True, text=True, timeout=120, check=False)


def _server_user() -> str | None:
    """``None`` when not root; else a non-root system user to own the data directory."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "prunebench-pg"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                    "prunebench-pg"], check=True, capture_output=True)
    return "prunebench-pg"


class LocalPostgres:
    """A PostgreSQL server of its own (data directory, free port) that can be stopped and started
    again on the same port and data, as a restart does; :meth:`close` removes it.

    Raises ``RuntimeError`` when ``initdb`` or ``pg_ctl start`` fails.
    """

    def __init__(self, bindir: Path) -> None:
        self.bindir, self.user = bindir, _server_user()
        self.root = Path(tempfile.mkdtemp(prefix="prunebench-pg-"))
        self.data, pwfile = self.root / "data", self.root / "pwfile"
        pwfile.write_text(PG_PASSWORD + "\n")
        if self.user:
            shutil.chown(self.root, self.user)
            shutil.chown(pwfile, self.user)
        self.port = _free_port()
        init = _run_as(self.user, [str(bindir / "initdb"), "-D", str(self.data), "-U", PG_USER,
                                   f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8",
                                   "--no-sync", "--locale=C"])
        if init.returncode != 0:
            shutil.rmtree(self.root, ignore_errors=True)
            raise RuntimeError(f"initdb failed: {init.stderr.strip()}")
        self.server = PostgresServer("127.0.0.1", self.port, PG_USER, PG_PASSWORD)

    def start(self) -> None:
        """Start the server (again) on its port and data directory; waits until it is up."""
        opts = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        start = _run_as(self.user, [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l",
                                    str(self.root / "log"), "-o", opts, "-w", "-t", "60",
                                    "start"])
        if start.returncode != 0:
            log = (self.root / "log").read_text() if (self.root / "log").exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {start.stderr.strip()} {log[-500:]}")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: disconnect clients, as a restart does); waits for it."""
        _run_as(self.user, [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode,
                            "-w", "stop"])

    def close(self) -> None:
        """Stop the server at once and remove its files."""
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def pg_bindir_or_skip() -> Path:
    """The PostgreSQL binaries; without them skip (locally) or fail (in CI)."""
    bindir = _pg_bindir()
    if bindir is None:
        msg = ("PostgreSQL server binaries (initdb, pg_ctl) not found; install them with "
               "`apt-get install -y postgresql`")
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(msg)
        pytest.skip(msg)
    return bindir


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the whole test session (skips locally without the binaries)."""
    try:
        pg = LocalPostgres(pg_bindir_or_skip())
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        pg.start()
    except RuntimeError as exc:
        pg.close()
        pytest.fail(str(exc))
    try:
        yield pg.server
    finally:
        pg.close()


@pytest.fixture()
def pg_url(postgres_server: PostgresServer) -> str:
    """A SQLAlchemy URL to a fresh, empty database on the session's PostgreSQL server."""
    return postgres_server.url(postgres_server.create_database())


@pytest.fixture(scope="session")
def trained(digits, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A test_convnet trained on digits (seeded, 4 epochs), so that the dense trials' accuracy
    after one fine-tune epoch is far above that of a network keeping a fifth of every layer,
    and a search's trials differ in accuracy (its front has gaps to aim into)."""
    import torch

    from prunebench.harness.models import create_model
    from prunebench.harness.train import DEFAULT_RECIPE, save_checkpoint, train_model

    torch.manual_seed(0)
    model = train_model(create_model("test_convnet", 10, 1), digits,
                        DEFAULT_RECIPE.with_(epochs=4), progress=False)
    path = tmp_path_factory.mktemp("trained") / "convnet.pt"
    save_checkpoint(model, path, {"model": "test_convnet", "num_classes": 10, "in_channels": 1})
    return str(path)
