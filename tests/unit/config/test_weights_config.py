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
        # Hugging Face: hf://, Truss's scheme-less repo id, and model_cache's repo_id (kind hf, the default).
        ({"repo_id": "meta-llama/Llama-3.1-8B", "revision": "main"}, "hf://meta-llama/Llama-3.1-8B@main"),
        ({"repo_id": "gpt2", "kind": "hf", "volume_folder": "g"}, "hf://gpt2"),
        ({"source": "hf://meta-llama/Llama-3.1-8B@main", "mount_location": "/models/llama"},
         "hf://meta-llama/Llama-3.1-8B@main"),
        ({"source": "hf://org/m", "revision": "v1.0"}, "hf://org/m@v1.0"),
        ({"source": "org/m@abc123", "revision": "abc123"}, "hf://org/m@abc123"),
        ({"source": "org/m", "auth": {"auth_method": "CUSTOM_SECRET", "auth_secret_name": "tok"}}, "hf://org/m"),
    ],
)
def test_accepted_entries(entry: dict[str, Any], url: str) -> None:
    source = WeightsSource.model_validate(entry)
    assert source.url == url
    if "sha256" in entry:
        assert source.sha256 == SHA  # normalised to lower case


@pytest.mark.parametrize(
    ("key", "entry", "field", "allowed"),
    [
        ("weights", {"source": "hf://datasets/org/d"}, "weights.0.source", "model repo"),
        ("weights", {"source": "hf://org/a/b"}, "weights.0.source", "not a Hugging Face repo id"),
        ("weights", {"source": "hf://org/m@"}, "weights.0.source", "names no revision"),
        ("weights", {"source": "hf://org/m@v1", "revision": "v2"}, "weights.0", "revision is given twice"),
        ("weights", {"source": "hf://org/m", "sha256": SHA}, "weights.0", "pinned by its revision"),
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


@pytest.mark.parametrize(
    ("entry", "secret"),
    [
        ({"source": "hf://org/m"}, ("hf_access_token", False)),  # Truss's name, used when declared
        ({"repo_id": "org/m", "runtime_secret_name": "mine"}, ("mine", True)),
        ({"source": "hf://org/m", "auth_secret_name": "tok"}, ("tok", True)),
        ({"source": "hf://org/m", "auth": {"auth_secret_name": "a"}}, ("a", True)),
        ({"source": "https://h/f", "auth_secret_name": "tok"}, ("tok", True)),
        ({"source": "https://h/f"}, None),
        ({"source": "s3://b/k", "auth_secret_name": "tok"}, None),  # S3 signs with AWS credentials
    ],
)
def test_token_secret(entry: dict[str, Any], secret: tuple[str, bool] | None) -> None:
    assert WeightsSource.model_validate(entry).token_secret == secret


@pytest.mark.parametrize(
    ("entry", "left"),
    [
        ({"repo_id": "org/m"}, True),  # Truss bakes it into the image's HF cache for from_pretrained
        ({"repo_id": "org/m", "use_volume": False}, True),
        ({"repo_id": "org/m", "use_volume": True, "volume_folder": "m"}, False),
        ({"source": "hf://org/m"}, False),  # `weights` entries are always fetched
        ({"repo_id": "b/k", "kind": "s3"}, False),
    ],
)
def test_which_hugging_face_entries_go_to_the_hugging_face_cache(entry: dict[str, Any], left: bool) -> None:
    assert WeightsSource.model_validate(entry).into_hf_cache is left
