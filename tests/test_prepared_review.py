"""Adversarial review (rev2): the direct path of http/prepared.py against graphql-core."""

from __future__ import annotations

import asyncio
from typing import Any

import strawberry
from graphql import execute, parse
from strawberry.execution import optimized_is_awaitable
from strawberry.types.field import StrawberryField

from cryptovault.http.prepared import prepare


class Shouting(StrawberryField):
    """A field class of its own (Strawberry's documented way before field extensions):
    its `get_result` is what Strawberry's resolver calls."""

    def get_result(self, source: Any, info: Any, args: list[Any], kwargs: Any) -> Any:
        return str(super().get_result(source, info, args, kwargs)).upper()


CALLS: list[str] = []


def _quiet() -> str:
    return "quiet"


@strawberry.type
class Root:
    @strawberry.field
    def text(self) -> str:
        CALLS.append("text")
        return "pong"

    @strawberry.field
    def fails(self) -> str | None:
        CALLS.append("fails")
        raise ValueError("nope")

    shout: str = Shouting()(_quiet)


async def _settled(result: Any) -> Any:
    return await result if asyncio.iscoroutine(result) else result


async def _both(query: str) -> tuple[Any, Any, list[str], list[str]]:
    schema = strawberry.Schema(query=Root)
    core, executor = schema._schema, schema.execution_context_class
    document = parse(query)
    operation = document.definitions[0]
    prepared = prepare(core, document, operation, executor, False)  # type: ignore[arg-type]
    assert prepared is not None
    expected = await _settled(
        execute(
            core,
            document,
            executor_class=executor,
            is_awaitable=optimized_is_awaitable,
            operation_extensions=None,
        )
    )
    await _settled(prepared.execute(None, None, None))  # the first run makes it direct
    CALLS.clear()
    got = await _settled(prepared.execute(None, None, None))
    ran = list(CALLS)
    CALLS.clear()
    await _settled(execute(core, document, executor_class=executor, operation_extensions=None))
    return got, expected, ran, list(CALLS)


async def test_a_field_class_overriding_get_result_answers_as_graphql_core():
    got, expected, _, _ = await _both("{ shout text }")
    assert expected.data == {"shout": "QUIET", "text": "pong"}
    assert got.formatted == expected.formatted


async def test_handover_runs_each_function_once_and_answers_as_graphql_core():
    got, expected, ran, reference = await _both("{ text fails t2: text }")
    assert got.formatted == expected.formatted
    assert ran == reference == ["text", "fails", "text"]
