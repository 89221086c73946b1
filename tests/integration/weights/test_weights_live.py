"""A Truss package with Hugging Face weights, pushed to a real ``swell serve``: accepted at push,
fetched by its replica with the token from a workspace secret, shown in the cold-start breakdown."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "live"))
from swell_live import REPO, start_server, stop_server  # type: ignore[import-not-found]  # noqa: E402

from swell.weights._testing import HubRepo, HubServer  # noqa: E402

pytestmark = pytest.mark.slow
EXAMPLE = REPO / "examples" / "hf-weights"


def test_a_pushed_package_fetches_a_private_repo_with_the_workspace_secret(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("huggingface_hub")
    repo = HubRepo.from_folder(EXAMPLE / "hub" / "swell-examples" / "tiny-mlp", private=True)
    with HubServer({"swell-examples/tiny-mlp": repo}, token="hf_live") as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)  # the server's environment reaches its replicas
        (tmp_path / "data").mkdir()
        process, swell = start_server(tmp_path / "data")
        try:
            assert swell.http.post("/v1/secrets", json={"name": "hf_access_token", "value": "hf_live"}).is_success
            pushed = swell.push(EXAMPLE, publish=True)
            response = swell.http.post(swell.predict_path(pushed), json={"inputs": [[5.1, 3.5, 1.4, 0.2]]})
            assert response.status_code == 200, f"{response.text}\n{swell.tail()}"
            assert response.json()["files"] == ["config.json", "mlp.npy"]
            view = swell.wait_for(pushed, lambda v: any((r.get("cold_start") or {}).get("weights_seconds")
                                                        for r in v.get("replicas", [])), what="a cold start")
            cold = next(r["cold_start"] for r in view["replicas"] if r.get("cold_start"))
            assert 0 < cold["weights_seconds"] <= cold["total_seconds"]
            fetched = [p for p in (tmp_path / "data").rglob("*.log")
                       if "weights: hf://swell-examples/tiny-mlp@main" in p.read_text(errors="replace")]
            assert fetched, "the replica's log has its weights line"
            assert any("/resolve/" in path for path in hub.file_gets())
        finally:
            stop_server(process, swell)
