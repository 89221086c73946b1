"""The management API: every route under ``/v1``, async predict, and the errors they answer.

The front door (``_app.py``) hands a request here only after it has checked the
key and ruled out the predict fast path.  Routes are thin: each reads its input
and calls one part of the :class:`ControlPlane`; the errors the parts raise
become JSON bodies in :func:`_answer_errors`.  One group of routes a function,
in the order ``/openapi.json`` lists them.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

from fastapi import Body, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from swell import __version__
from swell.control._async import AsyncPredictRequest
from swell.control._errors import ApiError
from swell.control._keys import KeyRecord
from swell.control._limits import LimitExceeded
from swell.control._observe import observe_routes
from swell.control._plane import ControlPlane
from swell.control._registry import NotFound
from swell.control._secrets import SecretKeyError
from swell.control._views import key_view
from swell.control._webhooks import SIGNATURE_HEADER
from swell.files import StorageError, storage_error

__all__ = ["jsonable", "management_app"]

log = logging.getLogger("swell.app")


class NameRequest(BaseModel):
    """A new model's or environment's name."""

    name: str


class RollingFields(BaseModel):
    """A rolling promotion: ``rolling: true`` and its plan (``_rolling.parse_rolling`` checks the values)."""

    rolling: bool = False
    steps: Any = None
    step_seconds: Any = None
    max_error_rate: Any = None
    min_requests: Any = None
    warm_seconds: Any = None

    def plan(self) -> dict[str, Any] | None:
        """The plan's fields, or None for a promotion at once."""
        return self.model_dump(include=set(RollingFields.model_fields) - {"rolling"}) if self.rolling else None


class PromoteRequest(RollingFields):
    environment: str = "production"
    autoscaling_settings: dict[str, Any] | None = None


class EnvironmentPromote(RollingFields):
    deployment_id: str
    autoscaling_settings: dict[str, Any] | None = None


SETTINGS_BODY = Body(
    ..., examples=[{"min_replica": 1, "max_replica": 4, "concurrency_target": 2, "scale_down_delay": 600}]
)
KEY_BODY = Body(..., examples=[{"type": "invoke", "name": "ci", "model_ids": ["my-model"]}])
SECRET_BODY = Body(..., examples=[{"name": "hf_access_token", "value": "hf_…"}])


def management_app(plane: ControlPlane) -> FastAPI:
    app = FastAPI(title="Swell", version=__version__, docs_url="/docs", redoc_url=None)
    _answer_errors(app, plane)
    for add_routes in (_model_routes, _deployment_routes, _environment_routes, _async_routes, _access_routes):
        add_routes(app, plane)
    app.include_router(observe_routes(plane))  # a deployment's logs and events (_observe.py)
    _declare_keys(app)
    return app


# How a caller shows its key (DESIGN.md, "HTTP surface"): both forms name one scheme each in
# /openapi.json, so Swagger UI's Authorize button (at /docs) sends the key with "Try it out".
SECURITY_SCHEMES = {
    "ApiKey": {
        "type": "apiKey", "in": "header", "name": "Authorization",
        "description": "The header's whole value: `Api-Key <key>` (a key from `swell keys create` or `swell serve`'s first start)",
    },
    "Bearer": {"type": "http", "scheme": "bearer", "description": "The key alone, sent as `Authorization: Bearer <key>` (OpenAI clients)"},
}


