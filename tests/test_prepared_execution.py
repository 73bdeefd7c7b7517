"""A prepared execution (cryptovault/http/prepared.py) answers exactly what
graphql-core's `execute` does for the same document, variables and context: data,
errors with their messages, paths and locations, null propagation, variable coercion
errors (with and without suggestions), directives, fragments, async resolvers; and
again on the next request, from what it kept of the first. Plain root fields (run
without graphql-core's per-field machinery) are compared case by case: values of each
leaf type, nulls, non-null violations, raised and returned errors, values a type
refuses, awaitables, and the fields that must take the executor's own methods."""

from __future__ import annotations

import asyncio
import enum
import inspect
from typing import Any

import pytest
import strawberry
from graphql import execute, parse, validate
from strawberry.execution import optimized_is_awaitable
from strawberry.scalars import JSON

from cryptovault.http.prepared import prepare
from cryptovault.resolvers.context import Context
from cryptovault.schema import build_schema
from tests.conftest import tick

CASES: list[tuple[str, dict[str, Any] | None]] = [
    ("{ ping }", None),
    ("{ ping ping __typename }", None),
    ('{ a: prices(symbols: ["BTC", "ETH"]) { symbol price } b: ping }', None),
    ('{ prices(symbols: ["NOPE"]) { symbol } }', None),  # a field error, nulled up
    ('{ asset(symbol: "NOPE") { symbol } ping }', None),
    ("{ assets { symbol price { price high24h } } }", None),
    ("query($s: [String!]) { prices(symbols: $s) { symbol bid } }", {"s": ["btc"]}),
    ("query($s: [String!]) { prices(symbols: $s) { symbol bid } }", {"s": [5]}),
    ("query($s: [String!]) { prices(symbols: $s) { symbol bid } }", {"s": ["BTC", "NOPE"]}),
    ("query($s: [String!]) { prices(symbols: $s) { symbol bid } }", None),
    ("query($s: String!) { asset(symbol: $s) { symbol } }", {}),
    ("query($s: String!) { asset(symbol: $s) { symbl: symbol } }", {"s": {"x": 1}}),
    ("query($x: Boolean!) { ping prices @skip(if: $x) { symbol } }", {"x": True}),
    ("query($x: Boolean!) { ping prices @skip(if: $x) { symbol } }", {"x": False}),
    ("query($x: Boolean!) { ...F @include(if: $x) } fragment F on Query { ping }", {"x": False}),
    (
        "{ ...P prices { ... on Price { price } } } fragment P on Query { prices { symbol } }",
        None,
    ),
    (
        'query($c: String) { candles(symbol: "BTC", interval: ONE_MINUTE, first: 2, after: $c)'
        " { edges { node { close } } } }",
        {"c": "not a cursor"},
    ),
    (
        '{ candles(symbol: "BTC", interval: ONE_MINUTE, first: 2) { edges { node { close } } '
        "pageInfo { hasNextPage } } }",
        None,
    ),
    ("{ account { __typename } }", None),  # needs a viewer: UNAUTHENTICATED
]


async def _settled(result: Any) -> Any:
    return await result if inspect.isawaitable(result) else result


@pytest.mark.parametrize("hide", [False, True])
async def test_a_prepared_execution_answers_as_graphql_core(services, hide):
    services.market.apply(tick("BTC", "100.00"))
    services.market.apply(tick("ETH", "10.00"))
    schema = build_schema()
    core, executor = schema._schema, schema.execution_context_class
    compared = 0
    prepared_for: dict[str, Any] = {}
    # Twice over, a document's cases one after the other (variables that skip a field,
    # then keep it; an error, then none): each from what the earlier ones kept.
    for query, variables in CASES + CASES:
        document, prepared = prepared_for.get(query, (None, None))
        if prepared is None:
            document = parse(query)
            assert validate(core, document) == [], query
            operation = document.definitions[0]
            prepared = prepare(core, document, operation, executor, hide)  # type: ignore[arg-type]
            assert prepared is not None, query
            prepared_for[query] = (document, prepared)
        context = Context(services, None)  # type: ignore[arg-type]
        expected = await _settled(
            execute(
                core,
                document,  # type: ignore[arg-type]
                context_value=context,
                variable_values=variables,
                executor_class=executor,
                is_awaitable=optimized_is_awaitable,
                hide_suggestions=hide,
                operation_extensions=None,
            )
        )
        got = await _settled(prepared.execute(Context(services, None), variables, None))  # type: ignore[arg-type]
        assert got.formatted == expected.formatted, (query, variables)
        assert [e.original_error.__class__ for e in got.errors or ()] == [
            e.original_error.__class__ for e in expected.errors or ()
        ], query
        compared += 1
    shared = sum(p._shared for _, p in prepared_for.values())
    assert compared == 2 * len(CASES)
    assert 0 < shared < len(prepared_for)  # documents with directives collect fields each time


