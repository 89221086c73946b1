"""Download one remote file into a partial file: parallel byte ranges, resume, retries.

The runner around :mod:`_plan`.  Parts are written in place with ``pwrite``;
a sidecar records the finished ones, so a download that was interrupted
(the replica killed, the connection gone) starts again where it stopped.
A server that ignores ``Range`` (``200`` instead of ``206``) or gives no
length is read as one stream.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from swell.weights._plan import PartRecord, contiguous_done, parse_content_range, split_parts

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger("swell.weights")

#: Builds the request headers for a GET of ``url`` (S3 signs them; HTTP adds auth).
Signer = Callable[[str, dict[str, str]], dict[str, str]]
ProgressFn = Callable[[int], None]

_HASH_BLOCK = 4 << 20


class WeightsError(RuntimeError):
    """A weights source could not be fetched; the message says which and why."""


class WeightsIntegrityError(WeightsError):
    """The bytes fetched are not the bytes that were promised (size or sha256)."""


class _RemoteChanged(WeightsError):
    """The object changed between two requests of one download."""


@dataclass(frozen=True)
class FetchOptions:
    """How one file is fetched.  ``parallelism=1`` with ``part_size=None`` is a plain single GET."""

    part_size: int | None = 16 << 20
    parallelism: int = 8
    retries: int = 5
    retry_backoff: float = 0.2
    timeout: float = 60.0


@dataclass(frozen=True)
class RemoteFile:
    """One file of a source.  ``size``/``validator`` are known when a listing gave them."""

    url: str  # identity in the cache (s3://bucket/key or the http URL)
    fetch_url: str
    name: str  # path under the mount location
    size: int | None = None
    validator: str | None = None
    sha256: str | None = None  # known before the download (a Hugging Face LFS file): checked, and the cache key


@dataclass(frozen=True)
class Downloaded:
    size: int
    sha256: str
    validator: str | None
    bytes_downloaded: int
    mode: str  # "ranges" | "stream"
    resumed_bytes: int = 0


def normalize_validator(etag: str | None, last_modified: str | None = None) -> str | None:
    if etag:
        return etag.strip().removeprefix("W/").strip('"')
    return last_modified.strip() if last_modified else None


def _plain_headers(url: str, headers: dict[str, str]) -> dict[str, str]:
    return headers


class Downloader:
    """Fetches :class:`RemoteFile` objects with one shared ``httpx.Client``."""

    def __init__(self, client: httpx.Client, options: FetchOptions, sign: Signer | None = None) -> None:
        self.client = client
        self.options = options
        self.sign = sign or _plain_headers

    # ------------------------------------------------------------------ entry

    def download(self, remote: RemoteFile, partial: Path, progress: ProgressFn | None = None) -> Downloaded:
        """Fetch ``remote`` into ``partial`` (sidecar ``partial.json``); return size and sha256."""
        progress = progress or (lambda n: None)
        for attempt in range(2):
            try:
                return self._download(remote, partial, progress)
            except _RemoteChanged:
                if attempt:
                    raise
                logger.warning("weights: %s changed during the download; starting again", remote.url)
                _discard(partial)
        raise AssertionError("unreachable")

    def _download(self, remote: RemoteFile, partial: Path, progress: ProgressFn) -> Downloaded:
        sidecar = _sidecar(partial)
        part_size = self.options.part_size
        record = _read_record(sidecar) if partial.exists() else None
        if part_size is None:
            _discard(partial)
            return self._stream(remote, partial, progress, None)
        if remote.size is not None:
            size, validator = remote.size, remote.validator
        else:
            # Probe with the first part still missing: it tells the size and the
            # validator, and its bytes are kept.
            first = contiguous_done(record.done, 0) if record else 0
            if record is not None and first * part_size >= record.size:
                first = 0  # every part is on disk: any part will do to check the object
            start = first * part_size
            headers = {"Range": f"bytes={start}-{start + part_size - 1}"}
            response = self._send(remote.fetch_url, headers)
            if response.status_code == 200:
                _discard(partial)
                return self._stream(remote, partial, progress, response)
            if response.status_code == 416:  # nothing at that offset: an empty file, or a stale record
                response.close()
                _discard(partial)
                if record is None and response.headers.get("content-range", "").strip() == "bytes */0":
                    return self._empty(partial)
                return self._stream(remote, partial, progress, None)
            span = parse_content_range(response.headers.get("content-range"))
            if response.status_code != 206 or span is None or span[2] is None:
                response.close()
                if response.status_code == 206:  # no usable Content-Range: read it whole
                    _discard(partial)
                    return self._stream(remote, partial, progress, None)
                raise _http_error(remote, response)
            size = span[2]
            validator = normalize_validator(response.headers.get("etag"), response.headers.get("last-modified"))
            if record is None or not record.matches(remote.url, size, validator, part_size):
                if record is not None:
                    logger.info("weights: %s changed since the interrupted download; starting again", remote.url)
                record = None
                _discard(partial)
            with contextlib.closing(response):
                return self._ranges(remote, partial, progress, size, validator, record, (first, span, response))
        if record is not None and not record.matches(remote.url, size, validator, part_size):
            record = None
            _discard(partial)
        return self._ranges(remote, partial, progress, size, validator, record, None)

    # ------------------------------------------------------------------ ranges

    def _ranges(self, remote: RemoteFile, partial: Path, progress: ProgressFn, size: int,
                validator: str | None, record: PartRecord | None,
                probe: tuple[int, tuple[int, int, int | None], httpx.Response] | None) -> Downloaded:
        part_size = self.options.part_size
        assert part_size is not None
        parts = split_parts(size, part_size)
        if record is None:
            record = PartRecord(remote.url, size, validator, part_size)
        resumed = sum(parts[i][1] - parts[i][0] + 1 for i in record.done if i < len(parts))
        if resumed:
            logger.info("weights: resuming %s with %d of %d bytes already on disk", remote.url, resumed, size)
            progress(0)
        fd = os.open(partial, os.O_RDWR | os.O_CREAT, 0o644)
        lock = threading.Lock()
        downloaded = [0]

        def count(n: int) -> None:
            with lock:
                downloaded[0] += n
            progress(n)

        def finish(index: int) -> None:
            with lock:
                record.done.add(index)
                _write_record(_sidecar(partial), record)

        try:
            os.ftruncate(fd, size)
            missing = [i for i in range(len(parts)) if i not in record.done]
            if probe is not None:
                index, span, response = probe
                start, end = parts[index] if index < len(parts) else (0, -1)
                if (span[0], span[1]) == (start, end) and index in missing:
                    self._read_part(fd, remote, index, start, end, validator, count, response)
                    finish(index)
                    missing.remove(index)
                else:
                    response.close()
            hasher = hashlib.sha256()
            hashed = [0]  # next part index to hash, in order, while the rest download

            def hash_ready() -> None:
                while hashed[0] < len(parts) and hashed[0] in record.done:
                    start, end = parts[hashed[0]]
                    _hash_range(fd, hasher, start, end + 1)
                    hashed[0] += 1

            workers = max(1, min(self.options.parallelism, len(missing)))
            with ThreadPoolExecutor(workers, thread_name_prefix="weights") as pool:
                pending: set[Future[int]] = set()
                todo = iter(missing)
                for index in todo:
                    pending.add(pool.submit(self._fetch_part, fd, remote, index, *parts[index], validator, count))
                    if len(pending) >= workers * 2:
                        break
                failure: BaseException | None = None
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        try:
                            finish(future.result())
                        except BaseException as exc:  # stop queuing; the finished parts stay recorded
                            failure = failure or exc
                    if failure is None:
                        for index in todo:
                            pending.add(pool.submit(self._fetch_part, fd, remote, index, *parts[index],
                                                    validator, count))
                            if len(pending) >= workers * 2:
                                break
                        hash_ready()
                if failure is not None:
                    raise failure
            hash_ready()
            if hashed[0] != len(parts):
                raise WeightsIntegrityError(f"{remote.url}: parts missing after the download")
            actual = os.fstat(fd).st_size
            if actual != size:
                raise WeightsIntegrityError(f"{remote.url}: expected {size} bytes, the file has {actual}")
        finally:
            os.close(fd)
        return Downloaded(size=size, sha256=hasher.hexdigest(), validator=validator,
                          bytes_downloaded=downloaded[0], mode="ranges", resumed_bytes=resumed)

    def _fetch_part(self, fd: int, remote: RemoteFile, index: int, start: int, end: int,
                    validator: str | None, count: ProgressFn) -> int:
        self._read_part(fd, remote, index, start, end, validator, count, None)
        return index

    def _read_part(self, fd: int, remote: RemoteFile, index: int, start: int, end: int,
                   validator: str | None, count: ProgressFn, response: httpx.Response | None) -> None:
        """Write bytes ``start..end`` at their offset; a dropped connection resumes mid-part."""
        import httpx

        offset = start
        failures = 0
        while offset <= end:
            try:
                if response is None:
                    response = self._send(remote.fetch_url, {"Range": f"bytes={offset}-{end}"})
                    span = parse_content_range(response.headers.get("content-range"))
                    if response.status_code != 206 or span is None or span[:2] != (offset, end):
                        if response.status_code in (200, 206):
                            raise _RemoteChanged(f"{remote.url}: the server stopped honouring Range")
                        raise _http_error(remote, response)
                    got = normalize_validator(response.headers.get("etag"), response.headers.get("last-modified"))
                    if validator is not None and got is not None and got != validator:
                        raise _RemoteChanged(f"{remote.url}: changed during the download")
                with contextlib.closing(response):
                    for chunk in response.iter_raw():
                        if offset + len(chunk) > end + 1:
                            raise WeightsIntegrityError(f"{remote.url}: the server sent more than part {index}")
                        _pwrite_all(fd, chunk, offset)
                        offset += len(chunk)
                        count(len(chunk))
                response = None
                if offset <= end:
                    raise httpx.RemoteProtocolError("the body ended early")
            except (httpx.TransportError, httpx.StreamError) as exc:
                response = None
                failures += 1
                self._after_drop(exc, failures, f"{remote.url}: bytes {offset}-{end}",
                                 f"{remote.url} part {index} dropped at byte {offset}")

    def _after_drop(self, exc: Exception, failures: int, what: str, where: str) -> None:
        """A dropped connection: give up after the last retry, else log it and back off."""
        if failures > self.options.retries:
            raise WeightsError(f"{what} failed {failures} times; last error: {exc!r}") from exc
        logger.info("weights: %s (%s); retrying", where, exc)
        time.sleep(self.options.retry_backoff * failures)

    # ------------------------------------------------------------------ single stream

    def _stream(self, remote: RemoteFile, partial: Path, progress: ProgressFn,
                response: httpx.Response | None) -> Downloaded:
        """One GET for the whole file; after a drop, ask for the rest (or all of it again)."""
        import httpx

        hasher = hashlib.sha256()
        offset = 0
        failures = 0
        downloaded = 0
        size: int | None = remote.size
        validator = remote.validator
        mode = "stream"
        with open(partial, "wb") as f:
            while True:
                try:
                    if response is None:
                        headers = {"Range": f"bytes={offset}-"} if offset else {}
                        response = self._send(remote.fetch_url, headers)
                        if offset and response.status_code == 206:
                            span = parse_content_range(response.headers.get("content-range"))
                            if span is None or span[0] != offset:
                                response.close()
                                raise _RemoteChanged(f"{remote.url}: the server resumed at the wrong offset")
                        elif response.status_code == 200:
                            if offset:
                                logger.info("weights: %s: the server cannot resume; reading from the start",
                                            remote.url)
                            offset = 0
                            f.seek(0)
                            f.truncate()
                            hasher = hashlib.sha256()
                        else:
                            raise _http_error(remote, response)
                    if offset == 0:
                        length = response.headers.get("content-length")
                        if size is None and length is not None and response.status_code == 200:
                            size = int(length)
                        got = normalize_validator(response.headers.get("etag"),
                                                  response.headers.get("last-modified"))
                        validator = validator or got
                    with contextlib.closing(response):
                        for chunk in response.iter_raw():
                            f.write(chunk)
                            hasher.update(chunk)
                            offset += len(chunk)
                            downloaded += len(chunk)
                            progress(len(chunk))
                    response = None
                    if size is not None and offset < size:
                        raise httpx.RemoteProtocolError(f"the body ended at byte {offset} of {size}")
                    break
                except (httpx.TransportError, httpx.StreamError) as exc:
                    response = None
                    failures += 1
                    self._after_drop(exc, failures, f"{remote.url}: the download",
                                     f"{remote.url} dropped at byte {offset}")
        if size is not None and offset != size:
            raise WeightsIntegrityError(f"{remote.url}: expected {size} bytes, got {offset}")
        return Downloaded(size=offset, sha256=hasher.hexdigest(), validator=validator,
                          bytes_downloaded=downloaded, mode=mode)

    def _empty(self, partial: Path) -> Downloaded:
        partial.write_bytes(b"")
        return Downloaded(size=0, sha256=hashlib.sha256().hexdigest(), validator=None,
                          bytes_downloaded=0, mode="ranges")

    # ------------------------------------------------------------------ http

    def _send(self, url: str, headers: dict[str, str]) -> httpx.Response:
        """A streamed GET; connection errors before the status line are retried here."""
        import httpx

        headers = {"Accept-Encoding": "identity", **headers}
        failures = 0
        while True:
            request = self.client.build_request("GET", url, headers=self.sign(url, dict(headers)))
            try:
                response = self.client.send(request, stream=True)
            except httpx.TransportError as exc:
                failures += 1
                if failures > self.options.retries:
                    raise WeightsError(f"{url}: no answer after {failures} tries; last error: {exc!r}") from exc
                time.sleep(self.options.retry_backoff * failures)
                continue
            if response.status_code in (500, 502, 503, 504) and failures < self.options.retries:
                response.close()
                failures += 1
                time.sleep(self.options.retry_backoff * failures)
                continue
            return response


def _http_error(remote: RemoteFile, response: httpx.Response) -> WeightsError:
    try:
        response.read()
        body = response.text[:300]
    except Exception:  # the body is only a hint
        body = ""
    finally:
        response.close()
    hint = {401: "unauthorized (check the credentials)", 403: "access denied (check the credentials)",
            404: "not found"}.get(response.status_code, "")
    return WeightsError(f"{remote.url}: HTTP {response.status_code} {hint}".rstrip()
                        + (f": {body}" if body else ""))


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def _hash_range(fd: int, hasher: hashlib._Hash, start: int, stop: int) -> None:
    offset = start
    while offset < stop:
        block = os.pread(fd, min(_HASH_BLOCK, stop - offset), offset)
        if not block:
            raise WeightsIntegrityError("the partial file is shorter than its parts")
        hasher.update(block)
        offset += len(block)


def _sidecar(partial: Path) -> Path:
    return partial.with_name(partial.name + ".json")


def _read_record(sidecar: Path) -> PartRecord | None:
    try:
        return PartRecord.from_json(sidecar.read_text())
    except OSError:
        return None


def _write_record(sidecar: Path, record: PartRecord) -> None:
    tmp = sidecar.with_name(sidecar.name + ".tmp")
    tmp.write_text(record.to_json())
    os.replace(tmp, sidecar)


def _discard(partial: Path) -> None:
    for path in (partial, _sidecar(partial)):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

