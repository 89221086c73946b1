"""Per-package Python environments for a Truss ``requirements:`` list.

A venv per distinct requirement set, built once and reused: keyed by the sha256 of
the sorted requirements, created with ``--system-site-packages`` so swell and its
dependencies stay importable, and marked complete only after pip succeeded.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

from swell.files import atomic_write

MARKER = ".swell-complete"
PIP_ERROR_LINES = 15


class RequirementsInstallError(RuntimeError):
    """pip could not install a package's requirements; the message says which and why."""

    def __init__(self, requirements: list[str], pip_output: str) -> None:
        self.requirements = list(requirements)
        self.pip_output = pip_output
        lines = [line for line in pip_output.strip().splitlines() if line.strip()]
        errors = [line for line in lines if line.lstrip().startswith("ERROR")]
        tail = (errors or lines)[-PIP_ERROR_LINES:]
        culprits = [r for r in self.requirements if any(_name(r) in line.lower() for line in errors)]
        named = culprits or self.requirements
        super().__init__(
            f"could not install requirement(s) {', '.join(named)}"
            + (f" (of {', '.join(self.requirements)})" if culprits and culprits != self.requirements else "")
            + ":\n" + "\n".join(tail)
        )


def _name(requirement: str) -> str:
    name = requirement.strip()
    for sep in "<>=!~;[ @":
        name = name.split(sep, 1)[0]
    return name.lower()


def environment_key(requirements: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(r.strip() for r in requirements)).encode()).hexdigest()


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def _site_packages(python: str | Path) -> list[str]:
    out = subprocess.run([str(python), "-c", "import json, site; print(json.dumps(site.getsitepackages()))"],
                         check=True, capture_output=True, text=True).stdout
    return [str(p) for p in json.loads(out)]


def _inherit_site_packages(parent: str, child: Path) -> None:
    """Make the parent's site-packages visible after the child's own.

    ``--system-site-packages`` only reaches the *base* interpreter's; when swell
    itself lives in a venv, that venv must be added too. ``site.addsitedir`` also
    runs its .pth files, so an editable install of swell is followed.
    """
    parent_dirs = _site_packages(parent)
    child_dir = Path(_site_packages(child)[0])
    # One statement per line, no comprehension: site exec()s each "import" line and
    # nested scopes there cannot see the names it imports.
    lines = "".join(f"import site, sys; {d!r} in sys.path or site.addsitedir({d!r})\n" for d in parent_dirs)
    (child_dir / "_swell_parent_site.pth").write_text(lines)


def ensure_environment(requirements: list[str], cache_dir: Path, *, python: str = sys.executable) -> Path:
    """Return a Python executable that has ``requirements`` installed.

    No requirements: ``python`` itself. Otherwise a venv under
    ``cache_dir/<sha256 of sorted requirements>``, reused when complete; concurrent
    callers for the same set wait on a file lock instead of building twice.
    Raises ``RequirementsInstallError`` when pip fails.
    """
    requirements = [r.strip() for r in requirements if r and r.strip()]
    if not requirements:
        return Path(python)
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = environment_key(requirements)
    venv = cache_dir / key
    marker = venv / MARKER
    if marker.exists():
        return _venv_python(venv)
    with open(cache_dir / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists():  # built by another caller while we waited
            return _venv_python(venv)
        if venv.exists():
            shutil.rmtree(venv)  # a half-built leftover
        subprocess.run([python, "-m", "venv", "--system-site-packages", str(venv)],
                       check=True, capture_output=True)
        _inherit_site_packages(python, _venv_python(venv))
        # As a requirements file, as Truss installs them (`pip install -r`): a line may carry
        # pip options (`--extra-index-url URL`, `--pre`), which are not one argument each.
        listed = venv / "swell-requirements.txt"
        listed.write_text("\n".join(requirements) + "\n")
        result = subprocess.run(
            [str(_venv_python(venv)), "-m", "pip", "install", "--disable-pip-version-check",
             "--no-input", "-r", str(listed)],
            capture_output=True, text=True,
        )
        if result.returncode != 0:
            raise RequirementsInstallError(requirements, result.stdout + "\n" + result.stderr)
        atomic_write(marker, ("\n".join(sorted(requirements)) + "\n").encode(), mode=0o644)
    return _venv_python(venv)
