"""A Ray node's package cache (swell/modelserver/_node.py): what a replica there holds stays,
what none has used for a while goes, so a node does not keep every version ever pushed."""

from __future__ import annotations

import os
import time
from pathlib import Path

from swell.modelserver._node import cached, hold, prune, unpack
from swell.serving.backends.ray._package import pack

DAY = 24 * 3600.0


def _package(tmp_path: Path, name: str) -> tuple[str, bytes]:
    folder = tmp_path / "src" / name
    folder.mkdir(parents=True)
    (folder / "model.py").write_text(f"# {name}\n")
    return pack(folder)


def test_a_package_no_replica_holds_goes_once_unused_for_a_while(tmp_path: Path) -> None:
    cache = tmp_path / "node"
    (old, old_data), (used, used_data), (fresh, fresh_data) = (_package(tmp_path, n) for n in ("old", "used", "fresh"))
    for digest, data in ((old, old_data), (used, used_data), (fresh, fresh_data)):
        os.close(hold(cache, digest))
        unpack(data, cache, digest)
    in_use = hold(cache, used)  # a live replica's actor holds it
    try:
        now = time.time()
        for digest in (old, used):
            os.utime(cache / "packages" / f"{digest}.lock", (now - 2 * DAY, now - 2 * DAY))
        leftover = cache / "packages" / ".unpack-cut-short"  # an unpack whose actor was killed
        leftover.mkdir()
        os.utime(leftover, (now - 2 * DAY, now - 2 * DAY))
        assert prune(cache, unused_seconds=DAY) == [old]
        assert cached(cache, old) is None and not (cache / "packages" / f"{old}.lock").exists()
        assert cached(cache, used) is not None and cached(cache, fresh) is not None
        assert not leftover.exists()
    finally:
        os.close(in_use)


def test_a_replica_that_holds_a_package_pruned_meanwhile_unpacks_it_anew(tmp_path: Path) -> None:
    cache = tmp_path / "node"
    digest, data = _package(tmp_path, "v1")
    os.close(hold(cache, digest))
    unpack(data, cache, digest)
    assert prune(cache, unused_seconds=0.0) == [digest]
    again = hold(cache, digest)  # on a fresh lock file: a later prune sees it held
    try:
        assert cached(cache, digest) is None
        unpack(data, cache, digest)
        assert prune(cache, unused_seconds=0.0) == []
        assert cached(cache, digest) is not None
    finally:
        os.close(again)
