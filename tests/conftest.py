"""Fixtures shared by every test directory.

``postgres_url`` starts one real PostgreSQL server for the whole session (Debian's
``postgresql`` package, which ``.ci/run`` installs), listening only on a Unix socket in
a private temp dir; ``postgres_database`` gives each test a fresh, empty database on it.
Without PostgreSQL the tests that ask for it are skipped, unless SWELL_REQUIRE_POSTGRES=1
(CI), where a missing or broken PostgreSQL fails them instead.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

_PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
_START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class PostgresServer:
    bin_dir: Path
    socket_dir: Path
    user: str = "postgres"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://{self.user}@/{database}?host={self.socket_dir}"

    def client(self, program: str, *args: str) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL client program (createdb, dropdb, psql) against this server."""
        return subprocess.run(
            [str(self.bin_dir / program), "-h", str(self.socket_dir), "-U", self.user, *args],
            capture_output=True, text=True, timeout=30, check=False,
        )


def _find_pg_bin() -> Path | None:
    """The newest installed PostgreSQL's bin dir (Debian keeps initdb off PATH)."""
    def version(path: str) -> tuple[int, ...]:
        name = Path(path).parent.name
        return tuple(int(p) for p in name.split(".") if p.isdigit())

    found = sorted((d for d in glob.glob(_PG_BIN_GLOB) if os.path.exists(f"{d}/initdb")), key=version)
    if found:
        return Path(found[-1])
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def _unavailable(reason: str) -> None:
    if os.environ.get("SWELL_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"SWELL_REQUIRE_POSTGRES=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    bin_dir = _find_pg_bin()
    if bin_dir is None:
        _unavailable(f"PostgreSQL is not installed (no initdb under {_PG_BIN_GLOB} or on PATH; "
                     "`apt-get install postgresql`, as .ci/run does)")
        return
    # PostgreSQL refuses to run as root: then run the server as the `postgres` OS user.
    as_user: list[str] = []
    owner: pwd.struct_passwd | None = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            _unavailable("running as root and there is no `postgres` OS user to run PostgreSQL as")
            return
        as_user = ["runuser", "-u", "postgres", "--"]

    # Not under pytest's tmp dir: that is 0700 root-owned, which `postgres` cannot enter.
    root = Path(tempfile.mkdtemp(prefix="swell-pg-"))
    data, sockets, log = root / "data", root / "sock", root / "server.log"
    sockets.mkdir()
    sockets.chmod(0o777)
    if owner is not None:
        for path in (root, sockets):
            os.chown(path, owner.pw_uid, owner.pw_gid)

    def run(*cmd: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*as_user, *cmd], capture_output=True, text=True, cwd=root, timeout=_START_TIMEOUT_S, check=False)

    pg_ctl = str(bin_dir / "pg_ctl")
    init = run(str(bin_dir / "initdb"), "-D", str(data), "--auth=trust", "-U", "postgres",
               "--no-sync", "--no-locale", "-E", "UTF8")
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"initdb failed:\n{init.stdout}\n{init.stderr}", pytrace=False)
    options = f"-c listen_addresses='' -k {sockets} -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    start = run(pg_ctl, "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", str(int(_START_TIMEOUT_S)), "start")
    server = PostgresServer(bin_dir=bin_dir, socket_dir=sockets)
    try:
        if start.returncode != 0:
            pytest.fail(f"pg_ctl start failed:\n{start.stdout}\n{start.stderr}\n{_tail(log)}", pytrace=False)
        _wait_ready(server, log)
        yield server
    finally:
        run(pg_ctl, "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


def _tail(log: Path) -> str:
    try:
        return log.read_text()[-4000:]
    except OSError:
        return ""


def _wait_ready(server: PostgresServer, log: Path) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while True:
        ready = server.client("pg_isready", "-d", "postgres")
        if ready.returncode == 0:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"PostgreSQL not ready after {_START_TIMEOUT_S:.0f} s:\n{ready.stdout}{_tail(log)}", pytrace=False)
        time.sleep(0.05)


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """SQLAlchemy URL of the session's server, database ``postgres``."""
    return postgres_server.url()


@pytest.fixture
def postgres_database(postgres_server: PostgresServer) -> Iterator[str]:
    """SQLAlchemy URL of a fresh, empty database that lives for one test."""
    name = f"swell_test_{uuid.uuid4().hex[:12]}"
    created = postgres_server.client("createdb", name)
    if created.returncode != 0:
        pytest.fail(f"createdb {name} failed: {created.stderr}", pytrace=False)
    yield postgres_server.url(name)
    # FORCE: a test that leaked a connection must not make the next one fail.
    postgres_server.client("psql", "-d", "postgres", "-q", "-c", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database of each kind the store supports: one test, run once per database.

    SQLite is a file in the test's tmp dir; PostgreSQL is a new database on the session's
    server, started only when a PostgreSQL case runs (and skipped without PostgreSQL).
    """
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'swell.db'}"
    return str(request.getfixturevalue("postgres_database"))