def _declare_keys(app: FastAPI) -> None:
    """Every operation requires one of :data:`SECURITY_SCHEMES` in ``/openapi.json``
    (the front door checks the key before any route runs, so none declares it itself)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
            for operations in schema["paths"].values():
                for operation in operations.values():
                    operation["security"] = [{name: []} for name in SECURITY_SCHEMES]
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _answer_errors(app: FastAPI, plane: ControlPlane) -> None:
    """Every error a route can meet, as a JSON body with ``error`` and ``reason`` (or ``detail``)."""

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(jsonable(exc.payload), status_code=exc.status)

    @app.exception_handler(LimitExceeded)
    async def _too_large(_request: Request, exc: LimitExceeded) -> JSONResponse:
        return JSONResponse(exc.payload, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(StorageError)
    async def _disk(request: Request, exc: StorageError) -> JSONResponse:
        log.error("%s %s: %s", request.method, request.url.path, exc.reason)
        return JSONResponse({"error": "storage unavailable", "reason": exc.reason}, status_code=503)

    @app.exception_handler(OSError)
    async def _os_error(request: Request, exc: OSError) -> JSONResponse:
        disk = storage_error(exc.filename or plane.data_dir, exc)
        if disk is not None:  # e.g. ENOSPC while an upload is spooled
            return await _disk(request, disk)
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        reason = f"{type(exc).__name__}: {exc.strerror or exc}"
        return JSONResponse({"error": "internal error", "reason": reason}, status_code=500)

    @app.exception_handler(SecretKeyError)
    async def _secrets_key(request: Request, exc: SecretKeyError) -> JSONResponse:
        log.error("%s %s: %s", request.method, request.url.path, exc)
        return JSONResponse({"error": "secrets key unusable", "reason": str(exc)}, status_code=503)

    @app.exception_handler(NotFound)
    async def _not_found(_request: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse({"error": "not found", "reason": str(exc)}, status_code=404)

    @app.exception_handler(SQLAlchemyError)
    async def _store_down(request: Request, exc: SQLAlchemyError) -> JSONResponse:
        # Every change writes the store first, so nothing was changed (and no
        # async request was accepted): the caller may simply try again.
        log.error("%s %s: the store failed: %s", request.method, request.url.path, str(exc).splitlines()[0])
        full = "disk is full" in str(exc) or "No space left" in str(exc)
        cause = "no space left on device" if full else type(exc).__name__
        return JSONResponse(
            {
                "error": "store unavailable",
                "reason": f"the database could not be reached or written ({cause}); "
                "nothing was changed: try again shortly",
            },
            status_code=503,
            headers={"retry-after": "1"},
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        route = f"{request.method} {request.url.path}"
        payload: dict[str, Any] = {"error": str(exc.detail).lower(), "reason": str(exc.detail)}
        headers = dict(exc.headers or {})
        if exc.status_code == 404:
            payload["reason"] = f"no route {route}"
        elif exc.status_code == 400 and exc.__cause__ is not None:  # FastAPI could not read the body
            cause = exc.__cause__
            payload["error"] = "invalid JSON"
            if isinstance(cause, UnicodeDecodeError):
                payload["reason"] = f"the body is not UTF-8 encoded JSON: {cause.reason} at byte {cause.start}"
            elif isinstance(cause, RecursionError):
                # Python's parser recurses once a level, up to the interpreter's limit (1,000)
                payload["reason"] = "the body's JSON is nested too deep (more than about 1,000 levels)"
            elif isinstance(cause, ValueError) and "integer string conversion" in str(cause):
                limit = sys.get_int_max_str_digits()
                payload["reason"] = f"a number in the body's JSON has more than {limit} digits"
            else:
                payload["reason"] = f"the body could not be read as JSON: {type(cause).__name__}: {cause}"
        elif exc.status_code == 405:
            # Starlette names the methods of the first route with this path only.
            allowed = ", ".join(_methods_for(request)) or headers.get("Allow") or headers.get("allow") or ""
            if allowed:
                headers["Allow"] = allowed
            payload["reason"] = f"{route} is not allowed" + (f"; allowed: {allowed}" if allowed else "")
            payload["allowed"] = [m.strip() for m in allowed.split(",") if m.strip()]
        return JSONResponse(payload, status_code=exc.status_code, headers=headers or None)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        detail = [_field_error(e, request.headers.get("content-type"), exc.body) for e in errors]
        error = "invalid JSON" if any(e.get("type") == "json_invalid" for e in errors) else "invalid request"
        return JSONResponse({"error": error, "detail": jsonable(detail)}, status_code=422)


def _model_routes(app: FastAPI, plane: ControlPlane) -> None:
    """Models: list, create, push (upload a package), read, delete."""
    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        """Every model with its deployments and environments."""
        return {"models": [plane.views.model_view(m) for m in plane.registry.models.values()]}

    @app.post("/v1/models", status_code=201)
    async def create_model(body: NameRequest) -> dict[str, Any]:
        """An empty model (a push creates one too)."""
        return plane.views.model_view(await plane.lifecycle.create_model(body.name))

    @app.post("/v1/models/push")
    async def push(
        request: Request,
        model_name: str | None = None,
        publish: bool = False,
        promote: bool = False,
        environment: str = "production",
    ) -> JSONResponse:
        """Upload a model package (a tar.gz of the directory with config.yaml) as a deployment."""
        plane.data_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=plane.data_dir, prefix=".upload-", suffix=".tar.gz") as tmp:
            size = 0
            async for chunk in request.stream():
                tmp.write(chunk)
                size += len(chunk)
            tmp.flush()
            if size == 0:
                raise ApiError(400, "empty upload", reason="send the package as a tar.gz body")
            result = await plane.push(
                Path(tmp.name), model_name=model_name, publish=publish, promote=promote, environment=environment
            )
        return JSONResponse(result.as_dict(), status_code=201)

    @app.get("/v1/models/{model_id}")
    async def get_model(model_id: str) -> dict[str, Any]:
        return plane.views.model_view(plane.registry.model(model_id))

    @app.delete("/v1/models/{model_id}")
    async def delete_model(model_id: str) -> dict[str, Any]:
        """The model, every deployment of it (their replicas stop) and its environments."""
        return await plane.lifecycle.delete_model(model_id)


def _deployment_routes(app: FastAPI, plane: ControlPlane) -> None:
    """Deployments: read, delete, traffic, activate and deactivate, settings, promote."""
    @app.get("/v1/models/{model_id}/deployments")
    async def list_deployments(model_id: str) -> dict[str, Any]:
        model = plane.registry.model(model_id)
        return {
            "deployments": [
                plane.views.deployment_view(plane.registry.deployments[d])
                for d in model.deployments
                if d in plane.registry.deployments
            ]
        }

    @app.get("/v1/models/{model_id}/deployments/{deployment_id}")
    async def get_deployment(model_id: str, deployment_id: str) -> dict[str, Any]:
        """Status, replicas, settings, the last scaling decision and any error."""
        model = plane.registry.model(model_id)
        return plane.views.deployment_view(plane.registry.deployment(model, deployment_id))

    @app.delete("/v1/models/{model_id}/deployments/{deployment_id}")
    async def delete_deployment(model_id: str, deployment_id: str) -> dict[str, Any]:
        """Refused while an environment points at the deployment."""
        return await plane.lifecycle.delete_deployment(model_id, deployment_id)

    @app.get("/v1/models/{model_id}/deployments/{deployment_id}/traffic")
    async def traffic(model_id: str, deployment_id: str) -> dict[str, Any]:
        """Recorded traffic, one bucket a second: ``arrivals`` and mean ``concurrency`` (input of `swell advise`)."""
        return plane.views.traffic(model_id, deployment_id)

    @app.post("/v1/models/{model_id}/deployments/{deployment_id}/activate")
    async def activate(model_id: str, deployment_id: str) -> dict[str, Any]:
        """Let a deactivated deployment scale again (from min_replica)."""
        return await plane.lifecycle.activate(model_id, deployment_id)

    @app.post("/v1/models/{model_id}/deployments/{deployment_id}/deactivate")
    async def deactivate(model_id: str, deployment_id: str) -> dict[str, Any]:
        """Stop every replica; predict answers 409 until the deployment is activated."""
        return await plane.lifecycle.deactivate(model_id, deployment_id)

    @app.get("/v1/models/{model_id}/deployments/{deployment_id}/autoscaling_settings")
    async def get_settings(model_id: str, deployment_id: str) -> dict[str, Any]:
        model = plane.registry.model(model_id)
        return plane.registry.deployment(model, deployment_id).settings.model_dump()

    @app.patch("/v1/models/{model_id}/deployments/{deployment_id}/autoscaling_settings")
    async def patch_settings(
        model_id: str, deployment_id: str, body: dict[str, Any] = SETTINGS_BODY
    ) -> dict[str, Any]:
        """Change some settings: ``ACCEPTED`` or ``UNCHANGED`` with the settings now in force.
        All are validated together; nothing is half-applied."""
        return await plane.promotion.patch_settings(model_id, deployment_id, body)

    @app.post("/v1/models/{model_id}/deployments/{deployment_id}/promote")
    async def promote(model_id: str, deployment_id: str, body: PromoteRequest | None = None) -> Any:
        """Point an environment (production by default) at this deployment, once it is warm; with
        ``rolling: true``, 202 and the promotion under way (it moves the traffic in steps)."""
        body = body or PromoteRequest()
        return _promoted(
            body, await plane.promotion.promote(
                model_id, deployment_id, body.environment, settings=body.autoscaling_settings, rolling=body.plan()
            )
        )


def _environment_routes(app: FastAPI, plane: ControlPlane) -> None:
    """Environments: list, create, read, promote a deployment into one."""
    @app.get("/v1/models/{model_id}/environments")
    async def list_environments(model_id: str) -> dict[str, Any]:
        model = plane.registry.model(model_id)
        return {"environments": [plane.views.environment_view(model, name) for name in model.environments]}

    @app.post("/v1/models/{model_id}/environments", status_code=201)
    async def create_environment(model_id: str, body: NameRequest) -> dict[str, Any]:
        """A new environment, pointing at nothing until a deployment is promoted into it."""
        return await plane.lifecycle.create_environment(model_id, body.name)

    @app.get("/v1/models/{model_id}/environments/{environment}")
    async def get_environment(model_id: str, environment: str) -> dict[str, Any]:
        return plane.views.environment_view(plane.registry.model(model_id), environment)

    @app.post("/v1/models/{model_id}/environments/{environment}/promote")
    async def promote_into(model_id: str, environment: str, body: EnvironmentPromote) -> Any:
        """Point this environment at a published deployment, once it is warm (``rolling: true``: in steps)."""
        return _promoted(
            body, await plane.promotion.promote(
                model_id, body.deployment_id, environment, settings=body.autoscaling_settings, rolling=body.plan()
            )
        )


def _promoted(body: RollingFields, answer: dict[str, Any]) -> Any:
    """A promotion's answer: the deployment (200), or a rolling promotion under way (202)."""
    return JSONResponse(jsonable(answer), status_code=202) if body.rolling else answer


