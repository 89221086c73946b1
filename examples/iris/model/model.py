"""Iris species from four flower measurements: softmax regression, trained at load()."""

import csv
import logging

import numpy as np

SPECIES = ("setosa", "versicolor", "virginica")
EPOCHS = 500
LEARNING_RATE = 0.5


class Model:
    def __init__(self, data_dir, **kwargs):
        self._data_dir = data_dir
        self._mean = self._scale = self._weights = None

    def load(self):
        with open(self._data_dir / "iris.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        x = np.array([[float(r[k]) for k in list(r)[:4]] for r in rows])
        y = np.array([SPECIES.index(r["species"]) for r in rows])
        self._mean, self._scale = x.mean(axis=0), x.std(axis=0)
        features = self._design(x)
        onehot = np.eye(len(SPECIES))[y]
        weights = np.zeros((features.shape[1], len(SPECIES)))
        for _ in range(EPOCHS):  # full-batch gradient descent on the cross-entropy
            gradient = features.T @ (self._softmax(features @ weights) - onehot) / len(x)
            weights -= LEARNING_RATE * gradient
        self._weights = weights
        accuracy = float((self._softmax(features @ weights).argmax(axis=1) == y).mean())
        logging.getLogger(__name__).info("iris: trained on %d rows, accuracy %.3f", len(x), accuracy)

    def predict(self, model_input):
        features = model_input.get("features") if isinstance(model_input, dict) else None
        try:
            x = np.asarray(features, dtype=float)
            if x.ndim == 1:
                x = x[None, :]
            if x.ndim != 2 or x.shape[1] != 4 or len(x) == 0:
                raise ValueError
        except (TypeError, ValueError):
            # Imported only on this path: keeps the replica small.
            from fastapi import HTTPException

            raise HTTPException(status_code=400, detail='expected {"features": [[sepal_length, sepal_width, '
                                                        'petal_length, petal_width], ...]}') from None
        probabilities = self._softmax(self._design(x) @ self._weights)
        return {
            "predictions": [SPECIES[i] for i in probabilities.argmax(axis=1)],
            "probabilities": probabilities.round(4).tolist(),
        }

    def _design(self, x):
        standardised = (x - self._mean) / self._scale
        return np.hstack([standardised, np.ones((len(x), 1))])

    @staticmethod
    def _softmax(logits):
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
