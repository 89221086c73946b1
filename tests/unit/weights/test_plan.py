"""Pure parts of the weights fetcher: parts, Content-Range, the resume record, patterns, paths, eviction."""

from __future__ import annotations

from pathlib import Path

import pytest

from swell.weights._plan import (
    Blob,
    PartRecord,
    choose_evictions,
    contiguous_done,
    mount_dir,
    parse_content_range,
    parse_size,
    safe_relative,
    selected,
    split_parts,
)


@pytest.mark.parametrize(
    ("size", "part", "expected"),
    [
        (0, 4, []),
        (1, 4, [(0, 0)]),
        (4, 4, [(0, 3)]),
        (10, 4, [(0, 3), (4, 7), (8, 9)]),
        (8, 4, [(0, 3), (4, 7)]),
    ],
)
def test_split_parts(size: int, part: int, expected: list[tuple[int, int]]) -> None:
    assert split_parts(size, part) == expected


def test_split_parts_refuses_zero_part_size() -> None:
    with pytest.raises(ValueError):
        split_parts(10, 0)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes 0-99/1000", (0, 99, 1000)),
        ("bytes 100-199/*", (100, 199, None)),
        ("Bytes 5-5/6", (5, 5, 6)),
        ("bytes 10-5/100", None),  # end before start
        ("bytes 0-100/100", None),  # end past the size
        ("bytes */100", None),
        ("items 0-1/2", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_content_range(header: str | None, expected: tuple[int, int, int | None] | None) -> None:
    assert parse_content_range(header) == expected


def test_part_record_round_trip_and_match() -> None:
    record = PartRecord("http://h/f", 100, "etag1", 10, {0, 3, 4})
    back = PartRecord.from_json(record.to_json())
    assert back == record
    assert back is not None and back.matches("http://h/f", 100, "etag1", 10)
    assert not back.matches("http://h/f", 101, "etag1", 10)  # the object grew
    assert not back.matches("http://h/f", 100, "etag2", 10)  # the object changed
    assert not back.matches("http://h/f", 100, "etag1", 20)  # cut differently


@pytest.mark.parametrize("text", ["", "{", "[]", '{"url": "x"}', '{"url":"x","size":"a","validator":null,'
                                  '"part_size":1,"done":[]}'])
def test_part_record_ignores_garbage(text: str) -> None:
    assert PartRecord.from_json(text) is None


def test_contiguous_done() -> None:
    assert contiguous_done(set(), 0) == 0
    assert contiguous_done({0, 1, 2, 5}, 0) == 3
    assert contiguous_done({0, 1, 2, 5}, 5) == 6


@pytest.mark.parametrize(
    ("path", "allow", "ignore", "kept"),
    [
        ("model.safetensors", None, None, True),
        ("model.safetensors", ["*.safetensors"], None, True),
        ("README.md", ["*.safetensors"], None, False),
        ("README.md", None, ["*.md"], False),
        ("sub/a.bin", ["sub/*"], ["*.md"], True),
        ("sub/a.md", ["sub/*"], ["*.md"], False),
        ("x.json", [], [], True),  # empty lists mean no filter
    ],
)
def test_patterns(path: str, allow: list[str] | None, ignore: list[str] | None, kept: bool) -> None:
    assert selected(path, allow, ignore) is kept


@pytest.mark.parametrize("name", ["../etc/passwd", "a/../../b", "", "/"])
def test_safe_relative_refuses_escapes(name: str) -> None:
    with pytest.raises(ValueError):
        safe_relative(name)


def test_safe_relative_keeps_folders() -> None:
    assert str(safe_relative("/sub/dir/file.bin")) == "sub/dir/file.bin"


@pytest.mark.parametrize(
    ("mount_location", "volume_folder", "expected"),
    [
        ("/app/model_cache/llama", None, "PKG/model_cache/llama"),  # /app is the package dir
        ("/app", None, "PKG"),
        ("/models/llama", None, "/models/llama"),  # any other absolute path as given
        ("/application/x", None, "/application/x"),
        (None, "llama", "PKG/model_cache/llama"),  # Truss: /app/model_cache/<volume_folder>
        (None, None, "PKG/data"),
    ],
)
def test_mount_dir(mount_location: str | None, volume_folder: str | None, expected: str) -> None:
    package = Path("/srv/pkg")
    got = mount_dir(mount_location, volume_folder, package)
    assert str(got) == expected.replace("PKG", str(package))


BLOBS = [Blob("old", 40, 1.0), Blob("mid", 30, 2.0), Blob("new", 20, 3.0)]


@pytest.mark.parametrize(
    ("pinned", "limit", "incoming", "evicted"),
    [
        (set(), None, 1000, []),  # no limit, nothing goes
        (set(), 100, 0, []),  # fits
        (set(), 80, 0, ["old"]),  # least recently used first
        (set(), 45, 0, ["old", "mid"]),
        (set(), 60, 30, ["old", "mid"]),  # room for the incoming file
        ({"old"}, 80, 0, ["mid"]),  # pinned blobs are skipped…
        ({"old", "mid", "new"}, 10, 0, []),  # …even if the cache stays over its limit
    ],
)
def test_choose_evictions(pinned: set[str], limit: int | None, incoming: int, evicted: list[str]) -> None:
    assert choose_evictions(BLOBS, pinned, limit, incoming) == evicted


@pytest.mark.parametrize(
    ("text", "size"),
    [("1048576", 1 << 20), ("16Mi", 16 << 20), ("50Gi", 50 << 30), ("1G", 10**9), ("1.5Ki", 1536), ("8 MiB", 8 << 20)],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "lots", "-1", "1X"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)
