"""Hugging Face sources against a real HTTP server that speaks the Hub's download API (``HF_ENDPOINT``).

The listing goes through ``huggingface_hub``; the bytes through Swell's ranged fetcher into
the shared cache.  This machine has no internet: :class:`HubServer` is the Hub.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FetcherFactory

from swell.weights import WeightsError
from swell.weights._testing import HubRepo, HubServer, free_port

pytest.importorskip("huggingface_hub")

WEIGHTS_V1 = bytes(range(256)) * 9000  # 2.2 MiB: three parts of 1 MiB
WEIGHTS_V2 = b"v2" * 700_000
V1 = {"config.json": b'{"hidden": 8}', "model.safetensors": WEIGHTS_V1, "README.md": b"# tiny",
      "tokenizer/vocab.txt": b"a\nb\n"}
V2 = {**V1, "model.safetensors": WEIGHTS_V2, "config.json": b'{"hidden": 16}'}
TOKEN = "hf_secret"


@pytest.fixture
def hub() -> Iterator[HubServer]:
    public = HubRepo.of(V1, V2)
    public.refs["v1.0"] = list(public.commits)[0]  # a tag on the first commit
    repos = {"org/tiny": public, "org/private": HubRepo.of(V1, private=True), "gpt": HubRepo.of(V1)}
    with HubServer(repos, token=TOKEN) as server:
        yield server


def files_under(mount: Path) -> dict[str, bytes]:
    return {str(p.relative_to(mount)): p.read_bytes() for p in sorted(mount.rglob("*")) if p.is_file()}


def test_a_public_repo_then_a_second_replica_downloads_nothing(hub: HubServer, fetcher: FetcherFactory,
                                                             package: Path, tmp_path: Path) -> None:
    events: list[tuple[str, dict[str, object]]] = []
    entry = {"source": "hf://org/tiny", "mount_location": "/app/model_cache/tiny"}
    report = fetcher(env={"HF_ENDPOINT": hub.endpoint},
                     emit=lambda name, **f: events.append((name, f))).prepare([entry], package)
    mount = package / "model_cache" / "tiny"
    assert files_under(mount) == V2  # main is the last commit; folders in the repo are kept
    assert (mount / "model.safetensors").is_symlink()
    assert report.bytes_fetched == sum(map(len, V2.values())) and report.bytes_cached == 0
    assert ("weights_ready", {"seconds": events[-1][1]["seconds"], "bytes_fetched": report.bytes_fetched,
                              "bytes_cached": 0, "files": 4}) == events[-1]
    assert any(name == "weights_progress" for name, _ in events)
    assert any(path.startswith("/cdn/") for path in hub.file_gets())  # LFS files follow the redirect

    before = len(hub.file_gets())
    again = fetcher(env={"HF_ENDPOINT": hub.endpoint}).prepare([entry], tmp_path / "second")
    assert again.bytes_fetched == 0 and again.bytes_cached == report.bytes_fetched
    assert len(hub.file_gets()) == before  # the listing only: every file is named by its commit
    assert files_under(tmp_path / "second" / "model_cache" / "tiny") == V2


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"source": "hf://org/tiny@v1.0"}, V1),  # a tag
        ({"source": "hf://org/tiny", "revision": "v1.0"}, V1),  # revision as its own key
        ({"source": "org/tiny@main"}, V2),  # Truss: no scheme is a Hugging Face repo
        ({"repo_id": "org/tiny", "revision": "v1.0", "volume_folder": "tiny"}, V1),  # model_cache's shape
        ({"source": "hf://gpt"}, V1),  # a repo id without an owner
    ],
)
def test_revision_pinning(hub: HubServer, fetcher: FetcherFactory, package: Path, entry: dict[str, object],
                          expected: dict[str, bytes]) -> None:
    first_commit = list(hub.repos["org/tiny"].commits)[0]
    fetcher(env={"HF_ENDPOINT": hub.endpoint}).prepare([{**entry, "mount_location": "/app/w"}], package)
    assert files_under(package / "w") == expected
    if expected is V1 and "gpt" not in str(entry):
        assert all(first_commit in path for path in hub.file_gets() if "/resolve/" in path)


def test_a_pinned_commit_is_not_moved_by_a_new_main(hub: HubServer, fetcher: FetcherFactory, package: Path) -> None:
    repo = hub.repos["org/tiny"]
    first = list(repo.commits)[0]
    fetcher(env={"HF_ENDPOINT": hub.endpoint}).prepare(
        [{"source": f"hf://org/tiny@{first}", "mount_location": "/app/w"}], package)
    assert (package / "w" / "model.safetensors").read_bytes() == WEIGHTS_V1


@pytest.mark.parametrize("revision", [None, "v1.0"])
def test_a_model_cache_repo_without_a_volume_lands_where_from_pretrained_looks(
        hub: HubServer, fetcher: FetcherFactory, package: Path, tmp_path: Path, revision: str | None) -> None:
    """Truss bakes such an entry into the image's Hugging Face cache; the model calls
    from_pretrained(repo_id). huggingface_hub's own offline lookup must find every file."""
    from huggingface_hub import hf_hub_download, snapshot_download

    hub_cache = tmp_path / "hf-home" / "hub"
    entry = {"repo_id": "org/tiny", "revision": revision, "allow_patterns": ["*.json", "*.safetensors"]}
    report = fetcher(env={"HF_ENDPOINT": hub.endpoint, "HF_HOME": str(tmp_path / "hf-home")}).prepare(
        [entry], package)
    expected = V1 if revision else V2
    assert report.sources[0].mount is not None and hub_cache in report.sources[0].mount.parents
    found = hf_hub_download("org/tiny", "model.safetensors", revision=revision, cache_dir=hub_cache,
                            local_files_only=True)
    assert Path(found).read_bytes() == expected["model.safetensors"]
    folder = Path(snapshot_download("org/tiny", revision=revision, cache_dir=hub_cache, local_files_only=True))
    assert files_under(folder) == {k: v for k, v in expected.items() if k.endswith((".json", ".safetensors"))}
    assert not (package / "data").exists()  # nothing in the package


