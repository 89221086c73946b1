"""Test and benchmark support on 127.0.0.1: an HTTP file server with Range, moto's S3 server,
and a server that speaks the Hugging Face Hub's download API.

Not used by Swell itself.  :class:`FileServer` can ignore ``Range``, omit the
length, or drop connections midway, so the fetcher's fallbacks are exercised
against real sockets.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from typing import Any, Self
from urllib.parse import unquote


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerBehaviour:
    ignore_range: bool = False  # always 200 with the whole body
    no_length: bool = False  # 200, no Content-Length, body ends when the connection closes
    drop_after: int | None = None  # close the connection after this many body bytes…
    drops: int = 0  # …this many times in all
    etag: bool = True
    fail_status: int | None = None  # answer every GET with this status
    rate: float | None = None  # bytes/s per connection, as CDNs and object stores cap a stream
    token: str | None = None  # answer 401 unless `Authorization: Bearer <token>`


@dataclass
class ServerStats:
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # method, path, Range
    body_bytes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def gets(self) -> list[tuple[str, str, str | None]]:
        return [r for r in self.requests if r[0] == "GET"]


class _Handler(BaseHTTPRequestHandler):
    """Records each request in its server's stats, then ``serve(head)``; quiet."""

    protocol_version = "HTTP/1.1"
    owner: Any  # the FileServer / HubServer, set on the subclass

    def log_message(self, *args: Any) -> None:
        pass

    def do_HEAD(self) -> None:
        self._record()
        self.serve(head=True)

    def do_GET(self) -> None:
        self._record()
        self.serve(head=False)

    def _record(self) -> None:
        with self.owner.stats.lock:
            self.owner.stats.requests.append((self.command, self.path, self.headers.get("Range")))

    def serve(self, head: bool) -> None:
        raise NotImplementedError

    def requested_range(self, size: int) -> tuple[int, int] | None:
        """``(start, end)`` of the ``Range`` header (the whole body without one); ``None``: 416 sent."""
        wanted = self.headers.get("Range")
        if not wanted:
            return 0, size - 1
        first, _, last = wanted.strip().removeprefix("bytes=").partition("-")
        start, end = int(first), (min(int(last), size - 1) if last else size - 1)
        if start >= size:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        return start, end


class _LocalServer:
    """A threading HTTP server on 127.0.0.1 (an ephemeral port) until closed."""

    stats: ServerStats

    def _start(self, handler: type[_Handler], name: str, port: int = 0) -> int:
        """Listen (again: a server may have several ports) and serve; the port."""
        handler.owner = self
        httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        httpd.daemon_threads = True
        if not hasattr(self, "_httpds"):
            self._httpds: list[ThreadingHTTPServer] = []
            self.port = httpd.server_address[1]
        self._httpds.append(httpd)
        threading.Thread(target=httpd.serve_forever, args=(0.05,), name=name, daemon=True).start()
        return int(httpd.server_address[1])

    def close(self) -> None:
        for httpd in self._httpds:
            httpd.shutdown()
            httpd.server_close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FileServer(_LocalServer):
    """Serves ``files`` (name → path) at ``http://127.0.0.1:<port>/<name>`` until closed."""

    def __init__(self, files: dict[str, Path], behaviour: ServerBehaviour | None = None) -> None:
        self.files = files
        self.behaviour = behaviour or ServerBehaviour()
        self.stats = ServerStats()
        server = self

        class Handler(_Handler):
            def serve(self, head: bool) -> None:
                b = server.behaviour
                path = server.files.get(self.path.lstrip("/").split("?")[0])
                if b.token is not None and self.headers.get("Authorization") != f"Bearer {b.token}":
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if path is None or b.fail_status:
                    self.send_response(404 if path is None else b.fail_status or 500)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                size = path.stat().st_size
                start, end, status = 0, size - 1, 200
                if self.headers.get("Range") and not b.ignore_range and not b.no_length:
                    span = self.requested_range(size)
                    if span is None:
                        return
                    (start, end), status = span, 206
                self.send_response(status)
                if b.etag:
                    stat = path.stat()
                    self.send_header("ETag", f'"{stat.st_size:x}-{stat.st_mtime_ns:x}"')
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
                if b.no_length:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                else:
                    self.send_header("Content-Length", str(end - start + 1))
                if not b.ignore_range and not b.no_length:
                    self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if head:
                    return
                count = end - start + 1
                drop = False
                with server.stats.lock:
                    if b.drop_after is not None and b.drops > 0 and count > b.drop_after:
                        b.drops -= 1
                        count, drop = b.drop_after, True
                with open(path, "rb") as f:
                    self.wfile.flush()
                    if b.rate is None:
                        sent = self.request.sendfile(f, offset=start, count=count) if count else 0
                    else:
                        sent, began = 0, time.monotonic()
                        while sent < count:
                            sent += self.request.sendfile(f, offset=start + sent, count=min(1 << 18, count - sent))
                            ahead = sent / b.rate - (time.monotonic() - began)
                            if ahead > 0:
                                time.sleep(ahead)
                with server.stats.lock:
                    server.stats.body_bytes += sent
                if drop:
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.request.shutdown(socket.SHUT_RDWR)

        self._start(Handler, "file-server")

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"


