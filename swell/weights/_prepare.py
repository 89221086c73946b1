"""Bring a package's weights sources onto the machine and show them where the model looks."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from swell.config import WeightsSource
from swell.weights._cache import Ref, WeightsCache
from swell.weights._fetch import (
    Downloader,
    FetchOptions,
    RemoteFile,
    Signer,
    WeightsError,
    WeightsIntegrityError,
    normalize_validator,
)
from swell.weights._plan import human_bytes, mount_dir, parse_size, safe_relative, selected

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger("swell.weights")

#: Events are throttled to this many per second at most (plus one per file).
_EVENTS_PER_SECOND = 4
EventFn = Callable[..., None]


@dataclass
class SourceReport:
    url: str
    mount: Path | None
    files: int = 0
    bytes_total: int = 0
    bytes_fetched: int = 0
    bytes_cached: int = 0
    seconds: float = 0.0


@dataclass
class WeightsReport:
    sources: list[SourceReport] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def bytes_fetched(self) -> int:
        return sum(s.bytes_fetched for s in self.sources)

    @property
    def bytes_cached(self) -> int:
        return sum(s.bytes_cached for s in self.sources)


def options_from_env(env: Mapping[str, str]) -> tuple[FetchOptions, int | None]:
    """``SWELL_WEIGHTS_PART_SIZE``, ``_PARALLELISM``, ``_RETRIES`` and ``SWELL_WEIGHTS_CACHE_SIZE``."""
    defaults = FetchOptions()
    part = env.get("SWELL_WEIGHTS_PART_SIZE")
    limit = env.get("SWELL_WEIGHTS_CACHE_SIZE")
    options = FetchOptions(
        part_size=parse_size(part) if part else defaults.part_size,
        parallelism=int(env.get("SWELL_WEIGHTS_PARALLELISM") or defaults.parallelism),
        retries=int(env.get("SWELL_WEIGHTS_RETRIES") or defaults.retries),
    )
    if options.parallelism < 1 or (options.part_size is not None and options.part_size < 1):
        raise ValueError("SWELL_WEIGHTS_PARALLELISM and SWELL_WEIGHTS_PART_SIZE must be ≥ 1")
    return options, (parse_size(limit) if limit else None)


def default_cache_dir(env: Mapping[str, str]) -> Path:
    """``SWELL_WEIGHTS_CACHE``; else ``$XDG_CACHE_HOME/swell/weights`` (a replica started by hand)."""
    if env.get("SWELL_WEIGHTS_CACHE"):
        return Path(env["SWELL_WEIGHTS_CACHE"])
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "swell" / "weights"


class _Progress:
    """Sums bytes from download threads; emits throttled ``weights_progress`` events."""

    def __init__(self, emit: EventFn | None, total_files: int) -> None:
        self._emit = emit
        self._lock = threading.Lock()
        self.fetched = 0
        self.cached = 0
        self.files_done = 0
        self.files_total = total_files
        self._last = 0.0

    def add(self, n: int) -> None:
        with self._lock:
            self.fetched += n
            now = time.monotonic()
            if now - self._last < 1 / _EVENTS_PER_SECOND:
                return
            self._last = now
        self.send()

    def send(self) -> None:
        if self._emit is not None:
            self._emit("weights_progress", bytes_fetched=self.fetched, bytes_cached=self.cached,
                       files_done=self.files_done, files_total=self.files_total)


class WeightsFetcher:
    """Fetches sources through one cache; ``emit(event, **fields)`` receives progress."""

    def __init__(self, cache: WeightsCache, options: FetchOptions | None = None, *,
                 env: Mapping[str, str] | None = None, emit: EventFn | None = None,
                 client: httpx.Client | None = None) -> None:
        self.cache = cache
        self.options = options or FetchOptions()
        self.env = os.environ if env is None else env
        self.emit = emit
        self._client = client

    # ------------------------------------------------------------------ entry

    def prepare(self, entries: Sequence[WeightsSource | Mapping[str, Any]], package_dir: Path, *,
                data_dir: str = "data",
                auth: Callable[[WeightsSource], Mapping[str, str]] | None = None) -> WeightsReport:
        """Fetch every entry (or take it from the cache) and link it under its mount location.

        ``auth(entry)`` gives extra request headers for an http(s) source.
        """
        import httpx

        started = time.monotonic()
        report = WeightsReport()
        sources = [e if isinstance(e, WeightsSource) else WeightsSource.model_validate(e) for e in entries]
        client = self._client or httpx.Client(
            timeout=httpx.Timeout(self.options.timeout, connect=10.0), follow_redirects=True,
            limits=httpx.Limits(max_connections=self.options.parallelism + 2,
                                max_keepalive_connections=self.options.parallelism + 2),
        )
        try:
            for source in sources:
                headers = auth(source) if auth is not None else None
                report.sources.append(self._prepare_source(client, source, package_dir, data_dir, headers))
        finally:
            if self._client is None:
                client.close()
        report.seconds = time.monotonic() - started
        if self.emit is not None and sources:
            self.emit("weights_ready", seconds=round(report.seconds, 3), bytes_fetched=report.bytes_fetched,
                      bytes_cached=report.bytes_cached, files=sum(s.files for s in report.sources))
        return report

    def _prepare_source(self, client: httpx.Client, source: WeightsSource, package_dir: Path,
                        data_dir: str, headers: Mapping[str, str] | None) -> SourceReport:
        started = time.monotonic()
        url = source.url
        mount = mount_dir(source.mount_location, source.volume_folder, package_dir, data_dir)
        sign: Signer
        finish: Callable[[], None] = lambda: None
        hf = source.hf_repo
        if hf is not None:
            files, sign, commit = self._hf_files(hf[0], hf[1], headers)
            if source.into_hf_cache:
                from swell.weights._hf import hub_cache_dir, snapshot_dir, write_hub_ref

                hub_cache = hub_cache_dir(self.env)
                mount = snapshot_dir(hub_cache, hf[0], commit)
                # The revision points at the snapshot once every file is in it.
                finish = lambda: write_hub_ref(hub_cache, hf[0], hf[1], commit)  # noqa: E731
        elif url.startswith("s3://"):
            from swell.weights._s3 import S3Source

            s3 = S3Source(url, self.env)
            files = s3.files(client)
            sign = s3.sign
        else:
            name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
            if not name:
                raise WeightsError(f"{url}: the URL names no file (it ends with '/')")
            files = [RemoteFile(url=url, fetch_url=url, name=name)]
            extra = dict(headers or {})
            sign = (lambda _url, h: {**extra, **h}) if extra else (lambda _url, h: h)
        files = [f for f in files if selected(f.name, source.allow_patterns, source.ignore_patterns)]
        if not files:
            raise WeightsError(f"{url}: no file matches allow_patterns={source.allow_patterns} "
                               f"ignore_patterns={source.ignore_patterns}")
        if source.sha256 and len(files) > 1:
            raise WeightsError(f"{url}: sha256 is given but the source has {len(files)} files; "
                               "sha256 pins a single file")
        try:
            mount.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise WeightsError(f"{url}: cannot create the mount location {mount} ({exc.strerror}); "
                               "create it writable for the server's user, or mount under /app/ "
                               "(the package dir)") from exc
        report = SourceReport(url=url, mount=mount, files=len(files))
        progress = _Progress(self.emit, len(files))
        downloader = Downloader(client, self.options, sign)
        for remote in files:
            path = self._obtain(client, downloader, remote, remote.sha256 or source.sha256, progress)
            _link(mount / safe_relative(remote.name), path)
            report.bytes_total += path.stat().st_size
            progress.files_done += 1
            progress.send()
        finish()
        report.bytes_fetched, report.bytes_cached = progress.fetched, progress.cached
        report.seconds = time.monotonic() - started
        rate = (f" at {human_bytes(report.bytes_fetched / report.seconds)}/s"
                if report.bytes_fetched and report.seconds > 0 else "")
        logger.info("weights: %s → %s: %d file(s), %s (%s fetched%s, %s from the cache) in %.2f s",
                    url, mount, report.files, human_bytes(report.bytes_total),
                    human_bytes(report.bytes_fetched), rate, human_bytes(report.bytes_cached), report.seconds)
        return report

    def _hf_files(self, repo_id: str, revision: str | None,
                  headers: Mapping[str, str] | None) -> tuple[list[RemoteFile], Signer, str]:
        """A Hugging Face repo's files at its revision, and the commit; the last listing if the
        Hub is unreachable."""
        from swell.weights._hf import HfListing, HfSource, HubUnreachable, remote_files, token_from

        hub = HfSource(repo_id, revision, self.env, token_from(headers, self.env))
        try:
            listing = hub.listing()
        except HubUnreachable as exc:
            saved = self.cache.read_listing(hub.url)
            cached = HfListing.from_json(saved) if saved else None
            if cached is None:
                raise
            listing = cached
            logger.warning("weights: %s; using the listing cached for commit %s", exc, listing.commit)
        else:
            self.cache.write_listing(hub.url, listing.to_json())
        logger.info("weights: %s is commit %s (%d file(s))", hub.url, listing.commit, len(listing.files))
        return remote_files(listing, hub.endpoint), hub.sign, listing.commit

    # ------------------------------------------------------------------ one file

    def _obtain(self, client: httpx.Client, downloader: Downloader, remote: RemoteFile,
                sha256: str | None, progress: _Progress) -> Path:
        cached = self._cached(client, remote, sha256, downloader)
        if cached is not None:
            progress.cached += cached.stat().st_size
            return cached
        with self.cache.download_lock(remote.url) as waited:
            if waited:  # another replica fetched it while we waited
                cached = self._cached(client, remote, sha256, downloader, revalidate=False)
                if cached is not None:
                    progress.cached += cached.stat().st_size
                    return cached
            partial = self.cache.partial_path(remote.url)
            if remote.size is not None:
                self.cache.make_room(remote.size)
            result = downloader.download(remote, partial, progress.add)
            if sha256 and result.sha256 != sha256:
                with contextlib.suppress(FileNotFoundError):
                    partial.unlink()
                with contextlib.suppress(FileNotFoundError):
                    partial.with_name(partial.name + ".json").unlink()
                raise WeightsIntegrityError(
                    f"{remote.url}: sha256 mismatch: "
                    f"{'the source lists' if remote.sha256 else 'config.yaml expects'} {sha256}, the "
                    f"{result.size} bytes downloaded hash to {result.sha256}; the file was not cached"
                )
            path = self.cache.insert(partial, result.sha256)
            with contextlib.suppress(FileNotFoundError):
                partial.with_name(partial.name + ".json").unlink()
            self.cache.write_ref(Ref(remote.url, result.sha256, result.size, result.validator or remote.validator))
            return path

    def _cached(self, client: httpx.Client, remote: RemoteFile, sha256: str | None,
                downloader: Downloader, *, revalidate: bool = True) -> Path | None:
        """The cached blob for ``remote`` if it is still what the source serves."""
        if sha256:
            return self.cache.use(sha256, remote.size)  # content-addressed: no question to ask
        ref = self.cache.read_ref(remote.url)
        if ref is None:
            return None
        if remote.size is not None:  # a listing told us size and ETag
            if ref.size != remote.size or (remote.validator and ref.validator and remote.validator != ref.validator):
                return None
        elif revalidate and not self._still_current(client, remote, ref, downloader):
            return None
        return self.cache.use(ref.digest, ref.size)

    def _still_current(self, client: httpx.Client, remote: RemoteFile, ref: Ref, downloader: Downloader) -> bool:
        """A HEAD: same length and validator → the cached copy is current. No answer → use the cache."""
        import httpx

        try:
            response = client.head(remote.fetch_url, headers=downloader.sign(remote.fetch_url, {}))
        except httpx.HTTPError as exc:
            logger.warning("weights: cannot reach %s (%s); using the cached copy", remote.url, exc)
            return True
        if response.status_code >= 400:
            logger.warning("weights: HEAD %s answered %d; using the cached copy", remote.url, response.status_code)
            return True
        length = response.headers.get("content-length")
        validator = normalize_validator(response.headers.get("etag"), response.headers.get("last-modified"))
        if length is not None and int(length) != ref.size:
            return False
        return not (validator and ref.validator and validator != ref.validator)


def _link(path: Path, blob: Path) -> None:
    """``path`` → ``blob`` as a symlink, replaced atomically (replicas of one deployment share it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() and os.readlink(path) == str(blob):
        return
    if path.is_dir() and not path.is_symlink():
        raise WeightsError(f"cannot place a weights file at {path}: a folder is there")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.link")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(blob, tmp)
    os.replace(tmp, path)
