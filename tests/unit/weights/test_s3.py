"""SigV4 against AWS's published examples and botocore; S3 locations and endpoints from the environment."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from swell.weights import WeightsError
from swell.weights._s3 import S3Endpoint, S3Location, credentials_from_env
from swell.weights._sigv4 import sign_request

AK, SK = "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
WHEN = datetime(2013, 5, 24, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("url", "headers", "signature"),
    [
        # "Example: GET Object" and "Example: GET Bucket (List Objects)" of the S3 SigV4 documentation.
        ("https://examplebucket.s3.amazonaws.com/test.txt", {"Range": "bytes=0-9"},
         "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"),
        ("https://examplebucket.s3.amazonaws.com/?max-keys=2&prefix=J", {},
         "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"),
    ],
)
def test_sigv4_matches_aws_examples(url: str, headers: dict[str, str], signature: str) -> None:
    signed = sign_request("GET", url, headers, access_key=AK, secret_key=SK, region="us-east-1", now=WHEN)
    assert signed["Authorization"].endswith(f"Signature={signature}")
    assert signed["x-amz-date"] == "20130524T000000Z"


def test_sigv4_matches_botocore_with_port_token_and_odd_key() -> None:
    botocore = pytest.importorskip("botocore")
    from unittest import mock

    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    url = "http://127.0.0.1:9000/bucket/dir/a%20b%2Bc.bin"
    now = datetime(2024, 2, 3, 4, 5, 6, tzinfo=timezone.utc)
    request = AWSRequest(method="GET", url=url, headers={"Range": "bytes=5-10"})
    auth = S3SigV4Auth(Credentials("key", "secret", "token"), "s3", "eu-west-1")
    with mock.patch("botocore.auth.get_current_datetime", return_value=now.replace(tzinfo=None)):
        auth.add_auth(request)
    ours = sign_request("GET", url, {"Range": "bytes=5-10"}, access_key="key", secret_key="secret",
                        session_token="token", region="eu-west-1", now=now,
                        payload_sha256=request.headers["X-Amz-Content-SHA256"])
    assert ours["Authorization"] == request.headers["Authorization"], botocore.__version__


@pytest.mark.parametrize(
    ("url", "bucket", "key"),
    [("s3://b/k", "b", "k"), ("s3://b/dir/", "b", "dir/"), ("s3://b", "b", ""), ("s3://b/a/b/c.bin", "b", "a/b/c.bin")],
)
def test_s3_location(url: str, bucket: str, key: str) -> None:
    assert S3Location.parse(url) == S3Location(bucket, key)


@pytest.mark.parametrize("url", ["s3:///key", "https://b/k"])
def test_s3_location_refuses(url: str) -> None:
    with pytest.raises(ValueError):
        S3Location.parse(url)


@pytest.mark.parametrize(
    ("env", "bucket", "key", "url"),
    [
        ({}, "b", "k/x y", "https://b.s3.us-east-1.amazonaws.com/k/x%20y"),
        ({"AWS_REGION": "eu-west-1"}, "b", "k", "https://b.s3.eu-west-1.amazonaws.com/k"),
        ({"AWS_DEFAULT_REGION": "eu-west-2"}, "my.bucket", "k", "https://s3.eu-west-2.amazonaws.com/my.bucket/k"),
        ({"AWS_ENDPOINT_URL": "http://127.0.0.1:9000/"}, "b", "k", "http://127.0.0.1:9000/b/k"),
        ({"AWS_ENDPOINT_URL": "http://a", "AWS_ENDPOINT_URL_S3": "http://s3only:1"}, "b", "k", "http://s3only:1/b/k"),
    ],
)
def test_s3_endpoint_from_env(env: dict[str, str], bucket: str, key: str, url: str) -> None:
    assert S3Endpoint.from_env(env, bucket).url(bucket, key) == url


def test_credentials_from_env() -> None:
    creds = credentials_from_env({"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b", "AWS_SESSION_TOKEN": "c"})
    assert creds is not None and (creds.access_key, creds.secret_key, creds.session_token) == ("a", "b", "c")


def test_credentials_come_from_botocore_s_chain_without_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("botocore")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    path = tmp_path / "credentials"
    path.write_text("[team]\naws_access_key_id = AKIDFILE\naws_secret_access_key = filesecret\n")
    env = {"AWS_SHARED_CREDENTIALS_FILE": str(path), "AWS_PROFILE": "team", "AWS_CONFIG_FILE": str(tmp_path / "x")}
    creds = credentials_from_env(env)
    assert creds is not None and (creds.access_key, creds.secret_key) == ("AKIDFILE", "filesecret")

    with pytest.raises(WeightsError, match="AWS credentials"):  # a profile that is not there, in a sentence
        credentials_from_env({**env, "AWS_PROFILE": "nobody"})
