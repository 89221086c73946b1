"""The replica's ASGI app: Truss's routes and predict chain, hand-written for speed.

No framework sits between uvicorn and the model: one path dispatch, the body
decoded once, the chain run, one encode. starlette is imported only when a model
asks for a ``Request`` or returns a ``Response`` (TRUSS_CONTRACT.md §5-12).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import sys
import threading
import types
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, cast

from swell.http import JSON_HEADERS as _JSON
from swell.http import ClientDisconnected, Receive, Scope, Send, read_body, respond, websocket_refusal
from swell.modelserver import _codec
from swell.modelserver._errors import (
    CLIENT_ERROR,
    DOWNSTREAM_ERROR,
    MODEL_ERROR_MESSAGE,
    ClientGone,
    ModelMethodNotImplemented,
    ModelNotReady,
    UserCodeError,
    compact_json,
    error_headers,
    error_reply,
    http_exception_class,
)
from swell.modelserver._methods import MethodDescriptor, ModelDescriptor
from swell.modelserver._workers import ContextWorkerThreads, WorkerThreads
from swell.modelserver._wrapper import ModelWrapper, Status, filter_traceback

if TYPE_CHECKING:
    from swell.modelserver.tracing import ReplicaTracing

logger = logging.getLogger("swell.modelserver")


# anyio's default limiter, which Truss's sync model code runs under.
WORKER_THREADS = 40
MODEL_NAME = "model"

_BINARY = [(b"content-type", b"application/octet-stream")]
_TRUE = b"true"
_EMPTY_OBJECT = b"{}"
_SENTINEL = object()
# Truss's answer to a websocket on a model without one (its close code 1003, "unsupported data").
NO_WEBSOCKET = "WebSocket is not implemented on this deployment: its model has no `async def websocket`."
_OPENAI_ROUTES = {
    "/v1/chat/completions": "chat_completions",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
    "/v1/messages": "messages",
    "/v1/responses": "responses",
}


class StreamAborted(Exception):
    """A stream stalled past ``streaming_read_timeout`` after its 200 went out."""


def _client_gone(receive: Receive) -> bool:
    """Whether uvicorn saw the connection drop: its receive is a bound method of the
    request cycle, which carries the flag. Checking it costs an attribute lookup."""
    return getattr(getattr(receive, "__self__", None), "disconnected", False) is True


def _response_class(name: str) -> Any:
    module = sys.modules.get("starlette.responses")
    return getattr(module, name) if module is not None else None


_GENERATORS = (types.GeneratorType, types.AsyncGeneratorType)
# What a model returns most: neither a generator nor a starlette Response, so
# the checks for those are skipped.
_PLAIN_RESULTS = frozenset((dict, list, str, int, float, bool, type(None)))


class _Slots(asyncio.Semaphore):
    """asyncio's semaphore, with a synchronous ``take`` of a free slot when
    nobody waits for one: an ``acquire`` without its coroutine."""

    def take(self) -> bool:
        if self._value > 0 and not self._waiters:  # what acquire() takes at once
            self._value -= 1
            return True
        return False


def _is_generator(value: Any) -> bool:
    return isinstance(value, _GENERATORS)


async def _send_error(send: Send, exc: BaseException) -> None:
    status, body, headers = error_reply(exc)
    await respond(send, status, body, [*_JSON, *headers])


async def _send_http_error(send: Send, status: int, detail: str) -> None:
    """What Truss answers for a ``fastapi.HTTPException`` its own routes raise."""
    await respond(send, status, compact_json({"error": detail}), [*_JSON, *error_headers(DOWNSTREAM_ERROR)])


def _binary(scope: Scope) -> bool:
    """Whether the request's content-type says msgpack (``_codec.is_binary``). The
    header is read as bytes, and JSON, the usual, is told at a glance without decoding."""
    for key, value in scope["headers"]:
        if key == b"content-type":
            return value != b"application/json" and _codec.is_binary(value.decode("latin-1"))
    return False


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key == name:
            return cast(str, value.decode("latin-1"))
    return ""


async def _close_websocket(socket: Any, code: int, reason: str | None = None) -> None:
    """Close unless the model or the client closed it already (Truss's ``_safe_close_websocket``)."""
    try:
        await socket.close(code=code, reason=reason)
    except (RuntimeError, OSError) as exc:
        logger.debug("Duplicate close of websocket: `%s`.", exc)


def _chunk_bytes(chunk: Any) -> bytes:
    if isinstance(chunk, (bytes, bytearray, memoryview)):
        return bytes(chunk)
    return str(chunk).encode()


class ReplicaApp:
    """ASGI callable serving one loaded model."""

    def __init__(self, wrapper: ModelWrapper, tracing: ReplicaTracing | None = None) -> None:
        self.wrapper = wrapper
        self.workers = WorkerThreads(WORKER_THREADS)
        self._semaphore: _Slots | None = None
        self._background: set[asyncio.Task[Any]] = set()
        if tracing is not None:
            # Each model call in a span, current in the model's own threads too; with
            # tracing off nothing here runs per request (swell/modelserver/tracing.py).
            self.predict = tracing.traced(self.predict)  # type: ignore[method-assign,assignment]
            self.workers = ContextWorkerThreads(WORKER_THREADS)

    @property
    def semaphore(self) -> _Slots:
        # Created lazily so it binds to the server's running loop.
        if self._semaphore is None:
            self._semaphore = _Slots(self.wrapper.predict_concurrency)
        return self._semaphore

    # ------------------------------------------------------------ dispatch

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await self.websocket(scope, receive, send)
            elif scope["type"] == "lifespan":
                await self._lifespan(receive, send)
            return
        path: str = scope["path"]
        method: str = scope["method"]
        if path.startswith("/v1/models/"):
            rest = path[11:]
            if rest.endswith((":predict", ":predict_binary")):
                if method == "POST":
                    return await self.predict(scope, receive, send)
            elif rest.endswith("/loaded"):
                if method == "GET":
                    return await self.truss_loaded(send)
            elif rest.endswith("/schema"):
                if method == "GET":
                    return await self.schema(send)
            elif rest and "/" not in rest:
                if method == "GET":
                    return await self.truss_ready(send)
            else:
                return await self._not_found(send)
            return await self._method_not_allowed(send)
        if path == "/health/ready":
            return await self.health_ready(send)
        if path == "/health/live":
            return await respond(send, 200, b'{"status":"live"}', _JSON)
        if path == "/":
            return await respond(send, 200, _TRUE, _JSON)
        if path == "/invocations":
            if method == "POST":
                return await self.predict(scope, receive, send)
            return await self._method_not_allowed(send)
        if path == "/ping":
            return await self.truss_loaded(send)
        endpoint = _OPENAI_ROUTES.get(path)
        if endpoint is not None:
            if method == "POST":
                return await self.predict(scope, receive, send, endpoint=endpoint)
            return await self._method_not_allowed(send)
        return await self._not_found(send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _not_found(self, send: Send) -> None:
        await respond(send, 404, b'{"detail":"Not Found"}', _JSON)

    async def _method_not_allowed(self, send: Send) -> None:
        await respond(send, 405, b'{"detail":"Method Not Allowed"}', _JSON)

    # ------------------------------------------------------------ health

    def _not_ready(self) -> ModelNotReady:
        if self.wrapper.status is Status.FAILED:
            return ModelNotReady(MODEL_NAME, "Model load failed.")
        return ModelNotReady(MODEL_NAME)

    async def health_ready(self, send: Send) -> None:
        wrapper = self.wrapper
        if wrapper.status is Status.READY:
            return await respond(send, 200, b'{"status":"ready"}', _JSON)
        body: dict[str, Any] = {"status": wrapper.status.value}
        if wrapper.status is Status.FAILED:
            body["reason"] = "load failed"
            lines = (wrapper.error or "").strip().splitlines()
            body["error"] = lines[-1] if lines else ""
        else:
            body["reason"] = "model is loading" if wrapper.status is Status.LOADING else "model load has not started"
        await respond(send, 503, compact_json(body), _JSON)

    async def truss_loaded(self, send: Send) -> None:
        if self.wrapper.status is Status.READY:
            return await respond(send, 200, _EMPTY_OBJECT, _JSON)
        await _send_error(send, self._not_ready())

    async def truss_ready(self, send: Send) -> None:
        wrapper = self.wrapper
        descriptor = wrapper.descriptor
        if wrapper.status is Status.READY and descriptor is not None and descriptor.is_healthy is not None:
            try:
                if descriptor.is_healthy.is_async:
                    healthy = await wrapper.model.is_healthy()
                else:
                    healthy = await self.workers.run(wrapper.model.is_healthy)
            except Exception as exc:
                healthy = False
                logger.error("Exception while checking if model is healthy: %s", exc,
                             exc_info=filter_traceback(exc, wrapper.model_file_name))
            if healthy is not None and not healthy:
                logger.warning("Health check failed.")
                return await _send_error(send, ModelNotReady(MODEL_NAME))
        await self.truss_loaded(send)

    async def schema(self, send: Send) -> None:
        descriptor = self.wrapper.descriptor
        if self.wrapper.status is not Status.READY or descriptor is None:
            return await _send_http_error(send, 503, "Schema not available, please try again later.")
        if descriptor.input_type is None and descriptor.supports_streaming is None:
            return await _send_http_error(send, 404, "No schema found")
        schema = {
            "input_schema": descriptor.input_type.model_json_schema() if descriptor.input_type else None,
            "output_schema": descriptor.output_type.model_json_schema() if descriptor.output_type else None,
            "supports_streaming": descriptor.supports_streaming,
        }
        await respond(send, 200, compact_json(schema), _JSON)

    # ------------------------------------------------------------ websocket

    async def websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Truss's ``WS /v1/websocket``: accept, hand the model a starlette ``WebSocket``,
        close 1000 when it returns, 1011 when it raises (TRUSS_CONTRACT.md §12)."""
        if scope["path"] != "/v1/websocket":
            return await respond(websocket_refusal(scope, send), 404, b'{"detail":"Not Found"}', _JSON)
        wrapper = self.wrapper
        descriptor = wrapper.descriptor
        if wrapper.status is not Status.READY or descriptor is None:
            return await _send_error(websocket_refusal(scope, send), self._not_ready())
        from starlette.websockets import WebSocket, WebSocketDisconnect

        socket = WebSocket(scope, receive, send)  # type: ignore[arg-type]  # ASGI's send, typed narrower here
        try:
            await socket.accept()
            if descriptor.websocket is None:
                # Truss accepts, then closes with its reason: a refused upgrade cannot say why.
                logger.error("%s", NO_WEBSOCKET)
                return await _close_websocket(socket, 1003, NO_WEBSOCKET)
            await wrapper.model.websocket(socket)
        except (WebSocketDisconnect, OSError) as exc:  # OSError: uvicorn's ClientDisconnected
            logger.info("Client terminated websocket connection: `%s`.", exc)
            return
        except Exception as exc:
            self._log_user_error(exc)
            return await _close_websocket(socket, 1011, MODEL_ERROR_MESSAGE)
        await _close_websocket(socket, 1000)

    # ------------------------------------------------------------ predict chain

    async def predict(self, scope: Scope, receive: Receive, send: Send, endpoint: str | None = None) -> None:
        wrapper = self.wrapper
        descriptor = wrapper.descriptor
        if wrapper.status is not Status.READY or descriptor is None:
            return await _send_error(send, self._not_ready())
        try:
            if endpoint is not None and endpoint not in descriptor.endpoints:
                raise ModelMethodNotImplemented(f"`{endpoint}` must only be called if model has it.")
            binary = _binary(scope)
            body: bytes | None = None
            inputs: Any = None
            if endpoint is not None or not descriptor.skip_input_parsing:
                try:
                    body = await read_body(scope, receive)
                except ClientDisconnected:
                    raise ClientGone("Client disconnected while reading request.") from None
                inputs = self._decode(body, binary, descriptor)
            request = self._request(scope, receive, body) if descriptor.needs_request or endpoint else None
            if endpoint is not None:
                result = await self._call(descriptor.endpoints[endpoint], inputs, request, receive)
                if _is_generator(result):
                    return await self._generator_reply(scope, receive, send, result, None)
            else:
                result = await self._chain(scope, receive, send, descriptor, inputs, request)
                if result is _SENTINEL:
                    return  # already answered (stream or Response)
            await self._reply(scope, receive, send, result, binary)
        except StreamAborted:
            raise  # the status line is out; uvicorn drops the connection
        except Exception as exc:
            await _send_error(send, exc)

    def _decode(self, body: bytes, binary: bool, descriptor: ModelDescriptor) -> Any:
        if binary:
            inputs = _codec.decode_msgpack(body)
            if descriptor.input_type is not None:
                return _codec.validate_input(descriptor.input_type, None, inputs)
            return inputs
        if descriptor.input_type is not None:
            return _codec.validate_input(descriptor.input_type, body)
        return _codec.decode_json(body)

    def _request(self, scope: Scope, receive: Receive, body: bytes | None) -> Any:
        from starlette.requests import Request

        request = Request(scope, receive)
        if body is not None:
            request._body = body  # the body was read already; starlette serves it from here
        request.state.watch_disconnect = self._disconnect_watcher(request)
        return request

    def _disconnect_watcher(self, request: Any) -> Callable[[], Any]:
        """Truss's ``request.state.watch_disconnect()``: a context manager yielding a
        threading.Event set once the client has gone, usable from model threads."""
        loop = asyncio.get_running_loop()

        @contextlib.contextmanager
        def watch_disconnect() -> Iterator[threading.Event]:
            disconnected = threading.Event()

            async def watch() -> None:
                while not await request.is_disconnected():
                    await asyncio.sleep(1)
                disconnected.set()

            future = asyncio.run_coroutine_threadsafe(watch(), loop)
            try:
                yield disconnected
            finally:
                future.cancel()

        return watch_disconnect

    async def _call(self, descriptor: MethodDescriptor, inputs: Any, request: Any, receive: Receive) -> Any:
        """Run one user step; its exceptions become UserCodeError (500), HTTPException passes."""
        if _client_gone(receive):
            logger.warning("Client disconnected, skipping `%s`.", descriptor.name)
            raise ClientGone(f"Client disconnected, skipping `{descriptor.name}`.")
        args = descriptor.args(inputs, request)
        try:
            if descriptor.is_generator:
                return descriptor.method(*args)
            if descriptor.is_async:
                return await descriptor.method(*args)
            return await self.workers.submit(descriptor.method, *args)
        except Exception as exc:
            self._log_user_error(exc)
            http_exc = http_exception_class()
            if http_exc is not None and isinstance(exc, http_exc):
                raise
            raise UserCodeError(str(exc)) from exc

    def _log_user_error(self, exc: BaseException) -> None:
        http_exc = http_exception_class()
        message = "Model raised HTTPException" if http_exc and isinstance(exc, http_exc) else MODEL_ERROR_MESSAGE
        logger.error(message, exc_info=filter_traceback(exc, self.wrapper.model_file_name))

    def _definition_error(self, message: str) -> UserCodeError:
        # Raised inside Truss's user-code interceptor, so answered as 500, not 412.
        logger.error("%s: %s", MODEL_ERROR_MESSAGE, message)
        return UserCodeError(message)

    async def _chain(self, scope: Scope, receive: Receive, send: Send, descriptor: ModelDescriptor,
                     inputs: Any, request: Any) -> Any:
        """preprocess -> [semaphore] predict [/semaphore] -> postprocess."""
        if descriptor.preprocess is not None:
            inputs = await self._call(descriptor.preprocess, inputs, request, receive)
        semaphore = self.semaphore
        if not semaphore.take():
            await semaphore.acquire()
        release_now = True
        try:
            assert descriptor.predict is not None
            result = await self._call(descriptor.predict, inputs, request, receive)
            if type(result) in _PLAIN_RESULTS:
                pass
            elif _is_generator(result):
                if descriptor.postprocess is not None:
                    raise self._definition_error(
                        "If the predict function returns a generator (streaming), you cannot use "
                        "postprocessing. Include all processing in the predict method.")
                release_now = False  # the stream releases it when the generator is exhausted
                await self._generator_reply(scope, receive, send, result, semaphore.release)
                return _SENTINEL
            elif (response_cls := _response_class("Response")) is not None and isinstance(result, response_cls):
                if descriptor.postprocess is not None:
                    raise self._definition_error(
                        "If the predict function returns a response object, you cannot use postprocessing.")
                streaming_cls = _response_class("StreamingResponse")
                if isinstance(result, streaming_cls):
                    release_now = False  # held until the response has been sent
                    try:
                        await self._send_response(scope, receive, send, result)
                    finally:
                        semaphore.release()
                    return _SENTINEL
                semaphore.release()
                release_now = False
                await self._send_response(scope, receive, send, result)
                return _SENTINEL
        finally:
            if release_now:
                semaphore.release()
        if descriptor.postprocess is not None:
            result = await self._call(descriptor.postprocess, result, request, receive)
        return result

    async def _send_response(self, scope: Scope, receive: Receive, send: Send, response: Any) -> None:
        if response.status_code >= 300:
            for key, value in error_headers(CLIENT_ERROR):
                response.headers[key.decode()] = value.decode()
        await response(scope, receive, send)

    async def _reply(self, scope: Scope, receive: Receive, send: Send, result: Any, binary: bool) -> None:
        if type(result) not in _PLAIN_RESULTS:
            if _is_generator(result):  # postprocess returned a generator
                return await self._generator_reply(scope, receive, send, result, None)
            response_cls = _response_class("Response")
            if response_cls is not None and isinstance(result, response_cls):
                return await self._send_response(scope, receive, send, result)
        if binary:
            body = _codec.encode_msgpack(result)
            return await respond(send, 200, body, _BINARY)
        await respond(send, 200, _codec.encode_json(result), _JSON)

    # ------------------------------------------------------------ streaming

    async def _generator_reply(self, scope: Scope, receive: Receive, send: Send, generator: Any,
                               release: Callable[[], None] | None) -> None:
        accept = _header(scope, b"accept")
        if accept == "application/json" and "openai" not in _header(scope, b"user-agent").lower():
            try:
                text = await self._gather(generator)
            finally:
                if release is not None:
                    release()
            binary = _binary(scope)
            return await self._reply(scope, receive, send, text, binary)
        await self._stream(receive, send, generator, release)

    async def _gather(self, generator: Any) -> str:
        if inspect.isasyncgen(generator):
            chunks = [_chunk_bytes(c) async for c in generator]
        else:
            chunks = await self.workers.run(lambda: [_chunk_bytes(c) for c in generator])
        return b"".join(chunks).decode()

    async def _produce(self, generator: Any, queue: asyncio.Queue[Any]) -> None:
        """Pull the generator as fast as it yields, whatever the client's pace."""
        try:
            if inspect.isasyncgen(generator):
                async for chunk in generator:
                    queue.put_nowait(chunk)
            else:
                while True:
                    chunk = await self.workers.run(next, generator, _SENTINEL)
                    if chunk is _SENTINEL:
                        break
                    queue.put_nowait(chunk)
        except Exception as exc:
            logger.error("Exception while generating streamed response: %s", exc,
                         exc_info=filter_traceback(exc, self.wrapper.model_file_name))
        finally:
            queue.put_nowait(_SENTINEL)

    async def _stream(self, receive: Receive, send: Send, generator: Any,
                      release: Callable[[], None] | None) -> None:
        queue: asyncio.Queue[Any] = asyncio.Queue()
        producer = asyncio.get_running_loop().create_task(self._produce(generator, queue))
        self._background.add(producer)
        producer.add_done_callback(self._background.discard)
        if release is not None:
            # The predict slot frees when the generator is exhausted, not when the client has read all.
            producer.add_done_callback(lambda _: release())
        await send({"type": "http.response.start", "status": 200, "headers": _BINARY})
        timeout = self.wrapper.streaming_read_timeout
        while True:
            try:
                chunk = await asyncio.wait_for(queue.get(), timeout)
            except TimeoutError:
                # Abort the connection: a clean end would pass a cut stream off as complete.
                raise StreamAborted(f"no stream chunk within streaming_read_timeout={timeout:g} s") from None
            if chunk is _SENTINEL:
                break
            if _client_gone(receive):
                continue  # drain; the producer keeps running as in Truss
            await send({"type": "http.response.body", "body": _chunk_bytes(chunk), "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
