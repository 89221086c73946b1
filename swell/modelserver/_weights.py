"""Before ``load()``: bring the package's ``weights`` / ``model_cache`` onto the machine.

Progress goes to the events pipe (``weights_progress``, ``weights_ready``) and
one log line per source; a failure fails the replica like a failed ``load()``.
"""

from __future__ import annotations

import logging
import os
import traceback
from typing import TYPE_CHECKING, Any, Protocol

from swell.modelserver._secrets import SecretNotFound, Secrets

if TYPE_CHECKING:
    from swell.modelserver._wrapper import ModelWrapper
    from swell.weights import WeightsCache

logger = logging.getLogger("swell.modelserver")

#: The cache of this replica: its pins live as long as the process holds it.
_cache: WeightsCache | None = None


class _Events(Protocol):
    def emit(self, event: str, **fields: Any) -> None: ...


def weight_entries(config: dict[str, Any]) -> list[dict[str, Any]]:
    return [*(config.get("model_cache") or []), *(config.get("weights") or [])]


def fetch_weights(wrapper: ModelWrapper, events: _Events) -> bool:
    """Fetch (or take from the cache) every source; False, with ``wrapper.error`` set, on failure."""
    global _cache
    config = wrapper.config
    entries = weight_entries(config)
    if not entries:
        return True
    from swell.modelserver._wrapper import Status
    from swell.weights import WeightsCache, WeightsError, WeightsFetcher, default_cache_dir, options_from_env

    wrapper.status = Status.LOADING
    for name in ("httpx", "httpcore", "httpx2", "httpcore2"):  # a line per request is noise in its log
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        options, limit = options_from_env(os.environ)
        cache = _cache = WeightsCache(default_cache_dir(os.environ), limit)
        secrets = Secrets(config.get("secrets"))

        def auth(entry: Any) -> dict[str, str]:
            secret = entry.token_secret
            if secret is None:
                return {}
            name, named = secret
            try:
                return {"Authorization": f"Bearer {secrets[name].strip()}"}
            except SecretNotFound:
                if not named:  # Truss's default hf_access_token, not declared or not set: anonymous
                    return {}
                raise WeightsError(f"{entry.url}: the secret {name!r} is not declared in config.yaml's "
                                   "secrets or has no value") from None

        fetcher = WeightsFetcher(cache, options, emit=events.emit)
        logger.info("weights: %d source(s); cache %s", len(entries), cache.root)
        fetcher.prepare(entries, wrapper.package_dir, data_dir=config.get("data_dir") or "data", auth=auth)
        return True
    except WeightsError as exc:
        wrapper.error = f"weights: {exc}\n"
    except Exception as exc:  # a bug or an unexpected OS error: keep the traceback
        wrapper.error = "weights: " + "".join(traceback.format_exception(exc))
    wrapper.status = Status.FAILED
    logger.error("%s", wrapper.error.rstrip())
    return False
