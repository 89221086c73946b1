"""examples/echo with ``async def predict``, for bench/ray_serving.py.

Ray Serve's echo deployment (bench/_ray_leg.py) and the bare app are both
``async``: the same model for Swell is this one.  A sync ``predict`` runs in a
worker thread (as Truss runs it), a hop the other two legs do not take;
``ray_serving.py --model sync`` measures Swell with examples/echo instead.
"""


class Model:
    async def predict(self, model_input):
        return {"echo": model_input}
