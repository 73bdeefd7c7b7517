"""Answers kept for operations whose every root field reads shared, versioned state
(a candle page: the same for every caller, and it changes only when the symbol's
market does), as a schema extension.

Invariant: a kept answer is served only while every version its resolvers read
before computing it is still current (a tick, closed candles arriving, the cache
refilling bump the symbol's version), and for at most MAX_AGE_SECONDS. Everything
before execution still runs for each request: parsing, validation, the shape limits,
the cost charged to the caller's budget, metrics. Only execution is skipped.

A root field opts in with `metadata=shared_result()`; its resolver names what it read
with `depends_on(info, current, seen)`. An operation with any other root field, a
mutation, a subscription, or an answer with errors is never kept.

    @strawberry.field(metadata={**cost(max_page=500), **shared_result()})
    async def candles(self, info: Info, ...) -> Connection[Candle]:
        seen = market.version(symbol)  # before reading
        depends_on(info, partial(market.version, symbol), seen)
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Hashable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import orjson
from graphql import (
    ExecutionResult,
    FieldNode,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    get_operation_ast,
)
from strawberry.extensions import SchemaExtension

from cryptovault.extensions.caches import Lru
from cryptovault.extensions.limits import actual_cost_memo, app_context

__all__ = ["KeptResults", "depends_on", "shared_result"]

SHARED_RESULT_KEY = "shared_result"
MAX_AGE_SECONDS = 60.0
SIZE = 256
_BACKREF = "strawberry-definition"

type Dependency = tuple[Callable[[], Hashable], Hashable]

# What the resolvers of the operation being executed read (None: not recorded). A
# context variable: a WebSocket's operations share one Context and may run at once.
_recorded: ContextVar[list[Dependency] | None] = ContextVar("recorded", default=None)


def shared_result() -> dict[str, bool]:
    """Field metadata: the field's answer is the same for every caller and depends
    only on what its resolver declares with `depends_on`."""
    return {SHARED_RESULT_KEY: True}


def depends_on(info: Any, current: Callable[[], Hashable], seen: Hashable) -> None:
    """The answer being computed used state whose version was `seen` (read before the
    state itself); it stays valid while `current()` returns the same."""
    recorded = _recorded.get()
    if recorded is not None:
        recorded.append((current, seen))


@dataclass(frozen=True, slots=True)
class _Kept:
    data: dict[str, Any]
    depends_on: tuple[Dependency, ...]
    at: float
    # Protection's actual cost of `data`, computed by the first request.
    costs: dict[str, int]

    def valid(self, now: float) -> bool:
        return now - self.at < MAX_AGE_SECONDS and all(f() == v for f, v in self.depends_on)


type _Key = tuple[int, int, int, str | None, bytes]
_kept: Lru[_Key, _Kept] = Lru(SIZE)


def keeps_answer(schema: GraphQLSchema, operation: OperationDefinitionNode) -> bool:
    """Whether `operation`'s answers are kept: a query whose every root field reads
    shared state (`shared_result`)."""
    if operation.operation is not OperationType.QUERY:
        return False
    root = schema.query_type
    assert root is not None
    for selection in operation.selection_set.selections:
        if not isinstance(selection, FieldNode):
            return False  # a fragment at the root: not worth the walk
        name = selection.name.value
        if name == "__typename":
            continue
        field = root.fields.get(name)
        definition = (field.extensions or {}).get(_BACKREF) if field else None
        metadata = getattr(definition, "metadata", None) or {}
        if not metadata.get(SHARED_RESULT_KEY):
            return False
    return True


def answer_key(
    services: object,
    schema: GraphQLSchema,
    document: object,
    operation_name: str | None,
    variables: dict[str, Any] | None,
) -> _Key | None:
    """Which kept answer an operation may be served (None: variables not JSON)."""
    try:
        frozen = orjson.dumps(variables, option=orjson.OPT_SORT_KEYS) if variables else b""
    except TypeError:
        return None
    # The services too: each app (several in one test process) has its own market.
    return (id(services), id(schema), id(document), operation_name, frozen)


def kept_answer(key: _Key) -> _Kept | None:
    """The answer kept under `key`, while it is valid."""
    kept = _kept.get(key)
    return kept if kept is not None and kept.valid(time.monotonic()) else None


@contextlib.contextmanager
def recording() -> Iterator[list[Dependency]]:
    """What the resolvers run meanwhile declare with `depends_on`."""
    recorded: list[Dependency] = []
    _recorded.set(recorded)
    try:
        yield recorded
    finally:
        _recorded.set(None)


def keep(
    key: _Key,
    result: object,
    recorded: list[Dependency],
    keep_alive: tuple[object, ...],
) -> _Kept | None:
    """Keep `result` under `key` if it is an answer without errors that declared what
    it read; `keep_alive`: the objects whose ids `key` holds."""
    if not isinstance(result, ExecutionResult) or result.errors or result.data is None:
        return None
    if not recorded:
        return None
    kept = _Kept(result.data, tuple(recorded), time.monotonic(), {})
    _kept.put(key, kept, keep=keep_alive)
    return kept


class KeptResults(SchemaExtension):
    """Last in the extension list: its `on_execute` runs after Protection's checks
    and charge, right before execution."""

    def on_execute(self) -> Iterator[None]:
        _recorded.set(None)
        actual_cost_memo.set(None)
        key = self._key()
        if key is None:
            yield
            return
        kept = kept_answer(key)
        if kept is not None:
            self.execution_context.result = ExecutionResult(data=kept.data)
            actual_cost_memo.set(kept.costs)
            yield
            return
        with recording() as recorded:
            yield
        ec = self.execution_context
        services = app_context(ec.context).services  # type: ignore[union-attr]
        kept = keep(key, ec.result, recorded, (services, ec.schema._schema, ec.graphql_document))
        if kept is not None:
            actual_cost_memo.set(kept.costs)

    def _key(self) -> _Key | None:
        ec = self.execution_context
        document = ec.graphql_document
        ctx = app_context(ec.context)
        if ctx is None or document is None:
            return None
        operation = get_operation_ast(document, ec.operation_name)
        if operation is None or not keeps_answer(ec.schema._schema, operation):
            return None
        return answer_key(
            ctx.services, ec.schema._schema, document, ec.operation_name, ec.variables
        )
