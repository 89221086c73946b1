"""PostgreSQL's driver is the ``postgres`` extra: without it, ``swell serve --database-url
postgresql+asyncpg://…`` stops at start saying what to install, not with a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# The server as a user without asyncpg has it: the import fails as for a missing package.
WITHOUT_ASYNCPG = "import sys; sys.modules['asyncpg'] = None; from swell.cli import main; main()"


def test_postgres_url_without_asyncpg_says_to_install_the_extra(tmp_path: Path) -> None:
    refused = subprocess.run(
        [sys.executable, "-c", WITHOUT_ASYNCPG, "serve", "--port", "0", "--data-dir", str(tmp_path / "data"),
         "--database-url", "postgresql+asyncpg://swell:secret@127.0.0.1:9/swell"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0
    assert "pip install 'swell[postgres]'" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
    assert "secret" not in refused.stderr


def test_asyncpg_is_an_extra_not_a_dependency() -> None:
    import tomllib

    project = tomllib.loads((Path(__file__).resolve().parents[3] / "pyproject.toml").read_text())["project"]
    assert not any(d.startswith("asyncpg") for d in project["dependencies"])
    assert any(d.startswith("asyncpg") for d in project["optional-dependencies"]["postgres"])
    assert any(d.startswith("asyncpg") for d in project["optional-dependencies"]["test"])  # CI's PostgreSQL tests
