"""A trivial model for bench/scale_from_zero.py.

``load()`` appends its own duration to the file named by ``BENCH_LOAD_LOG``
(when set), so the benchmark can subtract the model's own load time from the
first request's latency and keep only the platform's overhead.
"""

import json
import os
import time


class Model:
    def __init__(self, **kwargs):
        self._loaded = False

    def load(self):
        started = time.monotonic()
        self._loaded = True  # nothing to load: a trivial model
        log = os.environ.get("BENCH_LOAD_LOG")
        if log:
            with open(log, "a") as f:
                f.write(json.dumps({"load_seconds": time.monotonic() - started}) + "\n")

    def predict(self, model_input):
        return {"echo": model_input}
