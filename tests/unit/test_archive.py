"""The package `swell push` uploads: external_package_dirs outside the package are gathered into
its bundled_packages_dir, as `truss push` gathers them (TRUSS_CONTRACT.md §16)."""

from __future__ import annotations

import tarfile
from pathlib import Path

from swell._archive import make_archive


def names(archive: Path) -> set[str]:
    with tarfile.open(archive) as tar:
        return {m.name for m in tar.getmembers() if m.isfile()}


def package(tmp_path: Path, config: str) -> Path:
    root = tmp_path / "truss"
    (root / "model").mkdir(parents=True)
    (root / "model" / "model.py").write_text("import sharedlib\n")
    (root / "config.yaml").write_text(config)
    return root


def test_external_package_dirs_outside_the_package_are_packed_into_packages(tmp_path: Path) -> None:
    # Modelled on Truss's "shared code between trusses" layout: ../shared/sharedlib, ../common.py.
    shared = tmp_path / "shared"
    (shared / "sharedlib").mkdir(parents=True)
    (shared / "sharedlib" / "__init__.py").write_text("X = 1\n")
    (shared / "common.py").write_text("Y = 2\n")
    (shared / "__pycache__").mkdir()
    (shared / "__pycache__" / "common.cpython-311.pyc").write_bytes(b"")
    root = package(tmp_path, "model_name: m\nexternal_package_dirs: [../shared]\n")
    make_archive(root, tmp_path / "p.tar.gz")
    assert names(tmp_path / "p.tar.gz") == {
        "./config.yaml", "./model/model.py", "./packages/sharedlib/__init__.py", "./packages/common.py",
    }


def test_they_go_into_the_configured_bundled_packages_dir_and_absolute_paths_work(tmp_path: Path) -> None:
    (tmp_path / "abs" / "lib").mkdir(parents=True)
    (tmp_path / "abs" / "lib" / "__init__.py").write_text("")
    root = package(tmp_path, f"bundled_packages_dir: vendor\nexternal_package_dirs: [{tmp_path / 'abs'}]\n")
    make_archive(root, tmp_path / "p.tar.gz")
    assert "./vendor/lib/__init__.py" in names(tmp_path / "p.tar.gz")


def test_a_folder_inside_the_package_or_missing_or_a_bad_config_adds_nothing(tmp_path: Path) -> None:
    root = package(tmp_path, "external_package_dirs: [libs, ../missing]\n")
    (root / "libs").mkdir()
    (root / "libs" / "x.py").write_text("")
    make_archive(root, tmp_path / "p.tar.gz")
    assert names(tmp_path / "p.tar.gz") == {"./config.yaml", "./model/model.py", "./libs/x.py"}
    (root / "config.yaml").write_text("external_package_dirs: [\n")
    make_archive(root, tmp_path / "q.tar.gz")  # the server refuses the YAML, saying where
    assert "./config.yaml" in names(tmp_path / "q.tar.gz")
