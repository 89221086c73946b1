"""The JSON the API shows: models, deployments, environments, keys and traffic.

Read-only: a view reads the records and the control loop, and changes nothing.
"""

from __future__ import annotations

from typing import Any

from swell.control._advice import AdviceCache
from swell.control._keys import KeyRecord
from swell.control._registry import DeploymentRecord, ModelRecord, Registry
from swell.control._time import iso
from swell.serving import (
    BuildState,
    Controller,
    DeploymentStatus,
    ReplicaState,
    deployment_status,
)

__all__ = ["Views", "key_view"]


class Views:
    def __init__(self, registry: Registry, controller: Controller, advice: AdviceCache | None = None) -> None:
        self.registry = registry
        self.controller = controller
        self.advice = advice  # the background advice's digests (docs/advise.md, On the server)

    def status(self, record: DeploymentRecord) -> DeploymentStatus:
        if record.build is not BuildState.BUILT:
            return deployment_status(build=record.build)
        if not record.active:
            return DeploymentStatus.INACTIVE
        scaled = self.controller.get(record.id)
        if scaled is None:
            return DeploymentStatus.INACTIVE
        return scaled.status()

    def model_view(self, model: ModelRecord) -> dict[str, Any]:
        return {
            "id": model.id,
            "name": model.name,
            "created_at": iso(model.created_at),
            "development_deployment_id": model.development,
            "environments": dict(model.environments),
            "deployments": [
                self.deployment_summary(self.registry.deployments[d])
                for d in model.deployments
                if d in self.registry.deployments
            ],
        }

    def deployment_summary(self, record: DeploymentRecord) -> dict[str, Any]:
        scaled = self.controller.get(record.id)
        ready = total = 0
        reclaimed = None
        if scaled is not None:
            total = scaled.router.serving_count
            ready = self.controller.ready_count(record.id)
            if scaled.reclaimed is not None:  # capacity pressure: the last replica stopped to make room, by or for it
                reclaimed = {"at": iso(scaled.reclaimed[0]), "message": scaled.reclaimed[1]}
        return {
            "id": record.id,
            "model_id": record.model_id,
            "model_name": self.registry.models[record.model_id].name,
            "kind": record.kind.value,
            "status": self.status(record).value,
            "active": record.active,
            "revision": record.revision,
            "environments": self.registry.environments_of(record),
            "traffic": self.traffic_shares(record),
            "replicas_ready": ready,
            "replicas_total": total,
            "autoscaling_settings": record.settings.model_dump(),
            "created_at": iso(record.created_at),
            "last_request_at": iso(record.last_request_at) if record.last_request_at else None,
            # Present only when the last background advice would save ≥ 20 % or remove most cold-start waits.
            "advice": self.advice.get(record.id) if self.advice is not None else None,
            "capacity_reclaimed": reclaimed,
        }

    def traffic_shares(self, record: DeploymentRecord) -> dict[str, int]:
        """Percent of each environment's requests this deployment takes (a rolling promotion splits one)."""
        model = self.registry.models[record.model_id]
        shares: dict[str, int] = {}
        for env, target in model.environments.items():
            split = model.splits.get(env)
            if target == record.id:
                shares[env] = 100 - split.percent if split is not None else 100
            elif split is not None and split.deployment_id == record.id:
                shares[env] = split.percent
        return shares

    def deployment_view(self, record: DeploymentRecord) -> dict[str, Any]:
        view = self.deployment_summary(record)
        scaled = self.controller.get(record.id)
        replicas: list[dict[str, Any]] = []
        decision = None
        error = record.error
        concurrency = {"in_flight": 0, "queued": 0}
        if scaled is not None:
            router = scaled.router
            for handle in router.handles.values():
                replica = handle.replica
                replicas.append(
                    {
                        "id": replica.id,
                        "state": ReplicaState.DRAINING.value if handle.draining or handle.stopping else replica.state.value,
                        "in_flight": handle.in_flight,
                        "pid": replica.pid,
                        "node": replica.node,  # the Ray node it runs on (None: this machine)
                        "load_seconds": replica.load_seconds,
                        "error": replica.error,
                        # serving's: why it is pending; where its cold start went (once ready)
                        "reason": replica.reason,
                        "cold_start": cold.as_dict() if (cold := scaled.cold_start(handle.id)) is not None else None,
                    }
                )
            if scaled.decision is not None:
                decision = {
                    "target": scaled.decision.target,
                    "action": scaled.decision.action.value,
                    "reason": scaled.decision.reason,
                    "average_concurrency": round(scaled.decision.average, 4),
                }
            error = error or scaled.error
            concurrency = {"in_flight": router.in_flight, "queued": router.queued}
        view.update(
            {
                "replicas": replicas,
                "last_decision": decision,
                "error": error,
                "pending_reason": scaled.pending_reason if scaled is not None else None,
                "warnings": record.warnings,
                "predict_concurrency": record.config.runtime.predict_concurrency,
                **concurrency,
            }
        )
        return view

    def environment_view(self, model: ModelRecord, name: str) -> dict[str, Any]:
        target = self.registry.environment(model, name)
        record = self.registry.deployments.get(target or "")
        split = model.splits.get(name)
        traffic = [{"deployment_id": target, "percent": 100}] if target is not None else []
        if split is not None and target is not None:
            traffic = [
                {"deployment_id": target, "percent": 100 - split.percent},
                {"deployment_id": split.deployment_id, "percent": split.percent},
            ]
        return {
            "name": name,
            "model_id": model.id,
            "deployment_id": target,
            "deployment": self.deployment_summary(record) if record is not None else None,
            "predict_url": f"/model/{model.id}/environments/{name}/predict",
            "traffic": traffic,  # who takes the environment's requests, in percent
            "promotion": model.promotions.get(name),  # its last rolling promotion (under way or finished)
        }

    def traffic(self, model_ref: str, deployment_ref: str) -> dict[str, Any]:
        """The deployment's per-second arrivals and concurrency (what `swell advise` replays)."""
        record = self.registry.deployment(self.registry.model(model_ref), deployment_ref)
        scaled = self.controller.get(record.id)
        if scaled is None:
            return {"start": None, "interval": 1.0, "arrivals": [], "concurrency": []}
        return scaled.history.as_dict()


def key_view(record: KeyRecord) -> dict[str, Any]:
    """An API key as the API shows it: never its secret or hash."""
    return {
        "id": record.id,
        "name": record.name,
        "type": record.type.value,
        "model_ids": record.model_ids,
        "created_at": iso(record.created_at),
        "last_used_at": iso(record.last_used_at) if record.last_used_at else None,
    }
