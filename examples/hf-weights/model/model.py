"""A 4 → 256 → 3 network whose weights and labels come from a Hugging Face repo named in config.yaml.

Swell (like Truss) fetches the repo before load() and shows its files at the
mount location, folders kept; the model reads them there. The path is relative
to the working directory, which is /app in a Truss image and the package
folder under Swell.
"""

import json
from pathlib import Path

import numpy as np

REPO = Path("model_cache/tiny-mlp")


class Model:
    def __init__(self, **kwargs):
        self._layers = None
        self._labels = None

    def load(self):
        config = json.loads((REPO / "config.json").read_text())
        inputs, hidden = config["inputs"], config["hidden"]
        self._labels = config["labels"]
        flat = np.load(REPO / "mlp.npy")
        sizes = [inputs * hidden, hidden, hidden * len(self._labels), len(self._labels)]
        w1, b1, w2, b2 = np.split(flat, np.cumsum(sizes)[:-1])
        self._layers = (w1.reshape(inputs, hidden), b1, w2.reshape(hidden, len(self._labels)), b2)

    def predict(self, model_input):
        w1, b1, w2, b2 = self._layers
        x = np.asarray(model_input["inputs"], dtype=np.float32)
        scores = np.maximum(x @ w1 + b1, 0) @ w2 + b2
        return {"labels": [self._labels[i] for i in scores.argmax(axis=1)],
                "scores": scores.round(4).tolist(),
                "files": sorted(p.name for p in REPO.iterdir())}
