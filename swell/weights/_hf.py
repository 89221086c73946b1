"""``hf://owner/name[@revision]``: a Hugging Face model repo, listed through ``huggingface_hub``.

``huggingface_hub`` answers the questions only the Hub can: which commit a
revision is, which files that commit has, their sizes and (for LFS files)
their sha256 — with the Hub's own error taxonomy (repo not found, gated,
revision not found), ``HF_ENDPOINT`` and its token conventions.  The bytes
come through Swell's parallel ranged fetcher from the Hub's resolve URLs
(``{endpoint}/{repo}/resolve/{commit}/{path}``), straight into the shared
content-addressed cache; docs/weights.md says why not ``snapshot_download``.

Every file is named by its commit (``hf://owner/name@<commit>/<path>``), so
a cached file is never stale: a replica that finds it asks the Hub one
question (the listing) and downloads nothing.  The last listing of each
``repo@revision`` is kept in the cache, so a replica still starts from the
cache when the Hub cannot be reached.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from swell.weights._fetch import RemoteFile, WeightsError

logger = logging.getLogger("swell.weights")

DEFAULT_ENDPOINT = "https://huggingface.co"
_LISTING_TIMEOUT = 30.0


@dataclass(frozen=True)
class HfFile:
    """One file of a commit, as the Hub's listing gives it."""

    path: str
    size: int | None
    sha256: str | None  # LFS files only: the Hub gives the sha256 of their content

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256}


@dataclass(frozen=True)
class HfListing:
    repo_id: str
    commit: str
    files: tuple[HfFile, ...]

    def to_json(self) -> str:
        return json.dumps({"repo_id": self.repo_id, "commit": self.commit,
                           "files": [f.to_json() for f in self.files]})

    @classmethod
    def from_json(cls, text: str) -> HfListing | None:
        try:
            data = json.loads(text)
            files = tuple(HfFile(str(f["path"]), None if f["size"] is None else int(f["size"]),
                                 f["sha256"]) for f in data["files"])
            return cls(str(data["repo_id"]), str(data["commit"]), files)
        except (ValueError, KeyError, TypeError):
            return None


