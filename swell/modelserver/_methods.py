"""How the Truss server classifies a model's methods (TRUSS_CONTRACT.md §5).

Pure: inspects signatures, calls nothing.
"""

from __future__ import annotations

import collections.abc
import enum
import inspect
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from swell.modelserver._errors import ModelDefinitionError


class ArgConfig(enum.Enum):
    NONE = enum.auto()
    INPUTS_ONLY = enum.auto()
    REQUEST_ONLY = enum.auto()
    INPUTS_AND_REQUEST = enum.auto()


def _is_loaded_subclass(annotation: Any, module_name: str, class_name: str) -> bool:
    """True if ``annotation`` subclasses ``module_name.class_name``.

    Looks the module up in ``sys.modules`` instead of importing it: an
    annotation can only be that class if the model already imported it.
    """
    module = sys.modules.get(module_name)
    if module is None:
        return False
    try:
        return issubclass(annotation, getattr(module, class_name))
    except TypeError:
        return False


def is_request_type(annotation: Any) -> bool:
    """True for ``starlette.requests.Request`` or a subclass."""
    return _is_loaded_subclass(annotation, "starlette.requests", "Request")


def is_pydantic_model(annotation: Any) -> bool:
    return _is_loaded_subclass(annotation, "pydantic", "BaseModel")


def _origin_is(annotation: Any, *bases: type) -> bool:
    origin = typing.get_origin(annotation)
    return isinstance(origin, type) and issubclass(origin, bases)


_STREAMS = (collections.abc.Generator, collections.abc.AsyncGenerator, collections.abc.Iterator,
            collections.abc.AsyncIterator)


def _awaited_model(annotation: Any) -> Any:
    """``M`` for ``Awaitable[M]`` with ``M`` a pydantic model, else None."""
    args = typing.get_args(annotation)
    return args[0] if len(args) == 1 and is_pydantic_model(args[0]) else None


def output_schema_type(annotation: Any) -> tuple[Any, bool] | None:
    """(pydantic output model or None, supports streaming) from a return annotation, as
    Truss's ``_parse_output_type`` reads it; None when it says neither."""
    if is_pydantic_model(annotation):
        return annotation, False
    if _origin_is(annotation, *_STREAMS):
        return None, True
    if _origin_is(annotation, collections.abc.Awaitable):
        model = _awaited_model(annotation)
        return (model, False) if model is not None else None
    if typing.get_origin(annotation) is typing.Union:  # Union[M, Generator[...]] (Awaitable[M] when async)
        args = typing.get_args(annotation)
        models = [_awaited_model(a) if _origin_is(a, collections.abc.Awaitable) else a for a in args
                  if _origin_is(a, collections.abc.Awaitable) or is_pydantic_model(a)]
        streams = [a for a in args if _origin_is(a, *_STREAMS)]
        if len(args) == 2 and len(models) == 1 and len(streams) == 1 and models[0] is not None:
            return models[0], True
    return None


def arg_config(method: Callable[..., Any], name: str) -> ArgConfig:
    signature = inspect.signature(method)
    params = list(signature.parameters.values())
    if not params:
        return ArgConfig.NONE
    if len(params) == 1:
        return ArgConfig.REQUEST_ONLY if is_request_type(params[0].annotation) else ArgConfig.INPUTS_ONLY
    if len(params) == 2:
        first, second = params
        if is_request_type(first.annotation):
            raise ModelDefinitionError(
                f"`{name}` method with two arguments is not allowed to have request as first "
                f"argument, request must be second. Got: {signature}"
            )
        if not is_request_type(second.annotation):
            raise ModelDefinitionError(
                f"`{name}` method with two arguments must have request as second argument "
                f"(type annotated). Got: {signature} "
            )
        return ArgConfig.INPUTS_AND_REQUEST
    raise ModelDefinitionError(f"`{name}` method cannot have more than two arguments. Got: {signature}")


@dataclass(frozen=True)
class MethodDescriptor:
    name: str
    method: Callable[..., Any]
    is_async: bool  # a coroutine function: awaited on the event loop
    is_generator: bool  # a (async) generator function: called, never awaited
    arg_config: ArgConfig

    @classmethod
    def of(cls, method: Callable[..., Any], name: str) -> MethodDescriptor:
        return cls(
            name=name,
            method=method,
            is_async=inspect.iscoroutinefunction(method),
            is_generator=inspect.isgeneratorfunction(method) or inspect.isasyncgenfunction(method),
            arg_config=arg_config(method, name),
        )

    def args(self, inputs: Any, request: Any) -> tuple[Any, ...]:
        config = self.arg_config
        if config is ArgConfig.INPUTS_ONLY:
            return (inputs,)
        if config is ArgConfig.NONE:
            return ()
        if config is ArgConfig.REQUEST_ONLY:
            return (request,)
        return (inputs, request)