def _async_routes(app: FastAPI, plane: ControlPlane) -> None:
    """Async predict: queue a request, follow it, cancel it; the webhook secret."""
    # SwellApp._model serves …/async_predict itself (one parse of the path, one look-up of
    # the deployment); the routes are declared here so that /openapi.json documents them.
    def caller(request: Request) -> KeyRecord:
        key: KeyRecord | None = getattr(request.state, "key", None)
        if key is None:  # only reached through SwellApp, which authenticates first
            raise ApiError(401, "unauthorized", reason="send the header 'Authorization: Api-Key <key>' with a live API key")
        return key

    async def submit(request: Request, model_id: str, kind: str, ref: str | None, body: AsyncPredictRequest) -> JSONResponse:
        accepted = await plane.async_predict(caller(request), model_id, kind, ref, body)
        return JSONResponse(accepted, status_code=201)

    @app.post("/model/{model_id}/environments/{environment}/async_predict", status_code=201, tags=["async"])
    async def async_predict_environment(
        request: Request, model_id: str, environment: str, body: AsyncPredictRequest
    ) -> JSONResponse:
        """Queue a request for the deployment an environment points at: ``201 {"request_id"}``.
        It is kept before the answer is sent, and survives a restart of the server."""
        return await submit(request, model_id, "environments", environment, body)

    @app.post("/model/{model_id}/deployment/{deployment_id}/async_predict", status_code=201, tags=["async"])
    async def async_predict_deployment(
        request: Request, model_id: str, deployment_id: str, body: AsyncPredictRequest
    ) -> JSONResponse:
        """Queue a request for one deployment: ``201 {"request_id"}``."""
        return await submit(request, model_id, "deployment", deployment_id, body)

    @app.post("/model/{model_id}/development/async_predict", status_code=201, tags=["async"])
    async def async_predict_development(request: Request, model_id: str, body: AsyncPredictRequest) -> JSONResponse:
        """Queue a request for the model's development deployment: ``201 {"request_id"}``."""
        return await submit(request, model_id, "development", None, body)

    @app.get("/async_request/{request_id}", tags=["async"])
    async def get_async_request(request: Request, request_id: str) -> dict[str, Any]:
        """Status (QUEUED, IN_PROGRESS, SUCCEEDED, FAILED, EXPIRED, CANCELED), the result and the webhook's delivery."""
        return await plane.async_request(caller(request), request_id)

    @app.delete("/async_request/{request_id}", tags=["async"])
    async def cancel_async_request(request: Request, request_id: str) -> dict[str, Any]:
        """Cancel a QUEUED request (409 once it runs or has finished)."""
        return await plane.cancel_async_request(caller(request), request_id)

    @app.get("/v1/webhook_secret", tags=["async"])
    async def webhook_secret() -> dict[str, Any]:
        """The secret that signs webhooks: ``X-Swell-Signature: v1=<hex HMAC-SHA256 of the body>``."""
        return {"webhook_secret": await plane.async_queue.webhook_secret(), "header": SIGNATURE_HEADER, "scheme": "v1=hex(hmac_sha256(secret, body))"}


