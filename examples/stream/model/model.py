"""A stand-in for a language model: a generator predict that streams tokens as it makes them."""

import time

VOCABULARY = ("swell", "scales", "models", "to", "zero", "and", "back", "again", "fast", "quietly")


class Model:
    def predict(self, model_input):
        prompt = str(model_input.get("prompt", ""))
        max_tokens = max(0, min(int(model_input.get("max_tokens", 16)), 512))
        delay = max(0.0, min(float(model_input.get("delay", 0.02)), 1.0))
        seed = sum(prompt.encode())
        for i in range(max_tokens):
            time.sleep(delay)  # the time a real model spends per token
            yield VOCABULARY[(seed + i * 7) % len(VOCABULARY)] + " "