def endpoint_from_env(env: Mapping[str, str]) -> str:
    """``HF_ENDPOINT`` (a mirror, or a local test server), else the Hub."""
    return (env.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def hub_cache_dir(env: Mapping[str, str]) -> Path:
    """Where ``huggingface_hub`` (and so ``from_pretrained``) looks for repos, by its own rule:
    ``HF_HUB_CACHE``, else ``HF_HOME/hub``, else ``$XDG_CACHE_HOME/huggingface/hub``."""
    if env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE"):
        return Path(os.path.expanduser(env.get("HF_HUB_CACHE") or env["HUGGINGFACE_HUB_CACHE"]))
    home = env.get("HF_HOME") or os.path.join(
        env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface")
    return Path(os.path.expanduser(home)) / "hub"


def snapshot_dir(hub_cache: Path, repo_id: str, commit: str) -> Path:
    """``models--owner--name/snapshots/<commit>``: the folder ``from_pretrained`` reads."""
    return hub_cache / ("models--" + repo_id.replace("/", "--")) / "snapshots" / commit


def write_hub_ref(hub_cache: Path, repo_id: str, revision: str | None, commit: str) -> None:
    """``refs/<revision>`` → the commit, so an offline ``from_pretrained(repo_id, revision=…)`` finds it."""
    name = revision or "main"
    if name == commit:  # asked for by commit: the snapshot folder is all it takes
        return
    ref = hub_cache / ("models--" + repo_id.replace("/", "--")) / "refs" / name
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text(commit)


def resolve_url(endpoint: str, repo_id: str, commit: str, path: str) -> str:
    return f"{endpoint}/{repo_id}/resolve/{commit}/{quote(path, safe='/')}"


def remote_files(listing: HfListing, endpoint: str) -> list[RemoteFile]:
    """The commit's files as the fetcher's :class:`RemoteFile`, named by commit and path.

    No validator: a commit's files never change, and the resolve URL of an
    LFS file redirects to a CDN whose ETag is its own, not the Hub's.
    """
    return [
        RemoteFile(url=f"hf://{listing.repo_id}@{listing.commit}/{f.path}",
                   fetch_url=resolve_url(endpoint, listing.repo_id, listing.commit, f.path),
                   name=f.path, size=f.size, sha256=f.sha256)
        for f in listing.files
    ]


def listing_from_info(repo_id: str, info: Any) -> HfListing:
    """A ``huggingface_hub`` ``ModelInfo`` (with ``files_metadata``) as a listing."""
    files = []
    for sibling in info.siblings or []:
        lfs = getattr(sibling, "lfs", None)
        sha256 = getattr(lfs, "sha256", None) if lfs is not None else None
        files.append(HfFile(sibling.rfilename, sibling.size, sha256))
    if not info.sha:
        raise WeightsError(f"hf://{repo_id}: the Hub's answer names no commit")
    return HfListing(repo_id, str(info.sha), tuple(files))


def token_from(headers: Mapping[str, str] | None, env: Mapping[str, str]) -> str | None:
    """The token from the entry's secret (as a bearer header), else ``HF_TOKEN``; ``None``: anonymous."""
    value = (headers or {}).get("Authorization", "")
    if value.startswith("Bearer ") and value[len("Bearer "):].strip():
        return value[len("Bearer "):].strip()
    return env.get("HF_TOKEN") or None


class HubUnreachable(WeightsError):
    """The Hub did not answer (no network, offline mode): a cached listing may still serve."""


class HfSource:
    """One Hugging Face model repo at one revision: lists its files, signs every GET."""

    def __init__(self, repo_id: str, revision: str | None, env: Mapping[str, str],
                 token: str | None = None) -> None:
        self.repo_id = repo_id
        self.revision = revision
        self.endpoint = endpoint_from_env(env)
        self.token = token

    @property
    def url(self) -> str:
        return f"hf://{self.repo_id}" + (f"@{self.revision}" if self.revision else "")

    def sign(self, url: str, headers: dict[str, str]) -> dict[str, str]:
        # httpx drops Authorization on a redirect to another host (the Hub's CDN), as it should.
        return {**headers, "Authorization": f"Bearer {self.token}"} if self.token else headers

    def listing(self) -> HfListing:
        """The commit and its files, from the Hub (``huggingface_hub``'s ``model_info``)."""
        try:
            from huggingface_hub import HfApi
            from huggingface_hub.errors import (
                GatedRepoError,
                HfHubHTTPError,
                RepositoryNotFoundError,
                RevisionNotFoundError,
            )
        except ImportError as exc:  # a dependency of Swell; only a broken install lacks it
            raise WeightsError(f"{self.url}: huggingface_hub is not installed ({exc}); "
                               "pip install huggingface_hub") from exc
        api = HfApi(endpoint=self.endpoint, token=self.token or False)
        where = f"(endpoint {self.endpoint})"
        try:
            info = api.model_info(self.repo_id, revision=self.revision, files_metadata=True,
                                  timeout=_LISTING_TIMEOUT)
        except GatedRepoError as exc:
            raise WeightsError(f"{self.url}: the repo is gated and this token has not been granted "
                               f"access; accept its terms on the Hub with the token's account {where}") from exc
        except RepositoryNotFoundError as exc:
            hint = ("the token cannot see it" if self.token else
                    "if it is private, declare the hf_access_token secret (or name one with "
                    "auth_secret_name) and set it")
            raise WeightsError(f"{self.url}: repository {self.repo_id!r} not found ({hint}) {where}") from exc
        except RevisionNotFoundError as exc:
            raise WeightsError(f"{self.url}: repository {self.repo_id!r} has no revision "
                               f"{self.revision!r} (a branch, a tag or a commit) {where}") from exc
        except HfHubHTTPError as exc:
            status = exc.response.status_code if exc.response is not None else "?"
            raise WeightsError(f"{self.url}: the Hub answered HTTP {status} {where}: "
                               f"{str(exc).splitlines()[0]}") from exc
        except Exception as exc:  # transport errors: requests' or httpx's, per huggingface_hub version
            raise HubUnreachable(f"{self.url}: cannot reach the Hub {where}: {exc}") from exc
        return listing_from_info(self.repo_id, info)
