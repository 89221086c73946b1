"""``s3://bucket/key-or-prefix``: credentials and endpoint from the environment, listing, signing."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from swell.weights._fetch import RemoteFile, WeightsError, normalize_validator
from swell.weights._sigv4 import sign_request

if TYPE_CHECKING:
    import httpx

_LIST_PAGE = 1000


@dataclass(frozen=True)
class S3Location:
    bucket: str
    key: str  # a key, a prefix, or "" for the whole bucket

    @classmethod
    def parse(cls, url: str) -> S3Location:
        if not url.startswith("s3://"):
            raise ValueError(f"{url!r} is not an s3:// URL")
        bucket, _, key = url[len("s3://"):].partition("/")
        if not bucket:
            raise ValueError(f"{url!r} names no bucket; use s3://bucket/key")
        return cls(bucket, key)


@dataclass(frozen=True)
class S3Credentials:
    access_key: str
    secret_key: str
    session_token: str | None = None


#: Gives the credentials to sign with now (role credentials expire and are refreshed).
CredentialSource = Callable[[], S3Credentials]

#: Variables that choose botocore's profile and files, read from the fetcher's environment.
_BOTOCORE_VARIABLES = (("AWS_PROFILE", "profile"), ("AWS_SHARED_CREDENTIALS_FILE", "credentials_file"),
                       ("AWS_CONFIG_FILE", "config_file"))


def credential_source(env: Mapping[str, str]) -> CredentialSource | None:
    """``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``; else botocore's full
    chain when botocore is installed (environment, profiles and SSO, web identity (EKS pod
    roles), container (ECS task roles) and instance metadata (EC2 roles)); else ``None``: unsigned."""
    key, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        static = S3Credentials(key, secret, env.get("AWS_SESSION_TOKEN") or None)
        return lambda: static
    found = _botocore_credentials(env)
    if found is None:
        return None

    def current() -> S3Credentials:
        import botocore.exceptions  # type: ignore[import-untyped]

        try:
            frozen = found.get_frozen_credentials()  # refreshes role credentials before they expire
        except botocore.exceptions.BotoCoreError as exc:  # the role endpoint gone, an SSO login expired
            raise WeightsError(f"AWS credentials could not be refreshed: {exc}") from exc
        return S3Credentials(frozen.access_key, frozen.secret_key, frozen.token)

    return current


def credentials_from_env(env: Mapping[str, str]) -> S3Credentials | None:
    """The credentials :func:`credential_source` gives now; ``None``: unsigned requests."""
    source = credential_source(env)
    return source() if source is not None else None


def _botocore_credentials(env: Mapping[str, str]) -> Any:
    try:
        import botocore.exceptions  # type: ignore[import-untyped]  # lazy: only without keys
        import botocore.session  # type: ignore[import-untyped]
    except ImportError:
        return None
    session = botocore.session.Session()
    for variable, name in _BOTOCORE_VARIABLES:
        if env.get(variable):
            session.set_config_variable(name, env[variable])
    try:
        return session.get_credentials()
    except botocore.exceptions.BotoCoreError as exc:  # a named profile that does not exist, a bad file
        raise WeightsError(f"AWS credentials: {exc}") from exc


@dataclass
class S3Endpoint:
    """Where requests for one bucket go; ``path_style`` for custom endpoints (MinIO, moto, R2…)."""

    base: str  # scheme://host[:port], no trailing slash
    region: str
    path_style: bool

    @classmethod
    def from_env(cls, env: Mapping[str, str], bucket: str) -> S3Endpoint:
        region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"
        custom = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
        if custom:
            return cls(custom.rstrip("/"), region, True)
        style = env.get("AWS_S3_ADDRESSING_STYLE", "").lower()
        path_style = style == "path" or "." in bucket  # dots break virtual-host TLS names
        host = f"s3.{region}.amazonaws.com"
        return cls(f"https://{host}", region, path_style)

    def url(self, bucket: str, key: str = "", query: str = "") -> str:
        path = quote(key, safe="/-_.~")
        if self.path_style:
            out = f"{self.base}/{bucket}/{path}" if key else f"{self.base}/{bucket}/"
        else:
            scheme, _, host = self.base.partition("://")
            out = f"{scheme}://{bucket}.{host}/{path}"
        return out + (f"?{query}" if query else "")


class S3Source:
    """One ``s3://`` source: lists its files and signs every GET."""

    def __init__(self, url: str, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.url = url
        self.location = S3Location.parse(url)
        self.credentials = credential_source(env)
        self.endpoint = S3Endpoint.from_env(env, self.location.bucket)

    def sign(self, url: str, headers: dict[str, str]) -> dict[str, str]:
        if self.credentials is None:
            return headers
        creds = self.credentials()
        return sign_request("GET", url, headers, access_key=creds.access_key, secret_key=creds.secret_key,
                            session_token=creds.session_token, region=self.endpoint.region,
                            now=datetime.now(timezone.utc))

    def files(self, client: httpx.Client) -> list[RemoteFile]:
        """The object ``key`` itself if it exists, else every object under ``key/``."""
        bucket, key = self.location.bucket, self.location.key
        objects = self._list(client, key)
        exact = [o for o in objects if o[0] == key]
        if key and exact:
            name, size, etag = exact[0]
            return [self._remote(name, name.rsplit("/", 1)[-1], size, etag)]
        prefix = key if not key or key.endswith("/") else key + "/"
        out = []
        for name, size, etag in objects:
            if not name.startswith(prefix) or name.endswith("/"):
                continue  # a sibling such as key2, or a folder marker
            out.append(self._remote(name, name[len(prefix):], size, etag))
        if not out:
            raise WeightsError(f"{self.url}: no such object and no objects under it "
                               f"(bucket {bucket!r}, endpoint {self.endpoint.base})")
        return out

    def _remote(self, key: str, name: str, size: int, etag: str | None) -> RemoteFile:
        return RemoteFile(url=f"s3://{self.location.bucket}/{key}",
                          fetch_url=self.endpoint.url(self.location.bucket, key),
                          name=name, size=size, validator=normalize_validator(etag))

    def _list(self, client: httpx.Client, prefix: str) -> list[tuple[str, int, str | None]]:
        bucket = self.location.bucket
        out: list[tuple[str, int, str | None]] = []
        token: str | None = None
        redirected = False
        while True:
            params = {"list-type": "2", "max-keys": str(_LIST_PAGE), "prefix": prefix}
            if token:
                params["continuation-token"] = token
            url = self.endpoint.url(bucket, query=urlencode(params, quote_via=quote))
            response = client.get(url, headers=self.sign(url, {}))
            region = response.headers.get("x-amz-bucket-region")
            if response.status_code in (301, 400) and region and region != self.endpoint.region and not redirected:
                # The bucket lives elsewhere: AWS says where once; ask there.
                redirected = True
                base = self.endpoint.base
                if base.endswith(".amazonaws.com"):
                    base = f"https://s3.{region}.amazonaws.com"
                self.endpoint = S3Endpoint(base, region, self.endpoint.path_style)
                continue
            if response.status_code != 200:
                raise WeightsError(f"{self.url}: listing failed with HTTP {response.status_code} "
                                   f"{_s3_error(response.text)} (endpoint {self.endpoint.base})")
            root = ET.fromstring(response.content)
            ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
            for item in root.iter(f"{ns}Contents"):
                key = item.findtext(f"{ns}Key") or ""
                out.append((key, int(item.findtext(f"{ns}Size") or 0), item.findtext(f"{ns}ETag")))
            if (root.findtext(f"{ns}IsTruncated") or "").lower() != "true":
                return out
            token = root.findtext(f"{ns}NextContinuationToken")
            if not token:
                return out


def _s3_error(body: str) -> str:
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return body[:200]
    code, message = root.findtext("Code"), root.findtext("Message")
    return f"{code}: {message}" if code else body[:200]