def write_random_file(path: Path, size: int, seed: int = 0) -> str:
    """``size`` pseudo-random bytes (fast, repeatable); returns their sha256."""
    digest = hashlib.sha256()
    block = hashlib.sha256(str(seed).encode()).digest() * (1 << 15)  # 1 MiB
    block = bytes(b ^ (i & 0xFF) for i, b in enumerate(block[:4096])) * 256
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        left = size
        counter = 0
        while left:
            chunk = counter.to_bytes(8, "little") + block[8:]
            chunk = chunk[: min(left, len(chunk))]
            f.write(chunk)
            digest.update(chunk)
            left -= len(chunk)
            counter += 1
    return digest.hexdigest()


class MotoS3:
    """moto in server mode (``python -m moto.server``) on 127.0.0.1, in a child process."""

    ACCESS_KEY = "testing-key"
    SECRET_KEY = "testing-secret"

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        env = {**os.environ, "AWS_ACCESS_KEY_ID": self.ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": self.SECRET_KEY}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        )
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError("moto.server did not start (is moto[server] installed?)")
            time.sleep(0.05)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """What a fetcher needs to reach it."""
        return {"AWS_ACCESS_KEY_ID": self.ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": self.SECRET_KEY,
                "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": self.endpoint}

    def client(self, service: str = "s3") -> Any:
        import boto3  # type: ignore[import-untyped]

        return boto3.client(service, endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=self.ACCESS_KEY, aws_secret_access_key=self.SECRET_KEY)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> MotoS3:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- a Hugging Face Hub


_LFS_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".npy")


