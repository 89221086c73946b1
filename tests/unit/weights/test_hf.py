"""The pure parts of Hugging Face sources: endpoint, resolve URLs, the listing and its record, the token."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from swell.weights import WeightsError
from swell.weights._hf import (
    HfFile,
    HfListing,
    endpoint_from_env,
    listing_from_info,
    remote_files,
    resolve_url,
    token_from,
)

COMMIT = "a" * 40
SHA = "b" * 64


@pytest.mark.parametrize(
    ("env", "endpoint"),
    [({}, "https://huggingface.co"), ({"HF_ENDPOINT": "http://127.0.0.1:9/"}, "http://127.0.0.1:9"),
     ({"HF_ENDPOINT": ""}, "https://huggingface.co")],
)
def test_endpoint_from_env(env: dict[str, str], endpoint: str) -> None:
    assert endpoint_from_env(env) == endpoint


def test_resolve_url_quotes_the_path_and_keeps_folders() -> None:
    assert (resolve_url("https://hub", "org/m", COMMIT, "sub dir/a+b.json")
            == f"https://hub/org/m/resolve/{COMMIT}/sub%20dir/a%2Bb.json")


def test_remote_files_are_named_by_commit_and_carry_the_lfs_sha256() -> None:
    listing = HfListing("org/m", COMMIT, (HfFile("config.json", 13, None), HfFile("w/model.safetensors", 9, SHA)))
    config, weights = remote_files(listing, "http://hub")
    assert config.url == f"hf://org/m@{COMMIT}/config.json" and config.sha256 is None and config.size == 13
    assert weights.name == "w/model.safetensors" and weights.sha256 == SHA
    assert weights.fetch_url == f"http://hub/org/m/resolve/{COMMIT}/w/model.safetensors"
    assert weights.validator is None  # a commit's files never change; the CDN's ETag is not the Hub's


def test_listing_from_model_info_and_back_through_its_record() -> None:
    info = SimpleNamespace(sha=COMMIT, siblings=[
        SimpleNamespace(rfilename="config.json", size=13, lfs=None),
        SimpleNamespace(rfilename="model.safetensors", size=9, lfs=SimpleNamespace(sha256=SHA, size=9))])
    listing = listing_from_info("org/m", info)
    assert listing.files == (HfFile("config.json", 13, None), HfFile("model.safetensors", 9, SHA))
    assert HfListing.from_json(listing.to_json()) == listing
    assert HfListing.from_json("{not json") is None
    with pytest.raises(WeightsError, match="names no commit"):
        listing_from_info("org/m", SimpleNamespace(sha=None, siblings=[]))


@pytest.mark.parametrize(
    ("headers", "env", "token"),
    [
        ({"Authorization": "Bearer hf_a"}, {"HF_TOKEN": "hf_env"}, "hf_a"),  # the entry's secret first
        ({}, {"HF_TOKEN": "hf_env"}, "hf_env"),
        (None, {}, None),  # anonymous
        ({"Authorization": "Bearer  "}, {}, None),
    ],
)
def test_token_from(headers: dict[str, str] | None, env: dict[str, str], token: str | None) -> None:
    assert token_from(headers, env) == token
