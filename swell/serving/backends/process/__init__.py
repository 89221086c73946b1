"""Replicas as local OS processes (``python -m swell.modelserver``)."""

from swell.serving.backends.process._backend import ProcessBackend, remove_leftovers
from swell.serving.backends.process._lifecycle import (
    describe_exit,
    exit_state,
    new_replica_id,
    next_state,
    parse_event,
)

# The lifecycle rules are the replica process's, wherever it runs: the Ray
# backend reads the same events and exits with them.
__all__ = [
    "ProcessBackend",
    "describe_exit",
    "exit_state",
    "new_replica_id",
    "next_state",
    "parse_event",
    "remove_leftovers",
]
