"""End to end: the example package's replica fetches its weights, loads and predicts; the next one uses the cache."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import sys
from collections.abc import Iterator

import pytest
import yaml

from swell.config import load_model_config
from swell.modelserver._testing import ReplicaProcess
from swell.serving import ReplicaSpec, ReplicaState
from swell.serving.backends import ProcessBackend
from swell.weights._testing import FileServer

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "weights"
WEIGHTS = EXAMPLE / "files" / "mlp.npy"


def package_copy(tmp_path: Path, server: FileServer, name: str = "pkg", **changes: object) -> Path:
    """The example with its source pointed at ``server`` (and ``changes`` to the weights entry)."""
    copy = tmp_path / name
    shutil.copytree(EXAMPLE, copy, ignore=shutil.ignore_patterns("files"))
    config = yaml.safe_load((copy / "config.yaml").read_text())
    config["weights"][0]["source"] = server.url("mlp.npy")
    config["weights"][0].update(changes)
    (copy / "config.yaml").write_text(yaml.safe_dump(config))
    return copy


@pytest.fixture
def server() -> Iterator[FileServer]:
    with FileServer({"mlp.npy": WEIGHTS}) as s:
        yield s


def predict(replica: ReplicaProcess) -> dict[str, object]:
    with replica.client() as client:
        r = client.post("/v1/models/weights:predict",
                        json={"inputs": [[5.1, 3.5, 1.4, 0.2]]}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def test_replicas_fetch_once_and_read_from_the_cache(server: FileServer, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    env = {"SWELL_WEIGHTS_CACHE": str(cache), "SWELL_WEIGHTS_PART_SIZE": "2Ki", "SWELL_WEIGHTS_PARALLELISM": "3"}
    first_pkg = package_copy(tmp_path, server, "first")
    with ReplicaProcess(first_pkg, env=env) as first:
        first.wait_ready(timeout=60)
        done = first.wait_event("weights_ready")
        assert done["bytes_fetched"] == WEIGHTS.stat().st_size and done["bytes_cached"] == 0
        names = [e["event"] for e in first.events]
        assert names.index("loading") < names.index("weights_ready") < names.index("ready")
        body = predict(first)
        assert body["weights_sha256"] == "3b478469d24ba42fc07ff41b1c2ef554790d7aae297af0228b8a17b4012e1b56"
        assert len(body["scores"][0]) == 3  # type: ignore[index]
        seen = first_pkg / "model_cache" / "mlp" / "mlp.npy"  # where the model asked for it
        assert seen.is_symlink() and seen.resolve().parent == (cache / "blobs" / "sha256").resolve()
        assert len(server.stats.gets()) == 5  # 8,332 bytes in parts of 2 KiB
        assert "weights: http://127.0.0.1" in first.stderr()  # one log line per source
        pins = list((cache / "pins").glob(f"{first.proc.pid}-*.pin"))
        assert len(pins) == 1  # the running replica pins its blob

        # A second replica (same machine, another deployment) while the first runs.
        with ReplicaProcess(package_copy(tmp_path, server, "second"), env=env) as second:
            second.wait_ready(timeout=60)
            again = second.wait_event("weights_ready")
            assert again["bytes_fetched"] == 0 and again["bytes_cached"] == WEIGHTS.stat().st_size
            assert predict(second)["scores"] == body["scores"]
            assert len(server.stats.gets()) == 5  # no GET at all: the sha256 names the blob
            assert second.terminate() == 0
        assert first.terminate() == 0


def test_a_sha256_mismatch_fails_the_replica_clearly(server: FileServer, tmp_path: Path) -> None:
    pkg = package_copy(tmp_path, server, sha256="ab" * 32)
    with ReplicaProcess(pkg, env={"SWELL_WEIGHTS_CACHE": str(tmp_path / "cache")}) as replica:
        failed = replica.wait_event("failed", timeout=60)
        assert "sha256 mismatch" in failed["error"] and "ab" * 32 in failed["error"]
        assert "Traceback" not in failed["error"]  # an expected failure reads as a sentence
        assert replica.proc.wait(15) == 1


async def test_process_backend_gives_replicas_the_shared_cache(server: FileServer, tmp_path: Path) -> None:
    pkg = package_copy(tmp_path, server)
    config, _ = load_model_config(pkg)
    backend = ProcessBackend(log_dir=tmp_path / "data" / "logs", warm_start=False)
    assert backend.weights_cache == tmp_path / "data" / "weights"  # DATA_DIR/weights under `swell serve`
    states: list[ReplicaState] = []
    spec = ReplicaSpec(deployment_id="d1", package_dir=pkg, config=config, python=sys.executable)
    replica = await backend.start(spec, lambda r: states.append(r.state))
    try:
        for _ in range(600):
            if replica.state in (ReplicaState.READY, ReplicaState.FAILED):
                break
            await asyncio.sleep(0.05)
        assert replica.state is ReplicaState.READY, replica.error
        assert list((tmp_path / "data" / "weights" / "blobs" / "sha256").iterdir())
    finally:
        await backend.close()


RESUME_MODEL = '''
import hashlib
from pathlib import Path


class Model:
    def load(self):
        self._sha = hashlib.sha256(Path("data/model.bin").read_bytes()).hexdigest()

    def predict(self, model_input):
        return {"sha256": self._sha}
'''


def test_a_killed_replica_s_download_resumes_in_the_next_one(
    tmp_path: Path, weights_file: tuple[Path, str]
) -> None:
    origin, digest = weights_file
    size = origin.stat().st_size
    pkg = tmp_path / "pkg"
    (pkg / "model").mkdir(parents=True)
    (pkg / "model" / "model.py").write_text(RESUME_MODEL)
    env = {"SWELL_WEIGHTS_CACHE": str(tmp_path / "cache"), "SWELL_WEIGHTS_PART_SIZE": "256Ki",
           "SWELL_WEIGHTS_PARALLELISM": "2"}
    from swell.weights._testing import ServerBehaviour

    with FileServer({"model.bin": origin}, ServerBehaviour(rate=2 << 20)) as slow:
        (pkg / "config.yaml").write_text(yaml.safe_dump(
            {"model_name": "resume", "weights": [{"source": slow.url("model.bin"), "sha256": digest}]}))
        with ReplicaProcess(pkg, env=env) as doomed:
            deadline = 200
            while deadline:  # kill -9 once a good part of the file is on disk
                doomed.wait_event("weights_progress", timeout=30)
                if max(e.get("bytes_fetched", 0) for e in doomed.events) > size // 3:
                    break
                doomed._read_events(0.1)
                deadline -= 1
            doomed.proc.kill()
            doomed.proc.wait(10)
        before = slow.stats.body_bytes
        assert 0 < before < size
        with ReplicaProcess(pkg, env=env) as replica:
            replica.wait_ready(timeout=60)
            fetched = replica.wait_event("weights_ready")["bytes_fetched"]
            assert fetched < size - size // 4  # only what the first one had not finished
            with replica.client() as client:
                assert client.post("/v1/models/resume:predict", json={}).json() == {"sha256": digest}
            assert replica.terminate() == 0


def test_auth_secret_name_sends_the_secret_as_a_bearer_token(tmp_path: Path) -> None:
    from swell.weights._testing import ServerBehaviour

    with FileServer({"mlp.npy": WEIGHTS}, ServerBehaviour(token="s3cr3t")) as private:
        pkg = package_copy(tmp_path, private, auth_secret_name="weights_token")
        config = yaml.safe_load((pkg / "config.yaml").read_text())
        config["secrets"] = {"weights_token": None}
        (pkg / "config.yaml").write_text(yaml.safe_dump(config))
        env = {"SWELL_WEIGHTS_CACHE": str(tmp_path / "cache"), "SWELL_SECRETS_DIR": str(tmp_path / "none")}
        with ReplicaProcess(pkg, env={**env, "TRUSS_SECRET_weights_token": "wrong"}) as refused:
            assert "HTTP 401 unauthorized" in refused.wait_event("failed", timeout=60)["error"]
        with ReplicaProcess(pkg, env={**env, "TRUSS_SECRET_weights_token": "s3cr3t"}) as replica:
            replica.wait_ready(timeout=60)
            assert replica.terminate() == 0


HF_MODEL = '''
from pathlib import Path


class Model:
    def load(self):
        self._config = Path("model_cache/tiny/config.json").read_text()

    def predict(self, model_input):
        return {"config": self._config}
'''


def test_a_private_hugging_face_repo_with_the_token_from_hf_access_token(tmp_path: Path) -> None:
    """model_cache as Truss configs write it; the token from Truss's secret name; HF_ENDPOINT the local Hub."""
    pytest.importorskip("huggingface_hub")
    from swell.weights._testing import HubRepo, HubServer

    pkg = tmp_path / "pkg"
    (pkg / "model").mkdir(parents=True)
    (pkg / "model" / "model.py").write_text(HF_MODEL)
    (pkg / "config.yaml").write_text(yaml.safe_dump({
        "model_name": "hf-tiny", "secrets": {"hf_access_token": None},
        "model_cache": [{"repo_id": "org/tiny", "revision": "main", "use_volume": True, "volume_folder": "tiny",
                         "allow_patterns": ["*.json", "*.safetensors"]}]}))
    files = {"config.json": b'{"hidden": 8}', "model.safetensors": b"w" * 40_000, "README.md": b"#"}
    with HubServer({"org/tiny": HubRepo.of(files, private=True)}, token="hf_tok") as hub:
        env = {"SWELL_WEIGHTS_CACHE": str(tmp_path / "cache"), "SWELL_SECRETS_DIR": str(tmp_path / "none"),
               "HF_ENDPOINT": hub.endpoint}
        with ReplicaProcess(pkg, env=env) as refused:
            error = refused.wait_event("failed", timeout=60)["error"]
            assert "hf://org/tiny@main" in error and "hf_access_token" in error and "Traceback" not in error
        with ReplicaProcess(pkg, env={**env, "TRUSS_SECRET_hf_access_token": "hf_tok"}) as replica:
            replica.wait_ready(timeout=60)
            assert replica.wait_event("weights_ready")["bytes_fetched"] == 40_000 + 13
            ready = next(e for e in replica.events if e["event"] == "ready")
            assert ready["weights_seconds"] > 0  # the cold-start breakdown's weights part
            assert "weights: hf://org/tiny@main is commit" in replica.stderr()
            with replica.client() as client:
                assert client.post("/v1/models/hf:predict", json={}).json() == {"config": '{"hidden": 8}'}
            assert replica.terminate() == 0