def test_what_it_does_not_cover_takes_graphql_core():
    schema = build_schema()
    core, executor = schema._schema, schema.execution_context_class

    class Unknown(executor):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.extra_state: list[Any] = []

    document = parse("{ ping }")
    operation = document.definitions[0]
    assert prepare(core, document, operation, executor, False) is not None  # type: ignore[arg-type]
    assert prepare(core, document, operation, Unknown, False) is None  # type: ignore[arg-type]


# -- Plain root fields (`_RootField`) against graphql-core, case by case ------


@strawberry.enum
class Side(enum.Enum):
    BUY = "buy"


@strawberry.interface
class Named:
    name: str


@strawberry.type
class Thing(Named):
    size: int


class OddOnly(strawberry.BasePermission):
    message = "Only on odd requests"

    def has_permission(self, source: Any, info: strawberry.Info, **kwargs: Any) -> bool:
        return bool(info.context["n"] % 2)


def _outside() -> str:
    return "outside"


async def _soon() -> str:
    await asyncio.sleep(0)
    return "soon"


@strawberry.type
class Plain:
    outside: str = strawberry.field(resolver=_outside)

    @strawberry.field(permission_classes=[OddOnly])
    def guarded(self) -> str:
        return "let in"

    @strawberry.field
    def text(self) -> str:
        return "pong"

    @strawberry.field
    def maybe(self) -> str | None:
        return None

    @strawberry.field
    def must(self) -> str:
        return None  # type: ignore[return-value]  # a non-null violation

    @strawberry.field
    def fails(self) -> str | None:
        raise ValueError("nope")

    @strawberry.field
    def fails_non_null(self) -> str:
        raise ValueError("nope, and not null")

    @strawberry.field
    def error_value(self) -> str | None:
        return ValueError("returned, not raised")  # type: ignore[return-value]

    @strawberry.field
    def number(self) -> int:
        return 7

    @strawberry.field
    def too_big(self) -> int | None:
        return 2**40  # Int cannot represent it: a field error

    @strawberry.field
    def too_big_non_null(self) -> int:
        return -(2**40)

    @strawberry.field
    def not_text(self) -> str | None:
        return {"a": 1}  # type: ignore[return-value]

    @strawberry.field
    def soon(self) -> str:
        return _soon()  # type: ignore[return-value]  # a sync function's awaitable

    @strawberry.field
    def number_as_text(self) -> str:
        return 5  # type: ignore[return-value]  # String serializes it as "5"

    @strawberry.field
    def ratio(self) -> float:
        return 0.5

    @strawberry.field
    def not_finite(self) -> float | None:
        return float("nan")

    @strawberry.field
    def flag(self) -> bool:
        return True

    @strawberry.field
    def ident(self) -> strawberry.ID:
        return strawberry.ID("x1")

    @strawberry.field
    def side(self) -> Side:
        return Side.BUY

    @strawberry.field
    def bad_side(self) -> Side | None:
        return "nope"  # type: ignore[return-value]

    @strawberry.field
    def blob(self) -> JSON:
        return {"a": [1, "b"]}

    @strawberry.field
    async def later(self) -> str:
        await asyncio.sleep(0)
        return "later"

    @strawberry.field
    async def later_fails(self) -> str | None:
        raise ValueError("later nope")

    @strawberry.field
    async def later_null(self) -> str:
        return None  # type: ignore[return-value]

    @strawberry.field
    def texts(self) -> list[str]:
        return ["a", "b"]

    @strawberry.field
    def thing(self) -> Thing:
        return Thing(name="t", size=1)

    @strawberry.field
    def named(self) -> Named:
        return Thing(name="n", size=2)

    @strawberry.field
    def echo(self, word: str = "hi") -> str:
        return word

    @strawberry.field
    def where(self, info: strawberry.Info) -> str:
        raw = info._raw_info  # graphql-core's info, as the executor built it
        path = ",".join(str(key) for key in raw.path.as_list())
        nodes = ",".join(node.alias.value if node.alias else "-" for node in raw.field_nodes)
        return f"{raw.field_name}@{path}/{raw.parent_type.name}/{nodes}/{info.context['n']}"


