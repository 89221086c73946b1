"""A 4 → 256 → 3 network whose weights arrive through config.yaml's `weights`, not the package.

Swell (like Truss) fetches them before load() and shows them at the mount
location; the model reads them there. The path is relative to the working
directory, which is /app in a Truss image and the package folder under Swell.
"""

import hashlib
from pathlib import Path

import numpy as np

WEIGHTS = Path("model_cache/mlp/mlp.npy")
HIDDEN = 256


class Model:
    def __init__(self, **kwargs):
        self._layers = None
        self._sha256 = None

    def load(self):
        data = WEIGHTS.read_bytes()
        self._sha256 = hashlib.sha256(data).hexdigest()
        flat = np.load(WEIGHTS)
        sizes = [4 * HIDDEN, HIDDEN, HIDDEN * 3, 3]
        w1, b1, w2, b2 = np.split(flat, np.cumsum(sizes)[:-1])
        self._layers = (w1.reshape(4, HIDDEN), b1, w2.reshape(HIDDEN, 3), b2)

    def predict(self, model_input):
        w1, b1, w2, b2 = self._layers
        x = np.asarray(model_input["inputs"], dtype=np.float32)
        scores = np.maximum(x @ w1 + b1, 0) @ w2 + b2
        return {"scores": scores.round(4).tolist(), "weights_sha256": self._sha256,
                "weights_path": str(WEIGHTS.resolve())}
