"""ensure_environment against the real package index (one test: it needs the registry)."""

from __future__ import annotations

from pathlib import Path

import pytest

from swell.modelserver import RequirementsInstallError, ensure_environment
from swell.modelserver._environment import MARKER, environment_key


@pytest.mark.slow
def test_uninstallable_requirement_gives_a_clear_error_and_no_marker(tmp_path: Path) -> None:
    requirement = "swell-no-such-package-xyz==1.0"
    with pytest.raises(RequirementsInstallError) as info:
        ensure_environment([requirement], tmp_path)
    message = str(info.value)
    assert message.startswith(f"could not install requirement(s) {requirement}")
    assert "No matching distribution found for swell-no-such-package-xyz==1.0" in message
    assert not (tmp_path / environment_key([requirement]) / MARKER).exists()


def _tiny_wheel(folder: Path, name: str, version: str) -> None:
    """A pure-Python wheel made by hand (no build backend, no index)."""
    import zipfile

    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"VERSION = {version!r}\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{dist}/RECORD"] = "".join(f"{path},,\n" for path in [*files, f"{dist}/RECORD"])
    with zipfile.ZipFile(folder / f"{name}-{version}-py3-none-any.whl", "w") as wheel:
        for path, text in files.items():
            wheel.writestr(path, text)


def test_a_requirement_line_with_pip_options_installs_as_truss_installs_it(tmp_path: Path) -> None:
    # As truss-examples write them: `- --extra-index-url https://download.pytorch.org/whl/cu128`
    # in requirements:, which Truss's image installs with `pip install -r`. Offline here: a
    # local index made of one wheel, named by an option line of its own.
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _tiny_wheel(wheels, "swell_tiny_wheel", "0.1")
    python = ensure_environment([f"--no-index --find-links {wheels}", "swell_tiny_wheel==0.1"], tmp_path / "envs")
    import subprocess

    out = subprocess.run([str(python), "-c", "import swell_tiny_wheel; print(swell_tiny_wheel.VERSION)"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0.1"