# Each document, and the response names `_RootField` runs (the rest: execute_field).
PLAIN_CASES: list[tuple[str, set[str]]] = [
    ("{ text }", {"text"}),
    ("{ text maybe }", {"text", "maybe"}),
    ("{ must }", {"must"}),
    ("{ text must maybe }", {"text", "must", "maybe"}),  # data nulled: a non-null root
    ("{ fails text }", {"fails", "text"}),
    ("{ failsNonNull text }", {"failsNonNull", "text"}),
    ("{ errorValue }", {"errorValue"}),
    ("{ number tooBig }", {"number", "tooBig"}),
    ("{ tooBigNonNull number }", {"tooBigNonNull", "number"}),
    ("{ notText numberAsText }", {"notText", "numberAsText"}),
    ("{ ratio notFinite flag ident }", {"ratio", "notFinite", "flag", "ident"}),
    ("{ side badSide blob }", {"side", "badSide", "blob"}),  # enum, custom scalar
    ("{ later laterFails text }", {"later", "laterFails", "text"}),  # awaitables
    ("{ laterNull text }", {"laterNull", "text"}),
    ("{ a: later b: later }", {"a", "b"}),
    ("{ texts text }", {"text"}),  # a list: execute_field
    ("{ thing { size } text named { name ... on Thing { size } } }", {"text"}),
    ('{ echo e: echo(word: "x") text }', {"text"}),  # arguments: execute_field
    ("{ where w: where where }", {"where", "w"}),  # two nodes for `where`
    ("{ a: text b: text text text }", {"a", "b", "text"}),
    ("{ __typename t: __typename text }", {"__typename", "t", "text"}),
    ("{ ...F text ... on Plain { maybe } } fragment F on Plain { number text }", None),
    ("query Q { text must }", {"text", "must"}),
    ("{ texts thing { size } }", set()),  # none plain: the executor's own methods
    ("{ guarded text }", {"guarded", "text"}),  # a permission: Strawberry's resolver
    ("{ outside text }", {"outside", "text"}),  # a function without `self`
    ("{ text fails number }", {"text", "fails", "number"}),  # the executor from the middle
    ("{ text number maybe }", {"text", "number", "maybe"}),  # ...from the last field
    ("{ text soon number }", {"text", "soon", "number"}),  # ...an awaitable in the middle
    ("{ text failsNonNull soon }", {"text", "failsNonNull", "soon"}),  # nulled, one pending
]
# The documents answered without an executor on every run but the first (every root
# field a plain function's value of a specified scalar, no variables), and whether
# they still need one once the values are known (a value is not the field's value).
DIRECT: dict[str, bool] = {
    "{ text }": False,
    "{ text maybe }": True,
    "{ must }": True,
    "{ text must maybe }": True,
    "{ fails text }": True,
    "{ failsNonNull text }": True,
    "{ errorValue }": True,
    "{ number tooBig }": True,
    "{ tooBigNonNull number }": True,
    "{ notText numberAsText }": True,
    "{ ratio notFinite flag ident }": True,
    "{ a: text b: text text text }": False,
    "{ ...F text ... on Plain { maybe } } fragment F on Plain { number text }": True,
    "query Q { text must }": True,
    "{ outside text }": False,
    "{ text fails number }": True,
    "{ text number maybe }": True,
    "{ text soon number }": True,
    "{ text failsNonNull soon }": True,
}
# The plain fields whose resolver function is called without Strawberry's resolver
# around it (no info, arguments, extensions; sync).
FUNCTIONS = {
    "text",
    "maybe",
    "must",
    "fails",
    "failsNonNull",
    "errorValue",
    "number",
    "tooBig",
    "tooBigNonNull",
    "notText",
    "numberAsText",
    "ratio",
    "notFinite",
    "flag",
    "ident",
    "side",
    "badSide",
    "blob",
    "outside",
    "soon",
}


def _plain_schema() -> Any:
    return strawberry.Schema(query=Plain)


