"""Model weights: parallel byte-range fetch with resume, and a shared content-addressed cache.

A package's ``weights`` / ``model_cache`` sources (``https://``, ``http://``,
``s3://``, Hugging Face repos) are fetched once per machine into
``<cache>/blobs/sha256/<digest>`` and shown to the model as symlinks at the path
it asked for.  See docs/weights.md.
"""

from __future__ import annotations

from swell.weights._cache import WeightsCache
from swell.weights._fetch import FetchOptions, RemoteFile, WeightsError, WeightsIntegrityError
from swell.weights._prepare import (
    SourceReport,
    WeightsFetcher,
    WeightsReport,
    default_cache_dir,
    options_from_env,
)

__all__ = [
    "FetchOptions",
    "RemoteFile",
    "SourceReport",
    "WeightsCache",
    "WeightsError",
    "WeightsFetcher",
    "WeightsIntegrityError",
    "WeightsReport",
    "default_cache_dir",
    "options_from_env",
]