def _access_routes(app: FastAPI, plane: ControlPlane) -> None:
    """API keys and secrets."""
    @app.get("/v1/api_keys")
    async def list_keys() -> dict[str, Any]:
        """Live keys, without their secrets (shown once, at creation)."""
        return {"api_keys": [key_view(r) for r in plane.keys.live()]}

    @app.post("/v1/api_keys", status_code=201)
    async def create_key(body: dict[str, Any] = KEY_BODY) -> dict[str, Any]:
        """``type`` workspace (every route) or invoke (predict only; ``model_ids`` limits which models)."""
        return await plane.access.create_key(body)

    @app.delete("/v1/api_keys/{key_id}")
    async def revoke_key(key_id: str) -> dict[str, Any]:
        return await plane.access.revoke_key(key_id)

    @app.get("/v1/secrets")
    async def list_secrets() -> dict[str, Any]:
        """Names and dates; values are never shown."""
        return {"secrets": await plane.access.list_secrets()}

    @app.post("/v1/secrets")
    async def set_secret(body: dict[str, Any] = SECRET_BODY) -> dict[str, Any]:
        """Create or replace a secret; replicas that declare it see the new value."""
        return await plane.access.set_secret(body)

    @app.delete("/v1/secrets/{name}")
    async def delete_secret(name: str) -> dict[str, Any]:
        return await plane.access.delete_secret(name)