OPENAI_METHODS = ("chat_completions", "completions", "embeddings", "messages", "responses")


@dataclass(frozen=True)
class ModelDescriptor:
    predict: MethodDescriptor | None
    preprocess: MethodDescriptor | None
    postprocess: MethodDescriptor | None
    is_healthy: MethodDescriptor | None
    setup_environment: MethodDescriptor | None
    websocket: MethodDescriptor | None
    endpoints: dict[str, MethodDescriptor]  # the OpenAI-style methods the model has
    input_type: Any  # a pydantic model class the body is validated into, or None
    output_type: Any = None  # a pydantic model class the chain is annotated to return, or None
    supports_streaming: bool | None = None  # the return annotation says it may stream (/schema)

    @cached_property
    def skip_input_parsing(self) -> bool:
        """A request-only predict (and request-only or no preprocess) reads the raw request."""
        return bool(
            self.predict
            and self.predict.arg_config is ArgConfig.REQUEST_ONLY
            and (not self.preprocess or self.preprocess.arg_config is ArgConfig.REQUEST_ONLY)
        )

    @cached_property
    def needs_request(self) -> bool:
        """Whether any step of the predict chain takes the starlette ``Request``."""
        return any(
            d is not None and d.arg_config in (ArgConfig.REQUEST_ONLY, ArgConfig.INPUTS_AND_REQUEST)
            for d in (self.preprocess, self.predict, self.postprocess)
        )

    @classmethod
    def of(cls, model: Any) -> ModelDescriptor:
        def get(name: str) -> MethodDescriptor | None:
            return MethodDescriptor.of(getattr(model, name), name) if hasattr(model, name) else None

        endpoints = {name: d for name in OPENAI_METHODS if (d := get(name)) is not None}
        setup = get("setup_environment")
        is_healthy = get("is_healthy")
        if is_healthy and is_healthy.arg_config is not ArgConfig.NONE:
            raise ModelDefinitionError("`is_healthy` must have only one argument: `self`.")
        websocket = get("websocket")
        predict = get("predict")
        preprocess = get("preprocess")
        postprocess = get("postprocess")
        input_type = output_type = supports_streaming = None
        if websocket and (predict or preprocess or postprocess):
            raise ModelDefinitionError(
                "Truss model cannot have both `websocket` and any of `predict`, `preprocess`, "
                "or `postprocess methods."
            )
        if not (websocket or predict):
            raise ModelDefinitionError("Truss model must have a `predict` or `websocket` method.")
        if websocket:
            if websocket.arg_config is not ArgConfig.INPUTS_ONLY:
                raise ModelDefinitionError("`websocket` must have only one argument: `websocket`.")
            if not websocket.is_async:
                raise ModelDefinitionError("`websocket` endpoints must be async function definitions.")
        else:
            assert predict is not None
            if preprocess and predict.arg_config is ArgConfig.REQUEST_ONLY:
                raise ModelDefinitionError(
                    "When using `preprocess`, the predict method cannot only have the request "
                    "argument (because the result of `preprocess` would be  discarded)."
                )
            if postprocess and postprocess.arg_config is ArgConfig.REQUEST_ONLY:
                raise ModelDefinitionError(
                    "The `postprocess` method cannot only have the request argument (because the "
                    "result of `predict` would be discarded)."
                )
            first = (preprocess or predict).method
            params = list(inspect.signature(first).parameters.values())
            if params and is_pydantic_model(params[0].annotation):
                input_type = params[0].annotation
            returned = inspect.signature((postprocess or predict).method).return_annotation
            parsed = output_schema_type(returned) if returned is not inspect.Signature.empty else None
            if parsed is not None:
                output_type, supports_streaming = parsed
        return cls(
            predict=predict,
            preprocess=preprocess,
            postprocess=postprocess,
            is_healthy=is_healthy,
            setup_environment=setup,
            websocket=websocket,
            endpoints=endpoints,
            input_type=input_type,
            output_type=output_type,
            supports_streaming=supports_streaming,
        )