@dataclass
class HubRepo:
    """A model repo: commits (sha → path → bytes), branches and tags (name → sha), private or not.

    Files named like weights (``.safetensors``, ``.bin``, …) are LFS files, as
    on the Hub: the listing gives their sha256 and their resolve URL redirects
    to a CDN path (here on the same server, without the token).
    """

    commits: dict[str, dict[str, bytes]]
    refs: dict[str, str]
    private: bool = False

    @classmethod
    def of(cls, *versions: dict[str, bytes], private: bool = False) -> HubRepo:
        """One commit per version, oldest first; ``main`` is the last."""
        commits = {hashlib.sha1(repr(sorted(v.items())).encode()).hexdigest(): v for v in versions}
        return cls(commits, {"main": list(commits)[-1]}, private)

    @classmethod
    def from_folder(cls, folder: Path, private: bool = False) -> HubRepo:
        """One commit with every file under ``folder`` (paths relative to it)."""
        files = {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
        return cls.of(files, private=private)

    def commit_of(self, revision: str | None) -> str | None:
        revision = revision or "main"
        return revision if revision in self.commits else self.refs.get(revision)


def _git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _is_lfs(path: str) -> bool:
    return path.endswith(_LFS_SUFFIXES)


class HubServer(_LocalServer):
    """The Hub's download API on 127.0.0.1: what ``huggingface_hub`` and Swell's fetcher ask.

    - ``GET /api/models/{repo}[/revision/{rev}][?blobs=true]``: the commit and its
      files (``siblings``: name, size, blob id, LFS sha256); ``/api/models/{repo}/tree/{rev}``:
      the same as a tree, as ``snapshot_download`` asks;
    - ``GET|HEAD /{repo}/resolve/{rev}/{path}``: the file, with ``ETag`` (git blob
      id, or sha256 for LFS), ``X-Repo-Commit``, ``Range``; an LFS file redirects
      (302, ``X-Linked-Etag``, ``X-Linked-Size``) to ``/cdn/{sha256}`` on another port
      (another origin, as the Hub's CDN is);
    - a private repo answers ``401`` (``X-Error-Code: RepoNotFound``) without
      ``Authorization: Bearer <token>``, as the Hub does; a missing repo, revision
      or file answers with the Hub's ``X-Error-Code``.
    """

    def __init__(self, repos: dict[str, HubRepo], token: str | None = None, port: int = 0) -> None:
        self.repos = repos
        self.token = token
        self.corrupt_cdn = False  # the CDN flips the first byte: the listing's sha256 must catch it
        self.rate: float | None = None  # bytes/s per connection for file bytes, as a CDN caps a stream
        self._digests: dict[int, tuple[bytes, str]] = {}
        self.stats = ServerStats()
        server = self

        class Handler(_Handler):
            def serve(self, head: bool) -> None:
                path = unquote(self.path.split("?", 1)[0])
                if path.startswith("/api/models/"):
                    return self._api(path[len("/api/models/"):])
                if path.startswith("/cdn/"):
                    return self._cdn(path[len("/cdn/"):], head)
                if "/resolve/" in path:
                    return self._resolve(path, head)
                return self._error(404, "NotFound", "no such route")

            def _error(self, status: int, code: str, message: str) -> None:
                body = json.dumps({"error": message}).encode()
                self.send_response(status)
                self.send_header("X-Error-Code", code)
                self.send_header("X-Error-Message", message)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _repo(self, repo_id: str) -> HubRepo | None:
                """The repo if this request may see it; else the error is sent and ``None``."""
                repo = server.repos.get(repo_id)
                authorized = server.token is not None and self.headers.get("Authorization") == f"Bearer {server.token}"
                if repo is None or (repo.private and not authorized):
                    # The Hub does not say whether a repo it hides exists.
                    self._error(404 if authorized else 401, "RepoNotFound", "Repository not found")
                    return None
                return repo

            def _api(self, rest: str) -> None:
                if "/tree/" in rest:  # huggingface_hub's snapshot_download lists the files this way
                    return self._tree(*rest.split("/tree/", 1))
                repo_id, _, revision = rest.partition("/revision/")
                repo = self._repo(repo_id)
                if repo is None:
                    return
                commit = repo.commit_of(revision or None)
                if commit is None:
                    return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
                siblings = []
                for name, data in sorted(repo.commits[commit].items()):
                    sibling: dict[str, Any] = {"rfilename": name, "size": len(data), "blobId": _git_blob_id(data)}
                    if _is_lfs(name):
                        sibling["lfs"] = {"sha256": server.sha256(data), "size": len(data),
                                          "pointerSize": 134}
                    siblings.append(sibling)
                self._json({"_id": repo_id, "id": repo_id, "modelId": repo_id, "sha": commit,
                            "private": repo.private, "siblings": siblings})

            def _tree(self, repo_id: str, revision: str) -> None:
                repo = self._repo(repo_id)
                if repo is None:
                    return
                commit = repo.commit_of(revision.split("/", 1)[0])
                if commit is None:
                    return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
                entries: list[dict[str, Any]] = []
                folders = sorted({str(parent) for name in repo.commits[commit]
                                  for parent in PurePosixPath(name).parents if str(parent) != "."})
                entries += [{"type": "directory", "oid": "0" * 40, "path": folder} for folder in folders]
                for name, data in sorted(repo.commits[commit].items()):
                    entry: dict[str, Any] = {"type": "file", "oid": _git_blob_id(data), "size": len(data),
                                             "path": name}
                    if _is_lfs(name):
                        entry["lfs"] = {"oid": server.sha256(data), "size": len(data),
                                        "pointerSize": 134}
                    entries.append(entry)
                self._json(entries)

            def _json(self, value: Any) -> None:
                body = json.dumps(value).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _resolve(self, path: str, head: bool) -> None:
                repo_id, _, rest = path.lstrip("/").partition("/resolve/")
                revision, _, name = rest.partition("/")
                repo = self._repo(repo_id)
                if repo is None:
                    return
                commit = repo.commit_of(revision)
                if commit is None:
                    return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
                data = repo.commits[commit].get(name)
                if data is None:
                    return self._error(404, "EntryNotFound", f"{name} does not exist on {revision}")
                if _is_lfs(name):
                    digest = server.sha256(data)
                    self.send_response(302)
                    self.send_header("Location", f"http://127.0.0.1:{server.cdn_port}/cdn/{digest}")
                    self.send_header("ETag", f'"{digest}"')
                    self.send_header("X-Linked-Etag", f'"{digest}"')
                    self.send_header("X-Linked-Size", str(len(data)))
                    self.send_header("X-Repo-Commit", commit)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self._bytes(data, _git_blob_id(data), head, {"X-Repo-Commit": commit})

            def _cdn(self, digest: str, head: bool) -> None:
                for repo in server.repos.values():
                    for files in repo.commits.values():
                        for data in files.values():
                            if server.sha256(data) == digest:
                                if server.corrupt_cdn and data:
                                    data = bytes([data[0] ^ 0xFF]) + data[1:]
                                return self._bytes(data, f"cdn-{digest[:16]}", head, {})
                self._error(404, "NotFound", "no such object")

            def _bytes(self, data: bytes, etag: str, head: bool, extra: dict[str, str]) -> None:
                span = self.requested_range(len(data))
                if span is None:
                    return
                start, end = span
                status = 206 if self.headers.get("Range") else 200
                self.send_response(status)
                self.send_header("ETag", f'"{etag}"')
                self.send_header("Accept-Ranges", "bytes")
                for key, value in extra.items():
                    self.send_header(key, value)
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
                self.send_header("Content-Length", str(end - start + 1))
                self.end_headers()
                if head:
                    return
                view = memoryview(data)[start:end + 1]
                if server.rate is None:
                    self.wfile.write(view)
                else:
                    sent, began = 0, time.monotonic()
                    while sent < len(view):
                        self.wfile.write(view[sent:sent + (1 << 18)])
                        sent = min(sent + (1 << 18), len(view))
                        ahead = sent / server.rate - (time.monotonic() - began)
                        if ahead > 0:
                            time.sleep(ahead)
                with server.stats.lock:
                    server.stats.body_bytes += end - start + 1

        self._start(Handler, "hub-server", port)
        # The CDN is another origin, as on the Hub: clients keep the token from it, and
        # huggingface_hub reads a file's metadata from the redirect without following it.
        self.cdn_port = self._start(Handler, "hub-cdn")

    def sha256(self, data: bytes) -> str:
        """Each file's digest once (a range request must not hash the whole file again)."""
        with self.stats.lock:
            known = self._digests.get(id(data))
            if known is not None and known[0] is data:
                return known[1]
        digest = hashlib.sha256(data).hexdigest()
        with self.stats.lock:
            self._digests[id(data)] = (data, digest)
        return digest

    @property
    def endpoint(self) -> str:
        """What ``HF_ENDPOINT`` is set to."""
        return f"http://127.0.0.1:{self.port}"

    def file_gets(self) -> list[str]:
        """The paths of the GETs that fetched file bytes (resolve and CDN), in order."""
        return [r[1] for r in self.stats.gets() if "/resolve/" in r[1] or r[1].startswith("/cdn/")]



def repos_from_folder(root: Path) -> dict[str, HubRepo]:
    """One public repo per ``root/<owner>/<name>`` folder, for a :class:`HubServer`."""
    return {f"{owner.name}/{name.name}": HubRepo.from_folder(name)
            for owner in sorted(root.iterdir()) if owner.is_dir()
            for name in sorted(owner.iterdir()) if name.is_dir()}


def _main(argv: list[str]) -> None:
    """``python -m swell.weights._testing hub FOLDER [--port N]``: serve FOLDER's repos as a Hub."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m swell.weights._testing")
    parser.add_argument("what", choices=["hub"])
    parser.add_argument("folder", type=Path, help="holds <owner>/<name>/ folders, one repo each")
    parser.add_argument("--port", type=int, default=8766)
    args = parser.parse_args(argv)
    repos = repos_from_folder(args.folder)
    server = HubServer(repos, port=args.port)
    print(f"HF_ENDPOINT={server.endpoint}  repos: {', '.join(repos)}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.close()


if __name__ == "__main__":
    _main(sys.argv[1:])
