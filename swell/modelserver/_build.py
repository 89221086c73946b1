"""Truss ``build_commands``, run on the host at push instead of as an image's ``RUN`` lines.

Truss runs each command with ``/bin/sh -c`` while building the image, in ``/app``
after the package's model, data and packages were copied in, so a command may
install into the Python environment (``pip install …``) or change and add package
files (``sed -i … /packages/x.py``, ``curl -o data/w.bin …``).  Swell has no image:
a build is a folder in the environment cache keyed by everything a command can
see (the requirements, the commands, ``environment_variables`` and the package's
files but ``config.yaml``), holding

- ``venv/``: a virtual environment layered on the requirements' one (its
  site-packages come first, the requirements' and Swell's follow), where
  ``pip install`` lands;
- ``app/``: the copy of the package the commands ran in (their working
  directory; ``/app`` and ``/packages`` in a command name its folders);
- ``overlay.json``: what the commands added, changed or removed in ``app/``,
  which every deployment built from it gets in its own package folder (files
  are hard links to the build's), so replicas read what the commands wrote.

The same package pushed again reuses the build; a changed command, requirement,
variable or file builds anew (Docker reruns an image's ``RUN`` lines after a
changed ``COPY`` the same way).  A command that fails or outlives the time limit
fails the build with its exit status and the tail of its output; nothing of it
is kept.  Commands that only make sense as root inside an image (``apt-get``,
``sudo``, …) are refused before anything runs (:func:`check_build_commands`).
"""

from __future__ import annotations

import collections
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from swell.files import atomic_write
from swell.modelserver._environment import MARKER, _inherit_site_packages, _venv_python

__all__ = [
    "BuildCommandError",
    "BuildLayout",
    "build_key",
    "build_site_packages",
    "check_build_commands",
    "ensure_build",
    "layered_python",
    "translate_paths",
]

OUTPUT_TAIL_LINES = 20
OUTPUT_TAIL_CHARS = 4000

#: Programs that install system packages or need root: inside Truss's image the build runs
#: as root, on the host Swell runs commands as the server's user.
_ROOT_PROGRAMS = {
    "apt-get": "installs system packages",
    "apt": "installs system packages",
    "aptitude": "installs system packages",
    "dpkg": "installs system packages",
    "yum": "installs system packages",
    "dnf": "installs system packages",
    "microdnf": "installs system packages",
    "apk": "installs system packages",
    "zypper": "installs system packages",
    "pacman": "installs system packages",
    "sudo": "runs as root",
    "su": "runs as root",
    "useradd": "adds a system user",
    "adduser": "adds a system user",
    "groupadd": "adds a system group",
}
#: Folders of Truss's image that are the machine's own on the host (and seldom writable).
_IMAGE_FOLDERS = ("/usr/local", "/opt", "/root", "/workspace", "/home/app", "/control")
_WRAPPERS = {"env", "exec", "time", "nohup", "command", "builtin", "nice"}
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_SEPARATORS = re.compile(r"&&|\|\||[;|&\n()`]|\$\(")
_PATH_START = r"(?<![\w.~$/-])"
_PATH_END = r"(?=/|$|[\s'\";&|)<>:,`])"


@dataclass(frozen=True)
class BuildLayout:
    """Where Truss's image paths are in the package: ``/app/data`` is ``data_dir`` and so on."""

    data_dir: str = "data"
    model_module_dir: str = "model"
    bundled_packages_dir: str = "packages"


class BuildCommandError(RuntimeError):
    """A build command failed or ran out of time; the message says which, how, and its output's tail."""

    def __init__(
        self, index: int, command: str, exit_code: int | None, output: str, *,
        timeout: float | None = None, hint: str | None = None, log_path: Path | None = None,
    ) -> None:
        self.index = index
        self.command = command
        self.exit_code = exit_code
        self.timed_out = timeout is not None
        self.output_tail = tail(output)
        how = (f"did not finish within {timeout:g} s (the server's --build-timeout)" if timeout is not None
               else f"exited with status {exit_code}")
        text = f"build_commands[{index}] `{command}` {how}"
        if hint:
            text += f"; {hint}"
        text += ":\n" + (self.output_tail or "(no output)")
        if log_path is not None:
            text += f"\n(whole output on the server: {log_path})"
        super().__init__(text)

    def as_dict(self) -> dict[str, object]:
        return {"index": self.index, "command": self.command, "exit_code": self.exit_code,
                "timed_out": self.timed_out, "output": self.output_tail}