async def test_plain_root_fields_answer_as_graphql_core_case_by_case(monkeypatch):
    from graphql.execution.executor import Executor

    from cryptovault.http import prepared as module

    schema = _plain_schema()
    core, executor = schema._schema, schema.execution_context_class
    completed: list[Any] = []
    complete_value = Executor.complete_value

    def counted(self: Any, return_type: Any, *args: Any) -> Any:
        completed.append(return_type)
        return complete_value(self, return_type, *args)

    monkeypatch.setattr(Executor, "complete_value", counted)
    built: list[Any] = []
    make_executor = module.PreparedOperation._executor

    def counted_executor(self: Any, *args: Any) -> Any:
        built.append(self)
        return make_executor(self, *args)

    monkeypatch.setattr(module.PreparedOperation, "_executor", counted_executor)
    for query, plain in PLAIN_CASES:
        document = parse(query)
        assert validate(core, document) == [], query
        operation = next(d for d in document.definitions if d.kind == "operation_definition")
        prepared = prepare(core, document, operation, executor, False)  # type: ignore[arg-type]
        assert prepared is not None, query
        for n in range(3):
            context = {"n": n}
            expected = await _settled(
                execute(
                    core,
                    document,
                    context_value=context,
                    variable_values={"x": "not an Int"} if n == 1 else None,
                    executor_class=executor,
                    is_awaitable=optimized_is_awaitable,
                    operation_extensions=None,
                )
            )
            completed.clear()
            built.clear()
            variables = {"x": "not an Int"} if n == 1 else None
            got = await _settled(prepared.execute(context, variables, None))
            assert got.formatted == expected.formatted, (query, n)
            assert [repr(e.original_error) for e in got.errors or ()] == [
                repr(e.original_error) for e in expected.errors or ()
            ], query
            assert [e.path for e in got.errors or ()] == [e.path for e in expected.errors or ()]
            if n > 0:
                # Direct (PreparedOperation._direct): an executor only once a value is
                # not the field's value.
                assert bool(built) is DIRECT.get(query, True), (query, n)
        assert (prepared._direct is not None) is (query in DIRECT), query
        roots = prepared._roots
        ran = {name for name, _, _, field in roots or () if field is not None}
        if plain is not None:
            assert ran == plain, query
            assert (roots is None) == (not plain), query
        for _, details, _, field in roots or ():
            if field is not None:
                name = details[0].node.name.value
                assert (field.function is not None) == (name in FUNCTIONS), (query, name)
        if query == "{ a: text b: text text text }":
            # A specified scalar's value is the field's value, without the executor.
            assert completed == [], completed
    assert isinstance(module._RootField, type)


async def test_plain_root_fields_concurrently_on_one_prepared_execution():
    schema = _plain_schema()
    core, executor = schema._schema, schema.execution_context_class
    document = parse("{ where later laterFails text a: where }")
    prepared = prepare(core, document, document.definitions[0], executor, False)  # type: ignore[arg-type]
    assert prepared is not None
    results = await asyncio.gather(
        *[_settled(prepared.execute({"n": n}, None, None)) for n in range(8)]
    )
    for n, got in enumerate(results):
        expected = await _settled(
            execute(
                core,
                document,
                context_value={"n": n},
                executor_class=executor,
                is_awaitable=optimized_is_awaitable,
                operation_extensions=None,
            )
        )
        assert got.formatted == expected.formatted
        assert got.data["where"].endswith(f"/{n}")


def test_an_executor_that_runs_fields_or_builds_responses_its_own_way_keeps_them():
    schema = _plain_schema()
    core, executor = schema._schema, schema.execution_context_class

    class Own(executor):  # type: ignore[misc, valid-type]
        def execute_field(self, *args: Any) -> Any:
            return super().execute_field(*args)

    class OwnResponse(executor):  # type: ignore[misc, valid-type]
        def build_response(self, data: Any) -> Any:
            result = super().build_response(data)
            result.extensions = {"own": True}
            return result

    document = parse("{ text }")
    for cls, plain, extensions in (
        (executor, True, None),
        (Own, False, None),
        (OwnResponse, True, {"own": True}),
    ):
        prepared = prepare(core, document, document.definitions[0], cls, False)  # type: ignore[arg-type]
        assert prepared is not None
        result = prepared.execute({"n": 0}, None, None)
        assert result.data == {"text": "pong"}  # type: ignore[union-attr]
        assert result.extensions == extensions  # type: ignore[union-attr]
        assert (prepared._roots is not None) is plain


