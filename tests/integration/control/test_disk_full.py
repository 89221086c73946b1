"""A full disk under the data dir (a real small tmpfs): secrets and pushes answer a JSON 503
naming the cause, change nothing, and work after space is freed and the server restarts.
A damaged secrets key is reported with what to do."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest

from swell.autoscaling import VirtualClock
from swell.config import ServerSettings
from swell.control import ControlPlane, SwellApp
from swell.serving._testing import FakeBackend

MakeArchive = Callable[..., Path]
KEY = {"Authorization": "Api-Key k1"}


class SmallDisk:
    """A 2 MiB tmpfs; ``fill(leave)`` uses all but ``leave`` bytes of it, ``free()`` gives them back."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.filler = root / "filler"

    def fill(self, leave: int = 0) -> None:
        chunk = b"\0" * 4096
        with self.filler.open("ab", buffering=0) as fh:
            try:
                while True:
                    fh.write(chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
        if leave:
            os.truncate(self.filler, max(0, self.filler.stat().st_size - leave))

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[SmallDisk]:
    root = tmp_path / "disk"
    root.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(root)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    try:
        yield SmallDisk(root)
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)


async def started(data_dir: Path) -> ControlPlane:
    settings = ServerSettings(data_dir=data_dir, max_replica_cap=5)
    plane = ControlPlane(settings, FakeBackend(), clock=VirtualClock(), api_key="k1")
    await plane.start(background=False)
    return plane


def client(plane: ControlPlane) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=SwellApp(plane)), base_url="http://swell")


@pytest.fixture
async def data_dir(disk: SmallDisk) -> AsyncIterator[Path]:
    yield disk.root / f"data-{uuid.uuid4().hex[:6]}"


async def test_first_secret_on_a_full_disk_then_restart(disk: SmallDisk, data_dir: Path) -> None:
    plane = await started(data_dir)
    key_file = data_dir / "secrets.key"
    try:
        disk.fill()
        async with client(plane) as http:
            refused = await http.post("/v1/secrets", json={"name": "token", "value": "v1"}, headers=KEY)
            assert refused.status_code == 503, refused.text
            body = refused.json()
            assert body["error"] == "storage unavailable"
            assert body["reason"].startswith(f"no space left on device writing {key_file}")
            assert not key_file.exists()
            assert not [p for p in data_dir.iterdir() if p.name.endswith(".tmp")]
            disk.free()
            stored = await http.post("/v1/secrets", json={"name": "token", "value": "v1"}, headers=KEY)
            assert stored.status_code == 200, stored.text
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    finally:
        disk.free()
        await plane.close()
    plane = await started(data_dir)  # the restart the user made
    try:
        assert await plane.access.secret_values(["token"]) == {"token": "v1"}
    finally:
        await plane.close()


async def test_push_on_a_full_disk_is_a_503_and_leaves_nothing(
    disk: SmallDisk, data_dir: Path, make_archive: MakeArchive
) -> None:
    plane = await started(data_dir)
    # 1 MiB of zeros compresses to ~1 KiB: the upload fits, its unpacked files do not
    archive = make_archive({"model_name": "m"}, model="WEIGHTS = b'" + "0" * (1024 * 1024) + "'\n")
    try:
        disk.fill(leave=64 * 1024)
        async with client(plane) as http:
            refused = await http.post("/v1/models/push", content=archive.read_bytes(), headers=KEY)
            assert refused.status_code == 503, refused.text
            assert refused.json()["reason"].startswith("no space left on device writing")
            assert (await http.get("/v1/models", headers=KEY)).json()["models"] == []
            assert list((data_dir / "packages").iterdir()) == []
            disk.free()
            pushed = await http.post("/v1/models/push", content=archive.read_bytes(), headers=KEY)
            assert pushed.status_code == 201, pushed.text
    finally:
        disk.free()
        await plane.close()


async def test_upload_spooled_on_a_full_disk_is_a_503(disk: SmallDisk, data_dir: Path, make_archive: MakeArchive) -> None:
    plane = await started(data_dir)
    try:
        disk.fill()
        async with client(plane) as http:
            refused = await http.post("/v1/models/push", content=os.urandom(256 * 1024), headers=KEY)
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"] == "storage unavailable"
    finally:
        disk.free()
        await plane.close()


@pytest.mark.parametrize("damage", [b"", b"not a key\n"])
async def test_a_damaged_key_that_encrypted_nothing_is_replaced_at_start(tmp_path: Path, damage: bytes) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "secrets.key").write_bytes(damage)  # what a full disk left before writes were atomic
    plane = await started(data_dir)
    try:
        async with client(plane) as http:
            stored = await http.post("/v1/secrets", json={"name": "token", "value": "v1"}, headers=KEY)
        assert stored.status_code == 200, stored.text
        assert (data_dir / "secrets.key.damaged").read_bytes() == damage
    finally:
        await plane.close()


async def test_a_damaged_key_that_secrets_need_is_a_json_503_with_what_to_do(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    plane = await started(data_dir)
    try:
        async with client(plane) as http:
            assert (await http.post("/v1/secrets", json={"name": "token", "value": "v1"}, headers=KEY)).status_code == 200
    finally:
        await plane.close()
    (data_dir / "secrets.key").write_bytes(b"")
    plane = await started(data_dir)  # starts: predict and the rest of the API do not need the key
    try:
        async with client(plane) as http:
            answer = await http.post("/v1/secrets", json={"name": "other", "value": "v2"}, headers=KEY)
        assert answer.status_code == 503
        body = answer.json()
        assert body["error"] == "secrets key unusable"
        assert "is empty: restore it from a backup" in body["reason"]
        assert (data_dir / "secrets.key").exists()  # never replaced while values need it
    finally:
        await plane.close()


async def test_a_database_write_on_a_full_disk_is_a_503_naming_the_cause(disk: SmallDisk, data_dir: Path) -> None:
    plane = await started(data_dir)
    try:
        async with client(plane) as http:
            # enough changes that SQLite must grow its files
            disk.fill()
            answers = [
                await http.post("/v1/api_keys", json={"type": "invoke", "name": "x" * 128}, headers=KEY) for _ in range(200)
            ]
            refused = [a for a in answers if a.status_code != 201]
            assert refused, "the database never ran out of space"
            assert {a.status_code for a in refused} == {503}
            assert "no space left on device" in refused[0].json()["reason"]
            disk.free()
            assert (await http.post("/v1/api_keys", json={"type": "invoke"}, headers=KEY)).status_code == 201
    finally:
        disk.free()
        await plane.close()
