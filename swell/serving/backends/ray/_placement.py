"""Pure parts of the Ray backend: a model's resources as Ray actor options,
why Ray cannot place one yet (in words), how a lost replica is named and
one its node could not start, and what of the server's environment a
replica on a node gets.

Nothing here imports Ray, so every rule is tested from a table.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from swell.config import Resources

_GIB = 1024**3
#: Until Ray has placed the actor, when no resource is short: it is starting a worker for it.
PLACING = "waiting for Ray to place it"


@dataclass(frozen=True)
class NodeView:
    """One Ray node as the cluster reports it: what it has, what is free."""

    node_id: str
    address: str
    alive: bool
    total: Mapping[str, float]
    available: Mapping[str, float]


def actor_options(resources: Resources) -> dict[str, Any]:
    """``resources:`` of config.yaml as ``ray.remote(...).options(...)`` keywords.

    ``cpu`` -> ``num_cpus`` (1 when the package does not say: an actor holds a
    CPU of its node while its process serves), ``memory`` -> ``memory`` (bytes,
    Ray's logical memory; only when the package wrote it), ``accelerator`` /
    ``use_gpu`` -> ``num_gpus`` and, for a named GPU type, Ray's
    ``accelerator_type`` constraint.
    """
    written = resources.model_fields_set
    options: dict[str, Any] = {"num_cpus": resources.cpu_cores if "cpu" in written else 1.0}
    if "memory" in written:
        options["memory"] = resources.memory_bytes
    gpus = resources.gpu_count if ("accelerator" in written or "use_gpu" in written) else 0
    if gpus:
        options["num_gpus"] = gpus
        if resources.gpu_type:
            options["accelerator_type"] = resources.gpu_type
    return options


#: Settings of the server's environment that say where replicas fetch their weights from:
#: a node's own environment lacks them (``HF_ENDPOINT``: the Hub, a mirror or a local one).
_WEIGHTS_SOURCES = ("HF_ENDPOINT",)


def job_env(server_env: Mapping[str, str], package_env: Mapping[str, str], router_env: Mapping[str, str]) -> dict[str, str]:
    """What a replica's environment gets from the server, over its node's own, later layers winning.

    The server's weights settings (``SWELL_WEIGHTS_*`` but the cache, which is
    the node's, and ``HF_ENDPOINT``), the package's ``environment_variables``,
    then what the router sets.  The rest of the server's environment (its
    credentials among it) stays on the server: the replica has its node's.
    """
    env = {
        k: v for k, v in server_env.items()
        if (k.startswith("SWELL_WEIGHTS_") and k != "SWELL_WEIGHTS_CACHE") or k in _WEIGHTS_SOURCES
    }
    env.update(package_env)
    env.update(router_env)
    return env


def resource_demand(options: Mapping[str, Any]) -> dict[str, float]:
    """The Ray resource names and amounts an actor with ``options`` asks for."""
    demand = {"CPU": float(options.get("num_cpus") or 0.0)}
    if options.get("memory"):
        demand["memory"] = float(options["memory"])
    if options.get("num_gpus"):
        demand["GPU"] = float(options["num_gpus"])
    if options.get("accelerator_type"):
        demand[f"accelerator_type:{options['accelerator_type']}"] = 0.001
    for name, amount in (options.get("resources") or {}).items():
        demand[str(name)] = float(amount)
    return {k: v for k, v in demand.items() if v > 0}


def _amount(name: str, value: float) -> str:
    if name == "memory":
        return f"{value / _GIB:.3g} GiB of memory"
    if name.startswith("accelerator_type:"):
        return f"a {name.removeprefix('accelerator_type:')} GPU"
    unit = {"CPU": "CPU", "GPU": "GPU"}.get(name, f"of resource {name!r}")
    plural = "s" if name == "GPU" and value != 1 else ""
    return f"{value:g} {unit}{plural}"


def free_by_node(nodes: Iterable[NodeView]) -> dict[str, dict[str, float]]:
    """What each live node has free, keyed as replicas name their node (:func:`node_label`)."""
    return {node_label(n.node_id, n.address): dict(n.available) for n in nodes if n.alive}


def pending_reason(options: Mapping[str, Any], nodes: Iterable[NodeView]) -> str:
    """Why no node can take an actor with ``options`` now, in words.

    "needs 1 GPU; no node has one free" when some node has it but it is taken,
    "...; no node of the cluster has any (waiting for one to join)" when none
    has it at all; a node that lacks several things is summed up by the first.
    """
    demand = resource_demand(options)
    alive = [n for n in nodes if n.alive]
    wants = ", ".join(_amount(k, v) for k, v in demand.items()) or "nothing"
    if not alive:
        return f"needs {wants}; the cluster has no live node (waiting for one to join)"
    for name, amount in demand.items():
        if not any(n.total.get(name, 0.0) >= amount for n in alive):
            return (
                f"needs {_amount(name, amount)}; no node of the cluster has "
                f"{'that much' if any(n.total.get(name, 0.0) for n in alive) else 'any'} "
                "(waiting for a node that does to join)"
            )
    for name, amount in demand.items():
        if not any(n.available.get(name, 0.0) >= amount for n in alive):
            free = "one" if name in ("GPU", "CPU") and amount <= 1 else "that much"
            return f"needs {_amount(name, amount)}; no node has {free} free"
    if any(all(n.available.get(k, 0.0) >= v for k, v in demand.items()) for n in alive):
        return f"{PLACING} (a node has {wants} free)"
    return f"needs {wants}; no single node has all of it free"


def node_label(node_id: str, address: str) -> str:
    """How the deployment view names a node: its address and the start of its Ray id."""
    return f"{address} (node {node_id[:12]})" if address else f"node {node_id[:12]}"


def death_message(node: str | None, cause: str) -> str:
    """The error of a replica whose actor died: the node named, Ray's cause kept."""
    cause = " ".join(cause.split())
    if len(cause) > 600:
        cause = cause[:600] + " ..."
    lost_node = "node" in cause.lower() and ("died" in cause.lower() or "dead" in cause.lower())
    where = node or "an unknown node"
    head = f"the Ray node {where} was lost" if lost_node else f"its Ray actor on {where} died"
    return f"{head}: {cause}"


_COLOURS = re.compile(r"\x1b\[[0-9;]*m")


def start_failure(node: str | None, text: str, cause: object) -> str:
    """The error of a replica whose node could not prepare it (unpack, requirements, spawn):
    what the node raised (``cause``: a ``RayTaskError``'s), then Ray's text of it (``text``:
    where on the node, the traceback), less the terminal colours Ray puts in."""
    plain = _COLOURS.sub("", text).strip()
    said = str(cause).strip() if isinstance(cause, BaseException) else ""
    head = f"the replica could not start on {node or 'its node'}: {said or plain}"
    return f"{head}\n{plain}" if said and plain else head
