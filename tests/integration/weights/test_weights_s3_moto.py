"""Fetching from a real S3 server: moto in server mode on 127.0.0.1, requests signed with SigV4."""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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



@pytest.fixture(scope="module")
def checked_s3() -> Iterator[tuple[MotoS3, dict[str, str]]]:
    """A moto server of its own that checks signatures (enforcing would break the shared one's
    tests), a bucket ``private`` and a reader's key."""
    pytest.importorskip("moto.server")
    pytest.importorskip("botocore")
    with MotoS3() as server:
        iam = server.client("iam")
        iam.create_user(UserName="reader")
        key = iam.create_access_key(UserName="reader")["AccessKey"]
        iam.put_user_policy(UserName="reader", PolicyName="read", PolicyDocument=(
            '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}'))
        s3 = server.client()
        s3.create_bucket(Bucket="private")
        s3.put_object(Bucket="private", Key="m/weights.bin", Body=b"w" * 5000)
        httpx.post(f"{server.endpoint}/moto-api/reset-auth", content=b"0").raise_for_status()  # enforce from now
        yield server, key


class _RoleEndpoint(BaseHTTPRequestHandler):
    """ECS's task-role (and EKS Pod Identity's) credentials endpoint: JSON credentials on GET."""

    credentials: dict[str, str] = {}

    def do_GET(self) -> None:
        body = json.dumps(self.credentials).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize("where", ["profile", "container role"])
def test_credentials_through_botocore_s_chain_against_a_server_that_checks_them(
        where: str, checked_s3: tuple[MotoS3, dict[str, str]], fetcher: FetcherFactory, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """No keys in the environment: the signing key comes from botocore's chain (a profile, or the
    role endpoint that ECS and EKS give a pod), and a server that checks signatures accepts it
    where another key is refused.  Before the chain, the role case went unsigned: HTTP 403."""
    server, key = checked_s3
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance metadata to wait for here
    env = {"AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": server.endpoint,
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "AWS_CONFIG_FILE": str(tmp_path / "none")}
    entry = [{"source": "s3://private/m/weights.bin", "mount_location": "/app/w"}]
    with pytest.raises(WeightsError, match="HTTP 403"):
        fetcher(env={**env, "AWS_ACCESS_KEY_ID": "nobody", "AWS_SECRET_ACCESS_KEY": "x"}).prepare(
            entry, tmp_path / "refused")
    with contextlib.ExitStack() as stack:
        if where == "profile":
            credentials = tmp_path / "credentials"
            credentials.write_text(f"[reader]\naws_access_key_id = {key['AccessKeyId']}\n"
                                   f"aws_secret_access_key = {key['SecretAccessKey']}\n")
            env.update(AWS_SHARED_CREDENTIALS_FILE=str(credentials), AWS_PROFILE="reader")
        else:
            _RoleEndpoint.credentials = {
                "AccessKeyId": key["AccessKeyId"], "SecretAccessKey": key["SecretAccessKey"], "Token": "",
                "Expiration": (datetime.now(timezone.utc) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")}
            httpd = ThreadingHTTPServer(("127.0.0.1", 0), _RoleEndpoint)
            threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
            stack.callback(httpd.server_close)
            stack.callback(httpd.shutdown)
            monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", f"http://127.0.0.1:{httpd.server_address[1]}/")
        assert S3Source("s3://private/m", env).credentials is not None
        report = fetcher(env=env).prepare(entry, tmp_path / "pkg")
    assert report.bytes_fetched == 5000
    assert (tmp_path / "pkg" / "w" / "weights.bin").read_bytes() == b"w" * 5000
