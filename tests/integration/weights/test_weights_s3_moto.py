"""Fetching from a real S3 server: moto in server mode on 127.0.0.1, requests signed with SigV4."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import httpx
import pytest
from conftest import OPTIONS, SIZE, FetcherFactory

from swell.weights import WeightsError
from swell.weights._fetch import Downloader
from swell.weights._s3 import S3Source
from swell.weights._testing import MotoS3


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def bucket(moto_s3: MotoS3, weights_file: tuple[Path, str]) -> str:
    name = f"weights-{uuid.uuid4().hex[:8]}"
    s3 = moto_s3.client()
    s3.create_bucket(Bucket=name)
    s3.upload_file(str(weights_file[0]), name, "models/m1/model.bin")
    s3.put_object(Bucket=name, Key="models/m1/config.json", Body=b'{"layers": 2}')
    s3.put_object(Bucket=name, Key="models/m1/tokenizer/vocab.txt", Body=b"a\nb\n")
    s3.put_object(Bucket=name, Key="models/m1/README.md", Body=b"# m1")
    s3.put_object(Bucket=name, Key="models/m10/other.bin", Body=b"not m1")  # a sibling prefix
    return name


def test_prefix_with_patterns(moto_s3: MotoS3, bucket: str, fetcher: FetcherFactory, tmp_path: Path,
                              weights_file: tuple[Path, str]) -> None:
    package = tmp_path / "pkg"
    report = fetcher(env=moto_s3.env()).prepare(
        [{"source": f"s3://{bucket}/models/m1", "mount_location": "/app/model_cache/m1",
          "ignore_patterns": ["*.md"]}], package)
    mount = package / "model_cache" / "m1"
    found = sorted(str(p.relative_to(mount)) for p in mount.rglob("*") if p.is_file())
    assert found == ["config.json", "model.bin", "tokenizer/vocab.txt"]  # not README.md, not m10/
    assert sha(mount / "model.bin") == weights_file[1]
    assert (mount / "tokenizer" / "vocab.txt").read_bytes() == b"a\nb\n"
    assert report.bytes_fetched == SIZE + len(b'{"layers": 2}') + 4
    # A second replica: the listing says nothing changed, so not one byte is fetched.
    again = fetcher(env=moto_s3.env()).prepare(
        [{"source": f"s3://{bucket}/models/m1", "mount_location": "/app/model_cache/m1",
          "ignore_patterns": ["*.md"]}], tmp_path / "pkg2")
    assert again.bytes_fetched == 0 and again.bytes_cached == report.bytes_fetched


def test_single_key_with_sha256_in_parallel_ranges(moto_s3: MotoS3, bucket: str, tmp_path: Path,
                                                   fetcher: FetcherFactory, weights_file: tuple[Path, str]) -> None:
    url = f"s3://{bucket}/models/m1/model.bin"
    source = S3Source(url, moto_s3.env())
    with httpx.Client() as client:
        [remote] = source.files(client)
        assert (remote.name, remote.size) == ("model.bin", SIZE) and remote.validator
        done = Downloader(client, OPTIONS, source.sign).download(remote, tmp_path / "part", None)
    assert (done.mode, done.sha256, done.bytes_downloaded) == ("ranges", weights_file[1], SIZE)
    report = fetcher(env=moto_s3.env()).prepare(
        [{"source": url, "mount_location": "/app/w", "sha256": weights_file[1]}], tmp_path / "pkg")
    assert report.bytes_fetched == SIZE
    assert sha(tmp_path / "pkg" / "w" / "model.bin") == weights_file[1]


def test_model_cache_entry_with_kind_s3(moto_s3: MotoS3, bucket: str, fetcher: FetcherFactory,
                                        tmp_path: Path) -> None:
    fetcher(env=moto_s3.env()).prepare(
        [{"repo_id": f"{bucket}/models/m1", "kind": "s3", "volume_folder": "m1", "use_volume": True,
          "allow_patterns": ["*.json"]}], tmp_path / "pkg")
    assert (tmp_path / "pkg" / "model_cache" / "m1" / "config.json").read_bytes() == b'{"layers": 2}'


def test_missing_object_or_bucket_is_explained(moto_s3: MotoS3, bucket: str, fetcher: FetcherFactory,
                                               tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="no such object and no objects under it"):
        fetcher(env=moto_s3.env()).prepare([{"source": f"s3://{bucket}/nope"}], tmp_path / "pkg")
    with pytest.raises(WeightsError, match="NoSuchBucket"):
        fetcher(env=moto_s3.env()).prepare([{"source": "s3://no-such-bucket-here/x"}], tmp_path / "pkg")