def tail(output: str) -> str:
    lines = [line for line in output.rstrip().splitlines() if line.strip()][-OUTPUT_TAIL_LINES:]
    return "\n".join(lines)[-OUTPUT_TAIL_CHARS:]


def _programs(command: str) -> list[str]:
    """The program each simple command of ``command`` runs (best effort: no full shell parse)."""
    programs = []
    for part in _SEPARATORS.split(command):
        try:
            words = shlex.split(part, comments=True)
        except ValueError:
            words = part.split()
        while words and (_ASSIGNMENT.match(words[0]) or words[0] in _WRAPPERS or words[0].startswith("-")):
            words.pop(0)
        if words:
            programs.append(os.path.basename(words[0]))
    return programs


def check_build_commands(commands: list[str]) -> tuple[list[tuple[int, str]], list[str]]:
    """Refusals (index, why) and warnings for commands that belong inside a container image."""
    refused: list[tuple[int, str]] = []
    warnings: list[str] = []
    for index, command in enumerate(commands):
        root = next((p for p in _programs(command) if p in _ROOT_PROGRAMS), None)
        if root is not None:
            refused.append((index, (
                f"`{command}` needs root inside a container image ({root} {_ROOT_PROGRAMS[root]}); Swell runs "
                "build commands on the host as the server's user, without an image: install what it needs on "
                "the machine that runs the replicas, then drop the command"
            )))
            continue
        folder = _image_folder(command)
        if folder is not None:
            warnings.append(
                f"build_commands[{index}] `{command}` names {folder}, a folder of Truss's container image; "
                "Swell runs build commands on the host, where it is the machine's own (usually not writable): "
                "write into the package (a relative path, /app or /packages) or $VIRTUAL_ENV instead"
            )
    return refused, warnings


def _image_folder(command: str) -> str | None:
    for folder in _IMAGE_FOLDERS:
        if re.search(_PATH_START + re.escape(folder) + _PATH_END, command):
            return folder
    return None


def translate_paths(command: str, app: Path, layout: BuildLayout = BuildLayout()) -> str:
    """``command`` with Truss's image paths (``/app``, ``/app/data``, ``/app/model``, ``/packages``)
    pointing into ``app``, the package copy the build runs in."""
    targets = {
        "/app/data": app / layout.data_dir,
        "/app/model": app / layout.model_module_dir,
        "/packages": app / layout.bundled_packages_dir,
        "/app": app,
    }
    pattern = re.compile(_PATH_START + "(/app/data|/app/model|/packages|/app)" + _PATH_END)
    return pattern.sub(lambda m: str(targets[m.group(1)]), command)


