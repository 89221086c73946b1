"""Capacity pressure: which idle replicas of other deployments give way to a replica that waits.

DESIGN.md: capacity is shared, and a model that is called serves.  When a
replica waits (``pending``) because the machine, or every node of the Ray
cluster, lacks what it asks for, idle replicas of *other* deployments that are
above their ``min_replica`` are stopped to make room: least recently used
first, never one with a request in flight or work queued for its deployment,
never below ``min_replica``, and only as many as the waiting replica needs.
When even all of them would not make it fit, none is stopped.  Only a replica
that somebody waits for claims room (:attr:`Waiting.demand`): requests queued
for its deployment, or the deployment below its ``min_replica``.

:func:`choose_reclaims` is that decision, a pure function of a snapshot the
controller takes (what each waiting replica asks for, what each idle one
holds and when its deployment last served, what each node has free); it reads
no clock and does no I/O.  Resources are named as Ray names them (``CPU``,
``memory`` in bytes, ``GPU``, custom ones); the process backend uses the same
names for the one machine, whose node is ``""``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

__all__ = ["Idle", "Reclaim", "Waiting", "choose_reclaims", "describe_amount", "describe_idle"]

#: Amounts are floats (fractions of a CPU, bytes): equal up to this is equal.
_EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class Waiting:
    """A replica pending for lack of resources, in the order it asked (first come, first served)."""

    deployment_id: str
    name: str  # how messages name its deployment: "model/deployment"
    replica_id: str
    needs: Mapping[str, float]
    # Somebody waits for it: requests are queued for its deployment, or the deployment is
    # below its min_replica.  A replica of a deployment that only scales out (its ready
    # replicas take all it is sent) waits for room without taking another's.
    demand: bool = True


@dataclass(frozen=True, slots=True)
class Idle:
    """A ready replica that might give way, with what its deployment allows."""

    deployment_id: str
    name: str
    replica_id: str
    holds: Mapping[str, float]
    last_used: float  # when its deployment last had a request (or it became ready, if later)
    in_flight: int = 0
    queued: int = 0  # requests waiting for its deployment
    replicas: int = 1  # its deployment's replicas that serve or will
    min_replica: int = 0  # its deployment's floor (min_replica, or a promotion's hold)
    node: str = ""


@dataclass(frozen=True, slots=True)
class Reclaim:
    """Stop ``victim`` so that ``waiting`` can start; ``reason`` is the sentence the log and events show."""

    victim: Idle
    waiting: Waiting
    reason: str


def choose_reclaims(
    waiting: Sequence[Waiting],
    idle: Sequence[Idle],
    free: Mapping[str, Mapping[str, float]],
    now: float,
) -> list[Reclaim]:
    """The replicas to stop, each with the waiting replica it makes room for.

    ``free`` is what each node has free now, counting what replicas already
    stopping will give back.  Waiting replicas are served in order; one that
    fits in what is free (or will be) takes it and stops nothing.  Otherwise,
    on the node where the fewest idle replicas make it fit (among equals, the
    node whose replicas were used longest ago), they are taken least recently
    used first, each one holding something it lacks.
    """
    room = {node: dict(amounts) for node, amounts in free.items()}
    for candidate in idle:
        room.setdefault(candidate.node, {})
    spare: Counter[str] = Counter()
    for candidate in idle:
        spare[candidate.deployment_id] = candidate.replicas - candidate.min_replica
    order = sorted(
        (c for c in idle if c.in_flight == 0 and c.queued == 0),
        key=lambda c: (c.last_used, c.deployment_id, c.replica_id),
    )
    taken: set[str] = set()
    chosen: list[Reclaim] = []
    for asking in waiting:
        if not asking.demand:
            continue
        fitting = next((node for node, amounts in room.items() if not _short(asking.needs, amounts)), None)
        if fitting is not None:
            _take(room[fitting], asking.needs)
            continue
        best: tuple[str, list[Idle]] | None = None
        for node, amounts in room.items():
            plan = _plan(asking, node, amounts, order, spare, taken)
            if plan is not None and (best is None or _cost(plan) < _cost(best[1])):
                best = (node, plan)
        if best is None:
            continue  # nothing idle would make it fit: stop nothing for it
        node, plan = best
        why = _shortfall_text(asking.needs, _short(asking.needs, room[node]), room[node], node)
        for victim in plan:
            taken.add(victim.replica_id)
            spare[victim.deployment_id] -= 1
            _give(room[node], victim.holds)
            chosen.append(Reclaim(victim, asking, reclaim_message(victim, asking, why, now)))
        _take(room[node], asking.needs)
    return chosen


def _plan(
    asking: Waiting,
    node: str,
    amounts: Mapping[str, float],
    order: Iterable[Idle],
    spare: Mapping[str, int],
    taken: set[str],
) -> list[Idle] | None:
    """Idle replicas on ``node`` that together make ``asking`` fit, least recently used first; None if they can not."""
    short = _short(asking.needs, amounts)
    left = Counter(spare)
    plan: list[Idle] = []
    for candidate in order:
        if not short:
            break
        if (
            candidate.node != node
            or candidate.replica_id in taken
            or candidate.deployment_id == asking.deployment_id
            or left[candidate.deployment_id] <= 0
            or not any(candidate.holds.get(name, 0.0) > _EPSILON for name in short)
        ):
            continue
        plan.append(candidate)
        left[candidate.deployment_id] -= 1
        for name in list(short):
            short[name] -= candidate.holds.get(name, 0.0)
            if short[name] <= _EPSILON:
                del short[name]
    return None if short else plan


def _cost(plan: Sequence[Idle]) -> tuple[int, float]:
    """Fewer replicas stopped first; among as many, those used longest ago."""
    return len(plan), max(victim.last_used for victim in plan)


def _short(needs: Mapping[str, float], amounts: Mapping[str, float]) -> dict[str, float]:
    """What ``needs`` lacks of ``amounts``, by resource."""
    return {
        name: amount - amounts.get(name, 0.0)
        for name, amount in needs.items()
        if amount - amounts.get(name, 0.0) > _EPSILON
    }


def _take(amounts: dict[str, float], needs: Mapping[str, float]) -> None:
    for name, amount in needs.items():
        amounts[name] = amounts.get(name, 0.0) - amount


def _give(amounts: dict[str, float], holds: Mapping[str, float]) -> None:
    for name, amount in holds.items():
        amounts[name] = amounts.get(name, 0.0) + amount


def _shortfall_text(
    needs: Mapping[str, float], short: Mapping[str, float], amounts: Mapping[str, float], node: str
) -> str:
    where = f" on {node}" if node else ""
    parts = [
        f"needs {describe_amount(name, needs[name])}, "
        f"{describe_amount(name, max(0.0, amounts.get(name, 0.0)), bare=True)} free{where}"
        for name in sorted(short)
    ]
    return "; ".join(parts)


def reclaim_message(victim: Idle, asking: Waiting, why: str, now: float) -> str:
    return (
        f"stopped idle replica {victim.replica_id} of {victim.name} "
        f"(idle {describe_idle(now - victim.last_used)}, above min_replica {victim.min_replica}) "
        f"to make room for {asking.name}: {why}"
    )


def describe_amount(name: str, value: float, *, bare: bool = False) -> str:
    """``1 CPU``, ``512Mi`` (of memory), ``2 GPU``, ``1 accel``; ``bare`` drops the unit but for memory."""
    if name == "memory":
        text = _bytes(value)
        return text if bare else f"{text} of memory"
    if bare:
        return f"{value:g}"
    return f"{value:g} {name}"


def _bytes(size: float) -> str:
    for unit, factor in (("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)):
        if size >= factor:
            value = size / factor
            return f"{value:.0f}{unit}" if abs(value - round(value)) < 0.05 else f"{value:.1f}{unit}"
    return f"{size:.0f}B"


def describe_idle(seconds: float) -> str:
    """``42s``, ``2m10s``, ``1h05m``."""
    total = max(0, int(seconds))
    if total < 60:
        return f"{total}s"
    if total < 3600:
        return f"{total // 60}m{total % 60:02d}s"
    return f"{total // 3600}h{total % 3600 // 60:02d}m"
