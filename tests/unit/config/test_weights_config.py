"""config.yaml's `weights` / `model_cache` entries: Truss's shape, refused with the field and the reason."""

from __future__ import annotations

from typing import Any

import pytest

from swell.config import ConfigError, WeightsSource, parse_model_config

SHA = "3b478469d24ba42fc07ff41b1c2ef554790d7aae297af0228b8a17b4012e1b56"


@pytest.mark.parametrize(
    ("entry", "url"),
    [
        ({"source": "https://h/m.bin", "mount_location": "/app/model_cache/m"}, "https://h/m.bin"),
        ({"source": "http://127.0.0.1:8765/m.bin"}, "http://127.0.0.1:8765/m.bin"),
        ({"source": "s3://bucket/prefix/", "allow_patterns": ["*.json"]}, "s3://bucket/prefix/"),
        ({"source": "s3://b/k", "sha256": SHA.upper()}, "s3://b/k"),
        ({"repo_id": "s3://b/models", "kind": "s3", "volume_folder": "m", "use_volume": True}, "s3://b/models"),
        ({"repo_id": "b/models", "kind": "s3", "volume_folder": "m"}, "s3://b/models"),
        ({"repo_id": "meta-llama/Llama-3.1-8B", "revision": "main"}, None),  # left to the model
    ],
)
def test_accepted_entries(entry: dict[str, Any], url: str | None) -> None:
    source = WeightsSource.model_validate(entry)
    assert source.url == url
    if "sha256" in entry:
        assert source.sha256 == SHA  # normalised to lower case


@pytest.mark.parametrize(
    ("key", "entry", "field", "allowed"),
    [
        ("weights", {"source": "hf://meta-llama/Llama"}, "weights.0.source", "hf:// is not supported"),
        ("weights", {"source": "gs://b/k"}, "weights.0.source", "gs:// is not supported"),
        ("weights", {"source": "ftp://h/k"}, "weights.0.source", "https://, http://, s3://"),
        ("weights", {"source": "s3:///key"}, "weights.0.source", "bucket"),
        ("weights", {"source": "https://h/k", "mount_location": "models/x"}, "weights.0.mount_location",
         "absolute"),
        ("weights", {"source": "https://h/k", "sha256": "abc"}, "weights.0.sha256", "64 hexadecimal"),
        ("model_cache", {"repo_id": "x", "kind": "gcs"}, "model_cache.0", "kind 'gcs' is not supported"),
        ("model_cache", {"repo_id": "s3://b/k", "volume_folder": "../up"}, "model_cache.0.volume_folder",
         "without '..'"),
        ("weights", {"source": "https://h/k", "mount_locaton": "/x"}, "weights.0.mount_locaton", "unknown key"),
    ],
)
def test_refused_entries(key: str, entry: dict[str, Any], field: str, allowed: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_model_config({key: [entry]})
    assert any(e.field == field and allowed in e.allowed for e in info.value.errors), info.value.errors


def test_mount_locations_are_unique() -> None:
    with pytest.raises(ConfigError, match="appears twice"):
        parse_model_config({"weights": [{"source": "https://h/a", "mount_location": "/app/w"},
                                        {"source": "https://h/b", "mount_location": "/app/w"}]})
