"""A model whose load() honestly reads its weights: a file of weights_mb MiB under data/."""

import hashlib
import os
import time

CHUNK = 1 << 20


class Model:
    def __init__(self, config, data_dir, **kwargs):
        metadata = config["model_metadata"]
        self._size_mb = int(os.environ.get("SWELL_EXAMPLE_WEIGHTS_MB") or metadata.get("weights_mb") or 64)
        self._path = data_dir / "weights.bin"
        self._sha256 = None
        self._load_seconds = None

    def load(self):
        start = time.perf_counter()
        size = self._size_mb * CHUNK
        if not self._path.exists() or self._path.stat().st_size != size:
            self._write_weights(size)  # first load only: later loads just read
        digest = hashlib.sha256()
        with open(self._path, "rb") as f:
            while block := f.read(CHUNK):
                digest.update(block)
        self._sha256 = digest.hexdigest()
        self._load_seconds = round(time.perf_counter() - start, 3)

    def _write_weights(self, size):
        self._path.parent.mkdir(parents=True, exist_ok=True)
        partial = self._path.with_suffix(".partial")
        with open(partial, "wb") as f:
            f.writelines(os.urandom(CHUNK) for _ in range(size // CHUNK))
        partial.replace(self._path)  # a crash mid-write never leaves a short weights file

    def predict(self, model_input):
        return {
            "weights_mb": self._size_mb,
            "weights_sha256": self._sha256,
            "load_seconds": self._load_seconds,
            "input": model_input,
        }