def package_digest(package_dir: Path) -> str:
    """sha256 over the package's paths, kinds and contents, ``config.yaml`` aside."""
    digest = hashlib.sha256()
    root = Path(package_dir)
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if rel == "config.yaml" or "__pycache__" in path.parts:
            continue
        if path.is_symlink():
            digest.update(f"L {rel} {os.readlink(path)}\n".encode())
        elif path.is_dir():
            digest.update(f"D {rel}\n".encode())
        else:
            digest.update(f"F {rel} {path.stat().st_mode & 0o111:o}\n".encode())
            with path.open("rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
    return digest.hexdigest()


def build_key(
    requirements: list[str], commands: list[str], env: Mapping[str, str], package_dir: Path,
    layout: BuildLayout = BuildLayout(),
) -> str:
    """The build's name: every input a command sees, so equal keys mean equal results."""
    document = {
        "python": sys.version,
        "requirements": sorted(r.strip() for r in requirements),
        "commands": list(commands),
        "environment_variables": dict(sorted(env.items())),
        "layout": [layout.data_dir, layout.model_module_dir, layout.bundled_packages_dir],
        "package": package_digest(package_dir),
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


def _command_env(venv: Path, app: Path, env: Mapping[str, str]) -> dict[str, str]:
    # The server's own variables (its API key among them) are not the package's to see.
    out = {k: v for k, v in os.environ.items() if not k.startswith("SWELL_") and k not in ("PYTHONHOME", "VIRTUAL_ENV")}
    out.update(env)
    out.update({
        "VIRTUAL_ENV": str(venv),
        "PATH": f"{venv / 'bin'}{os.pathsep}{out.get('PATH', os.defpath)}",
        "APP_HOME": str(app),  # as Truss's image sets it
        "PIP_NO_INPUT": "1",
        "PYTHONUNBUFFERED": "1",
    })
    return out


def _shell() -> list[str]:
    bash = shutil.which("bash")
    return [bash, "-c"] if bash else ["/bin/sh", "-c"]


def _run(
    index: int, command: str, script: str, *, cwd: Path, env: dict[str, str], timeout: float,
    log: Callable[[str], None], log_file: Path,
) -> None:
    """One command (``script``: as run, its paths translated) in its own process group, its output
    logged line by line; raises on failure."""
    started = time.monotonic()
    lines: collections.deque[str] = collections.deque(maxlen=200)
    with log_file.open("a") as record:
        record.write(f"$ {command}\n")
        process = subprocess.Popen(
            [*_shell(), script], cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True,
        )

        def pump() -> None:
            assert process.stdout is not None
            for raw in process.stdout:
                line = raw.decode(errors="replace").rstrip("\n")
                lines.append(line)
                record.write(line + "\n")
                log(f"build_commands[{index}]: {line}")

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            # The whole group, finished or not: what a command left running in the background
            # must not outlive it (as nothing outlives an image's RUN line).
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()
            reader.join(5)
            if process.stdout is not None:
                process.stdout.close()
        record.write(f"# exit status {code}, {time.monotonic() - started:.1f} s\n")
    if code != 0:
        raise BuildCommandError(
            index, command, code, "\n".join(lines), timeout=timeout if code is None else None,
            hint=_hint(command), log_path=log_file,
        )
    log(f"build_commands[{index}] finished in {time.monotonic() - started:.1f} s")


def _hint(command: str) -> str | None:
    folder = _image_folder(command)
    if folder is None:
        return None
    return (f"it names {folder}, a folder of Truss's container image; Swell runs build commands on the host, "
            "where it is the machine's own")


def _snapshot(root: Path) -> dict[str, tuple[str, int, int, int]]:
    seen: dict[str, tuple[str, int, int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            kind = "L" if os.path.islink(path) else "D" if os.path.isdir(path) else "F"
            seen[os.path.relpath(path, root)] = (kind, st.st_ino, st.st_size, st.st_mtime_ns)
    return seen


def _changes(before: dict[str, tuple[str, int, int, int]], after: dict[str, tuple[str, int, int, int]]) -> dict[str, list[str]]:
    """What the commands did to the package copy (config.yaml never travels: the push parsed it)."""
    def keep(rel: str) -> bool:
        return rel != "config.yaml" and "__pycache__" not in rel.split(os.sep)

    dirs = sorted(r for r, s in after.items() if s[0] == "D" and before.get(r, ("",))[0] != "D" and keep(r))
    files = sorted(r for r, s in after.items() if s[0] != "D" and before.get(r) != s and keep(r))
    deleted = sorted(r for r in before if r not in after and keep(r))
    return {"dirs": dirs, "files": files, "deleted": deleted}


def apply_overlay(build: Path, package_dir: Path) -> int:
    """Give ``package_dir`` what the build's commands wrote; returns how many paths changed."""
    changes = json.loads((build / "overlay.json").read_text())
    app = build / "app"
    for rel in changes["deleted"]:
        target = package_dir / rel
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target, ignore_errors=True)
        elif target.exists() or target.is_symlink():
            target.unlink()
    for rel in changes["dirs"]:
        (package_dir / rel).mkdir(parents=True, exist_ok=True)
    for rel in changes["files"]:
        source, target = app / rel, package_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink() or target.exists():
            target.unlink()
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
            continue
        try:  # large downloads are not copied per deployment
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)
    return len(changes["deleted"]) + len(changes["dirs"]) + len(changes["files"])


def _make_venv(venv: Path, parent_python: str) -> None:
    """A venv over ``parent_python``'s packages; ``pip`` in it installs into it."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)],
                   check=True, capture_output=True)
    _inherit_site_packages(parent_python, _venv_python(venv))
    python = _venv_python(venv)
    for name in ("pip", "pip3"):  # pip itself comes from the parent; it installs where python's prefix is
        shim = venv / "bin" / name
        shim.write_text(f'#!/bin/sh\nexec "{python}" -m pip "$@"\n')
        shim.chmod(0o755)


def build_site_packages(python: str | Path) -> Path | None:
    """The site-packages of the build whose venv ``python`` is (what its commands installed),
    or None for any other Python.  The Ray backend ships it to nodes."""
    venv = Path(python).parents[1]  # <cache>/builds/<key>/venv/bin/python
    if venv.name != "venv" or venv.parent.parent.name != "builds" or not (venv.parent / MARKER).exists():
        return None
    found = sorted((venv / "lib").glob("python*/site-packages"))
    return found[0] if found else None


def layered_python(site: Path, base_python: str, cache_dir: Path) -> Path:
    """On a Ray node: a venv that sees ``site`` (a build's site-packages, shipped and unpacked)
    before ``base_python``'s packages, as the build's own venv does on the server."""
    key = hashlib.sha256(f"{site}\n{base_python}".encode()).hexdigest()
    builds = Path(cache_dir) / "builds"
    builds.mkdir(parents=True, exist_ok=True)
    venv = builds / key / "venv"

    def make() -> None:
        shutil.rmtree(venv.parent, ignore_errors=True)
        _make_venv(venv, base_python)
        own = next((venv / "lib").glob("python*/site-packages"))
        # A plain path line: sorted before the parents' .pth, so the build's packages win.
        (own / "_swell_build_site.pth").write_text(f"{site}\n")
        atomic_write(venv.parent / MARKER, f"{site}\n".encode(), mode=0o644)

    _once(builds, key, make)
    return _venv_python(venv)


def _once(builds: Path, key: str, make: Callable[[], None]) -> bool:
    """Run ``make`` unless ``builds/key`` is complete, one caller per key at a time
    (another may finish it while this one waits); returns whether it ran."""
    if (builds / key / MARKER).exists():
        return False
    with open(builds / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (builds / key / MARKER).exists():
            return False
        make()
        return True


def ensure_build(
    commands: list[str],
    package_dir: Path,
    cache_dir: Path,
    *,
    requirements: list[str],
    base_python: str,
    env: Mapping[str, str] | None = None,
    layout: BuildLayout = BuildLayout(),
    timeout: float,
    log: Callable[[str], None] = lambda line: None,
) -> Path:
    """Run ``commands`` for the package at ``package_dir`` (or reuse their build); return the python.

    ``base_python`` has the requirements installed (:func:`ensure_environment`);
    ``timeout``: seconds each command may run.
    On return ``package_dir`` holds what the commands wrote.  Raises
    :class:`BuildCommandError` (nothing of the build is kept).
    """
    env = dict(env or {})
    cache_dir = Path(cache_dir) / "builds"
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = build_key(requirements, commands, env, package_dir, layout)
    build = cache_dir / key
    ran = _once(cache_dir, key, lambda: _build(commands, package_dir, build, base_python=base_python, env=env,
                                                layout=layout, timeout=timeout, log=log))
    if not ran:
        log(f"build_commands: reusing build {key[:12]}")
    apply_overlay(build, package_dir)
    return _venv_python(build / "venv")


def _build(
    commands: list[str], package_dir: Path, build: Path, *, base_python: str, env: dict[str, str],
    layout: BuildLayout, timeout: float, log: Callable[[str], None],
) -> None:
    if build.exists():
        shutil.rmtree(build)  # a half-built leftover
    build.mkdir()
    try:
        venv, app = build / "venv", build / "app"
        _make_venv(venv, base_python)
        shutil.copytree(package_dir, app, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
        before = _snapshot(app)
        command_env = _command_env(venv, app, env)
        log_file = build.with_suffix(".log")
        log_file.write_text("")
        for index, command in enumerate(commands):
            log(f"build_commands[{index}]: running `{command}`")
            _run(index, command, translate_paths(command, app, layout), cwd=app, env=command_env, timeout=timeout,
                 log=log, log_file=log_file)
        changes = _changes(before, _snapshot(app))
        atomic_write(build / "overlay.json", json.dumps(changes, indent=1).encode(), mode=0o644)
        atomic_write(build / MARKER, ("\n".join(commands) + "\n").encode(), mode=0o644)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
