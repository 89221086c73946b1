"""Method classification and invalid combinations (TRUSS_CONTRACT.md §5), and constructor kwargs."""

# No `from __future__ import annotations` here: Truss reads annotations as objects,
# and string annotations are a case under test.

import inspect
from collections.abc import AsyncGenerator, Awaitable, Generator
from pathlib import Path
from typing import Any, Union

import pytest
from pydantic import BaseModel
from starlette.requests import Request

from swell.modelserver._errors import ModelDefinitionError
from swell.modelserver._methods import (
    ArgConfig,
    MethodDescriptor,
    ModelDescriptor,
    output_schema_type,
)
from swell.modelserver._secrets import LazyDataResolver, Secrets
from swell.modelserver._wrapper import prepare_init_args


class SubRequest(Request):
    pass


class Shapes:
    def none(self): ...
    def inputs(self, x): ...
    def request(self, r: Request): ...
    def sub_request(self, r: SubRequest): ...
    def both(self, x, r: Request): ...
    def string_annotation(self, r: "Request"): ...
    async def coroutine(self, x): ...
    def generator(self, x):
        yield x
    async def async_generator(self, x):
        yield x


@pytest.mark.parametrize(
    ("name", "config"),
    [("none", ArgConfig.NONE), ("inputs", ArgConfig.INPUTS_ONLY), ("request", ArgConfig.REQUEST_ONLY),
     ("sub_request", ArgConfig.REQUEST_ONLY), ("both", ArgConfig.INPUTS_AND_REQUEST),
     # Truss does not evaluate string annotations: a quoted Request is just inputs.
     ("string_annotation", ArgConfig.INPUTS_ONLY)],
)
def test_arg_config(name: str, config: ArgConfig) -> None:
    assert MethodDescriptor.of(getattr(Shapes(), name), name).arg_config is config


@pytest.mark.parametrize(
    ("name", "is_async", "is_generator"),
    [("inputs", False, False), ("coroutine", True, False), ("generator", False, True),
     ("async_generator", False, True)],
)
def test_sync_async_generator(name: str, is_async: bool, is_generator: bool) -> None:
    d = MethodDescriptor.of(getattr(Shapes(), name), name)
    assert (d.is_async, d.is_generator) == (is_async, is_generator)


def test_args_follow_the_config() -> None:
    s = Shapes()
    assert MethodDescriptor.of(s.none, "p").args(1, "req") == ()
    assert MethodDescriptor.of(s.inputs, "p").args(1, "req") == (1,)
    assert MethodDescriptor.of(s.request, "p").args(1, "req") == ("req",)
    assert MethodDescriptor.of(s.both, "p").args(1, "req") == (1, "req")


class BadTwoArgs:
    def request_first(self, r: Request, x): ...
    def unannotated_second(self, x, r): ...
    def three(self, a, b, c): ...


@pytest.mark.parametrize("name", ["request_first", "unannotated_second", "three"])
def test_bad_signatures(name: str) -> None:
    with pytest.raises(ModelDefinitionError):
        MethodDescriptor.of(getattr(BadTwoArgs(), name), name)


def _model(**methods: Any) -> object:
    return type("M", (), methods)()


def _predict(self, x): ...
def _predict_request(self, r: Request): ...
def _pre_request(self, r: Request): ...
async def _ws(self, ws): ...
def _healthy_with_arg(self, x): ...


@pytest.mark.parametrize(
    "methods",
    [
        {},  # no predict and no websocket
        {"websocket": _ws, "predict": _predict},
        {"preprocess": _predict, "predict": _predict_request},
        {"predict": _predict, "postprocess": _pre_request},
        {"predict": _predict, "is_healthy": _healthy_with_arg},
        {"websocket": lambda self, ws: None},  # not async
    ],
)
def test_invalid_combinations_fail_the_load(methods: dict[str, Any]) -> None:
    with pytest.raises(ModelDefinitionError):
        ModelDescriptor.of(_model(**methods))


def test_raw_request_mode_skips_body_parsing() -> None:
    assert ModelDescriptor.of(_model(predict=_predict_request)).skip_input_parsing
    assert not ModelDescriptor.of(_model(predict=_predict, preprocess=_pre_request)).skip_input_parsing
    assert not ModelDescriptor.of(_model(predict=_predict)).skip_input_parsing


def test_openai_endpoints_and_pydantic_input_are_found() -> None:
    import pydantic

    class In(pydantic.BaseModel):
        a: int

    def predict(self, x: In): ...

    d = ModelDescriptor.of(_model(predict=predict, chat_completions=_predict))
    assert d.input_type is In
    assert set(d.endpoints) == {"chat_completions"}


class NoArgs:
    def __init__(self): ...


class ConfigOnly:
    def __init__(self, config): ...


class Everything:
    def __init__(self, **kwargs): ...


@pytest.mark.parametrize(
    ("cls", "names"),
    [(NoArgs, set()), (ConfigOnly, {"config"}),
     (Everything, {"config", "data_dir", "secrets", "lazy_data_resolver", "environment"})],
)
def test_constructor_gets_only_declared_kwargs(cls: type, names: set[str]) -> None:
    kwargs = prepare_init_args(cls, {"k": 1}, Path("data"), Secrets({}), LazyDataResolver(Path("data")))
    assert set(kwargs) == names
    if "environment" in kwargs:
        assert kwargs["environment"] is None
    if "data_dir" in kwargs:
        assert kwargs["data_dir"] == Path("data") and not kwargs["data_dir"].is_absolute()
    inspect.signature(cls).bind(**kwargs)


# /schema's output part, as Truss's _parse_output_type reads return annotations
# (truss/templates/server/_truss_common/schema.py; its test_schema.py has these cases).
# typing.Union, not X | Y: Truss tests get_origin(...) == Union, which X | Y is not.


class Out(BaseModel):
    output: str


class Out2(BaseModel):
    output2: str


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [
        (Out, (Out, False)),
        (Generator[str, None, None], (None, True)),
        (AsyncGenerator[str, None], (None, True)),
        (Awaitable[Out], (Out, False)),
        (Union[Out, Generator[str, None, None]], (Out, True)),  # noqa: UP007
        (Union[Awaitable[Out], AsyncGenerator[str, None]], (Out, True)),  # noqa: UP007
        (Union[Awaitable[str], AsyncGenerator[str, None]], None),  # noqa: UP007
        (Union[str, int], None),  # noqa: UP007
        (Out | Generator[str, None, None], None),  # Truss reads only typing.Union
        (Union[Out, Out2, Generator[str, None, None]], None),  # noqa: UP007
        (Awaitable[str], None),
        (str, None),
        (dict[str, Any], None),
    ],
)
def test_a_return_annotation_gives_the_schema_truss_gives(annotation: Any, expected: Any) -> None:
    assert output_schema_type(annotation) == expected
