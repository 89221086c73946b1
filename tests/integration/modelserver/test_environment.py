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