def test_the_plain_function_shortcut_is_pinned_to_strawberrys_resolver(monkeypatch):
    """The shortcut reads the closure of the resolver Strawberry makes: it must be
    checked again when Strawberry's `from_resolver` changes (this fails until the
    recorded hash is updated), and until then it is off."""
    from cryptovault.http import prepared as module

    module.knows_strawberry_resolver.cache_clear()
    assert module.knows_strawberry_resolver(), "Strawberry's from_resolver changed"
    schema = _plain_schema()
    core, executor = schema._schema, schema.execution_context_class
    document = parse("{ where text }")

    def functions() -> set[str]:
        prepared = prepare(core, document, document.definitions[0], executor, False)  # type: ignore[arg-type]
        assert prepared is not None
        prepared.execute({"n": 1}, None, None)  # roots are found on the first run
        return {
            details[0].node.name.value
            for _, details, _, field in prepared._roots or ()
            if field is not None and field.function is not None
        }

    assert functions()  # on the pinned Strawberry, plain functions are called directly
    monkeypatch.setattr(module, "FROM_RESOLVER_SHA256", "0" * 64)
    module.knows_strawberry_resolver.cache_clear()
    try:
        assert not module.knows_strawberry_resolver()
        assert functions() == set()  # another Strawberry: its resolver runs as it is
    finally:
        monkeypatch.undo()
        module.knows_strawberry_resolver.cache_clear()


# -- The executor's reference cycle, broken once its work is done (`_released`) --

inner_resolved: list[str] = []


@strawberry.type
class Inner:
    @strawberry.field
    def x(self) -> str:
        inner_resolved.append("x")
        return "x"


@strawberry.type
class Outer:
    @strawberry.field
    async def inner(self) -> Inner:
        await asyncio.sleep(0)
        return Inner()

    @strawberry.field
    def fails_non_null(self) -> str:
        raise ValueError("nope, and not null")


@strawberry.type
class Background(Outer):
    """Outer's fields at the root, and Outer one level down."""

    @strawberry.field
    def outer(self) -> Outer | None:
        return Outer()

    @strawberry.field
    async def later_outer(self) -> Outer | None:
        return Outer()


class _Owner:
    """A context that can be watched (weakref)."""

    def __getitem__(self, key: str) -> int:
        return 0


@pytest.mark.parametrize(
    "query",
    [
        "{ inner { x } failsNonNull }",  # the error nulls the root, synchronously
        "{ outer { inner { x } failsNonNull } }",  # ...a field, synchronously
        "{ laterOuter { inner { x } failsNonNull } }",  # ...a field, once awaited
    ],
)
async def test_work_settled_in_the_background_runs_as_with_graphql_core(query):
    """A non-null field that fails while a sibling's awaitable is pending leaves that
    awaitable to settle in the background (Executor.settle_in_background), after the
    response is built: it still builds resolve infos with the executor's helpers."""
    schema = strawberry.Schema(query=Background)
    core, executor = schema._schema, schema.execution_context_class
    document = parse(query)
    assert validate(core, document) == []
    prepared = prepare(core, document, document.definitions[0], executor, False)  # type: ignore[arg-type]
    assert prepared is not None
    runs: list[tuple[Any, list[str]]] = []
    for run in (
        lambda: execute(
            core,
            document,
            context_value={"n": 0},
            executor_class=executor,
            is_awaitable=optimized_is_awaitable,
        ),
        lambda: prepared.execute({"n": 0}, None, None),
    ):
        inner_resolved.clear()
        result = await _settled(run())
        for _ in range(10):  # the background work's turns of the loop
            await asyncio.sleep(0)
        runs.append((result.formatted, list(inner_resolved)))
    assert runs[0][1] == ["x"]  # graphql-core resolves the background work's fields
    assert runs[1] == runs[0]


@pytest.mark.parametrize("query", ["{ text }", "{ later text }", "{ thing { size } text }"])
async def test_a_finished_execution_leaves_no_reference_cycle(query):
    """Once its work is done, nothing of an execution (its context) waits for the
    cyclic garbage collector. (An error keeps its traceback's frames, and through
    them the executor, as with graphql-core.)"""
    import gc
    import weakref

    schema = _plain_schema()
    core, executor = schema._schema, schema.execution_context_class
    document = parse(query)
    prepared = prepare(core, document, document.definitions[0], executor, False)  # type: ignore[arg-type]
    assert prepared is not None
    await _settled(prepared.execute(_Owner(), None, None))  # roots found on the first run
    gc.collect()
    gc.disable()
    try:
        context = _Owner()
        watched = weakref.ref(context)
        result = await _settled(prepared.execute(context, None, None))
        del context, result
        assert watched() is None
    finally:
        gc.enable()
