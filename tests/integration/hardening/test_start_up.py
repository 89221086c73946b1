"""Start-up against a real ``swell serve``: files only the user can read, an empty or foreign
database refused (``--new-workspace`` begins anew), and what a ``kill -9``'d server left
(socket folder, cgroups, secrets in /dev/shm) removed by the next start."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "live"))
from swell_live import start_server, stop_server  # type: ignore[import-not-found]  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def serve_once(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``swell serve`` that is expected to refuse to start: its exit and output."""
    return subprocess.run(
        [sys.executable, "-c", "from swell.cli import main; main()", "serve", "--port", "0", "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("content", [b"", b"not a database at all"])
def test_an_empty_or_foreign_database_file_is_refused(tmp_path: Path, content: bytes) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "swell.db").write_bytes(content)
    refused = serve_once(data_dir)
    assert refused.returncode != 0
    assert "holds no Swell workspace" in refused.stderr and "--new-workspace" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
    assert (data_dir / "swell.db").read_bytes() == content  # untouched
    assert not (data_dir / "secrets.key").exists()


def test_another_programs_sqlite_database_is_refused(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with sqlite3.connect(data_dir / "swell.db") as db:
        db.execute("CREATE TABLE invoices (id INTEGER)")
    refused = serve_once(data_dir)
    assert refused.returncode != 0
    assert "another program's database (tables: invoices)" in refused.stderr, refused.stderr


def test_new_workspace_moves_an_empty_database_aside(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "swell.db").write_bytes(b"")
    process, server = start_server(data_dir, "--new-workspace")
    try:
        assert server.http.get("/v1/models").json() == {"models": []}
    finally:
        stop_server(process, server)
    assert [p.name for p in data_dir.glob("swell.db.unusable-*")]
    assert (data_dir / "swell.db").stat().st_size > 0


def owned_by(pid: int, parent: Path, prefix: str) -> list[Path]:
    found = []
    for folder in parent.glob(prefix + "*"):
        try:
            if (folder / ".swell-owner").read_text().split()[0] == str(pid):
                found.append(folder)
        except OSError:
            continue
    return found


def cgroups_of(pid: int) -> list[Path]:
    root = Path("/sys/fs/cgroup")  # v2 at the root, or a v1 hierarchy
    return [p for pattern in (f"swell-{pid}", f"*/swell-{pid}") for p in root.glob(pattern) if p.is_dir()]


def busy(groups: list[Path]) -> bool:
    for group in groups:
        for folder in [group, *(c for c in group.iterdir() if c.is_dir())] if group.exists() else []:
            procs = folder / "cgroup.procs"
            if procs.exists() and procs.read_text().strip():
                return True
    return False


def test_private_files_and_a_killed_servers_leftovers(tmp_path: Path) -> None:
    package = tmp_path / "echo"
    shutil.copytree(EXAMPLES / "echo", package)
    (package / "config.yaml").write_text((package / "config.yaml").read_text() + "secrets:\n  token: null\n")
    first = tmp_path / "first"
    first.mkdir()
    process, server = start_server(first)
    try:
        assert server.http.post("/v1/secrets", json={"name": "token", "value": "s3cret"}).status_code == 200
        pushed = server.push(package, name="echo")
        answer = server.http.post(server.predict_path(pushed), json={"text": "hi"}, timeout=120)
        assert answer.status_code == 200, answer.text
        # only the user may read the data dir, the database, the key and the replica logs
        assert mode(first) == 0o700
        for name in ("swell.db", "secrets.key"):
            assert mode(first / name) == 0o600, name
        logs = [p for p in (first / "logs").rglob("*.log")]
        assert logs and all(mode(p) == 0o600 for p in logs), [(p, oct(mode(p))) for p in logs]
        sockets = owned_by(process.pid, Path(tempfile.gettempdir()), "swell-")
        secrets_dir = Path("/dev/shm") / f"swell-secrets-{hashlib.sha256(str(first.resolve()).encode()).hexdigest()[:12]}"
        assert sockets and secrets_dir.is_dir()
        groups = cgroups_of(process.pid)
    finally:
        process.kill()  # kill -9: nothing is cleaned up
        process.wait()
        server.http.close()
    deadline = time.monotonic() + 20  # the replicas die with their server (PDEATHSIG)
    while busy(groups):
        assert time.monotonic() < deadline, "replicas outlived their server"
        time.sleep(0.1)
    assert all(p.exists() for p in sockets) and secrets_dir.exists()

    second = tmp_path / "second"  # another data dir: leftovers are found by their dead owner, not by path
    second.mkdir()
    process, server = start_server(second)
    try:
        assert not [p for p in sockets if p.exists()]
        assert not secrets_dir.exists()
        assert not [g for g in groups if g.exists()]
    finally:
        stop_server(process, server)


def test_a_busy_port_is_refused_before_the_workspace_key_is_made(tmp_path: Path) -> None:
    """A first start creates the workspace key and prints it once it listens: a start that
    cannot listen must create nothing, or the key is made, never shown, and the next start
    locks the user out (`swell keys create` itself needs a key)."""
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if k != "SWELL_API_KEY"}
    command = [sys.executable, "-c", "from swell.cli import main; main()", "serve", "--data-dir", str(data_dir)]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        refused = subprocess.run([*command, "--port", str(port)], capture_output=True, text=True, timeout=60, env=env)
    assert refused.returncode != 0
    assert f"port {port} on 127.0.0.1 is in use" in refused.stderr and "--port" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
    assert not (data_dir / "swell.db").exists()  # no workspace, so no key nobody saw

    # the next start is a first start: it makes the key and shows it
    process = subprocess.Popen(
        [*command, "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**env, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 30
        shown = ""
        while "SWELL_API_KEY=" not in shown and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            shown += line
        assert "API key (shown once; keep it)" in shown, shown
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