def _methods_for(request: Request) -> list[str]:
    """Every method some route serves at this request's path."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, APIRoute) and route.matches(request.scope)[0] is not Match.NONE:
            methods |= route.methods or set()
    return sorted(methods)


def _field_error(error: Any, content_type: str | None, body: Any) -> dict[str, Any]:
    """One validation error as {field, value, allowed}, saying where a body went wrong."""
    loc = [str(p) for p in error.get("loc", ())]
    value = error.get("input")
    allowed = str(error.get("msg", ""))
    kind = error.get("type")
    if kind == "json_invalid":  # loc is ("body", offset)
        offset = int(loc[1]) if len(loc) > 1 and loc[1].isdigit() else 0
        text = body if isinstance(body, str) else ""
        loc = loc[:1]
        value = text[max(0, offset - 40) : offset + 40]
        reason = (error.get("ctx") or {}).get("error", "not JSON")
        allowed = f"a JSON body; {reason} at character {offset}"
    elif isinstance(value, (bytes, bytearray)):  # a body that was not sent as JSON
        value = bytes(value[:200]).decode("utf-8", "replace")
        allowed = f"{allowed}: send JSON with 'content-type: application/json' (got {content_type or 'none'!r})"
    elif kind == "missing":
        allowed = "required"
    return {"field": ".".join(loc), "value": value, "allowed": allowed}


def jsonable(value: Any) -> Any:
    """``value`` as a UTF-8 JSON body can carry it: odd objects as their repr, NaN and
    infinities as text, lone surrogates (a body decoded as UTF-16 by the JSON parser's
    guess) as U+FFFD."""
    try:
        json.dumps(value, allow_nan=False, ensure_ascii=False).encode()
        return value
    except (TypeError, ValueError):  # UnicodeEncodeError is a ValueError
        return _finite(json.loads(json.dumps(value, default=repr)))


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, dict):
        return {_finite(k): _finite(v) for k, v in value.items()}
    return value