def test_allow_and_ignore_patterns(hub: HubServer, fetcher: FetcherFactory, package: Path) -> None:
    report = fetcher(env={"HF_ENDPOINT": hub.endpoint}).prepare(
        [{"source": "hf://org/tiny", "mount_location": "/app/w", "allow_patterns": ["*.json", "tokenizer/*"],
          "ignore_patterns": ["*.md"]}], package)
    assert sorted(files_under(package / "w")) == ["config.json", "tokenizer/vocab.txt"]
    assert not any("safetensors" in path for path in hub.file_gets())  # not one byte of what was left out
    assert report.sources[0].files == 2


def test_a_private_repo_needs_the_token(hub: HubServer, fetcher: FetcherFactory, package: Path) -> None:
    entry = {"source": "hf://org/private", "mount_location": "/app/w"}
    with pytest.raises(WeightsError) as refused:
        fetcher(env={"HF_ENDPOINT": hub.endpoint}).prepare([entry], package)
    message = str(refused.value)
    assert "hf://org/private" in message and "not found" in message and "hf_access_token" in message
    with pytest.raises(WeightsError, match="the token cannot see it"):
        fetcher(env={"HF_ENDPOINT": hub.endpoint}).prepare(
            [entry], package, auth=lambda e: {"Authorization": "Bearer wrong"})
    fetcher(env={"HF_ENDPOINT": hub.endpoint}).prepare(
        [entry], package, auth=lambda e: {"Authorization": f"Bearer {TOKEN}"})
    assert files_under(package / "w") == V1
    # HF_TOKEN in the environment serves when no secret is given, as it does for huggingface_hub.
    fetcher(env={"HF_ENDPOINT": hub.endpoint, "HF_TOKEN": TOKEN}).prepare(
        [{**entry, "mount_location": "/app/w2"}], package)
    assert files_under(package / "w2") == V1


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("hf://org/missing", "repository 'org/missing' not found"),
        ("hf://org/tiny@no-such-branch", "has no revision 'no-such-branch'"),
    ],
)
def test_a_missing_repo_or_revision_fails_with_a_sentence(hub: HubServer, fetcher: FetcherFactory,
                                                          package: Path, source: str, message: str) -> None:
    with pytest.raises(WeightsError, match=message) as info:
        fetcher(env={"HF_ENDPOINT": hub.endpoint}).prepare([{"source": source}], package)
    assert hub.endpoint in str(info.value)


def test_patterns_that_keep_nothing_fail(hub: HubServer, fetcher: FetcherFactory, package: Path) -> None:
    with pytest.raises(WeightsError, match="no file matches"):
        fetcher(env={"HF_ENDPOINT": hub.endpoint}).prepare(
            [{"source": "hf://org/tiny", "allow_patterns": ["*.gguf"]}], package)


def test_the_cache_serves_when_the_hub_is_unreachable(hub: HubServer, fetcher: FetcherFactory,
                                                      package: Path, tmp_path: Path) -> None:
    entry = {"source": "hf://org/tiny", "mount_location": "/app/w"}
    fetcher(env={"HF_ENDPOINT": hub.endpoint}).prepare([entry], package)
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    again = fetcher(env={"HF_ENDPOINT": endpoint}).prepare([entry], tmp_path / "offline")
    assert again.bytes_fetched == 0 and files_under(tmp_path / "offline" / "w") == V2
    with pytest.raises(WeightsError, match="cannot reach the Hub"):  # nothing cached for this revision
        fetcher(env={"HF_ENDPOINT": endpoint}).prepare([{"source": "hf://org/tiny@v1.0"}], tmp_path / "x")


def test_an_lfs_file_is_checked_against_the_hub_s_sha256(hub: HubServer, fetcher: FetcherFactory,
                                                         package: Path, tmp_path: Path) -> None:
    hub.corrupt_cdn = True  # a CDN that serves other bytes than the listing promised
    listed = hashlib.sha256(WEIGHTS_V2).hexdigest()
    with pytest.raises(WeightsError, match="sha256 mismatch: the source lists " + listed):
        fetcher(env={"HF_ENDPOINT": hub.endpoint}).prepare(
            [{"source": "hf://org/tiny", "allow_patterns": ["*.safetensors"]}], package)
    assert not list((tmp_path / "cache" / "blobs" / "sha256").iterdir())  # nothing cached


def test_the_local_hub_serves_huggingface_hub_s_own_download(hub: HubServer, tmp_path: Path) -> None:
    """The server is faithful enough for snapshot_download (tree listing, HEAD metadata from the
    redirect, the CDN on another origin): what Swell is tested and benchmarked against is the Hub's API."""
    from huggingface_hub import snapshot_download

    folder = snapshot_download("org/private", cache_dir=tmp_path / "hf", endpoint=hub.endpoint, token=TOKEN)
    assert files_under(Path(folder)) == V1
