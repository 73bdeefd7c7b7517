"""Execution prepared once per cached document (the lean path's, http/lean.py): what
graphql-core's `execute` recomputes on every request from the document alone is
computed once here and reused.

Per request graphql-core builds an executor (`Executor.build`: finds the operation,
indexes the fragments, coerces the variables, then three constructors' worth of
state) and collects the operation's root fields, and on each object value its
sub-fields (memoized for one execution only). For a document this process already
parsed and validated, `PreparedOperation` keeps a template executor with the
operation and fragments found, and, when no selection carries a directive (nothing
to `@skip`/`@include` by variables), the collected root fields and the sub-field memo
across requests (and with them graphql-core's other per-execution memos: the
execution plans, the stream usages, which then depend on the document alone). Each
request still gets its variables coerced, a fresh executor state (errors, futures,
incremental work) and the whole of execution proper.

Plain root fields (a leaf type, no arguments, e.g. `ping`) are executed by
`_RootField` rather than graphql-core's per-field machinery (its path, field lookup and
value completion made once per document): the field's own resolver is called with
the info graphql-core would build, and a value its leaf type serializes to something
is the field's value. Anything else (the resolver raises or returns an awaitable, an
Exception, null, a value the type refuses) goes to the executor's own methods, from
the same point, so errors, paths and null propagation are graphql-core's. Where the
resolver is Strawberry's around a plain function (no arguments, `info`, extensions or
permissions), the function is called as Strawberry's resolver would call it. Without
incremental work or execution hooks, the response is built as `build_response` would.
When every root field is such a function's value of a specified scalar (`{ ping }`)
and there are no variables, no executor is built at all (`PreparedOperation._direct`):
the values are the data; the first field whose function raises or returns anything
else hands what it raised or returned to a new executor, which completes it and runs
the fields after it, as if it had run the ones before.

Invariant: `execute` answers exactly what `graphql.execute(schema, document, ...,
executor_class=...)` would (data, errors, their paths and locations): it runs the
same methods of the same executor class, on the same inputs. `prepare` returns None
(the caller then runs graphql-core's `execute`) for whatever it does not cover: an
executor class whose state is not the one known here (another graphql-core), fragment
variables, a schema with `@defer`/`@stream`.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from graphql import (
    DirectiveNode,
    DocumentNode,
    ExecutionResult,
    FragmentDefinitionNode,
    GraphQLError,
    GraphQLField,
    GraphQLLeafType,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    Undefined,
    Visitor,
    is_leaf_type,
    specified_scalar_types,
    visit,
)
from graphql.execution.collect_fields import (
    FieldDetailsList,
    FragmentDetails,
    GroupedFieldSet,
    collect_fields,
)
from graphql.execution.executor import (
    SELECTIONS_NESTED_TOO_DEEPLY,
    UNEXPECTED_MULTIPLE_PAYLOADS,
    CollectedErrors,
    Executor,
    default_field_resolver,
    default_type_resolver,
)
from graphql.execution.incremental import IncrementalExecutor
from graphql.execution.values import VariableValues, get_variable_values
from graphql.language import FieldNode
from graphql.pyutils import Path, RefMap, gather_with_cancel
from graphql.type import GraphQLResolveInfoHelpers
from strawberry.execution import optimized_is_awaitable
from strawberry.schema.schema_converter import GraphQLCoreConverter
from strawberry.types.field import StrawberryField

__all__ = ["PreparedOperation", "prepare"]

MAX_COERCION_ERRORS = 50  # graphql-core's default
_SPECIFIED_SCALARS = frozenset(specified_scalar_types.values())

# The executor's attributes (graphql-core 3.3's Executor and IncrementalExecutor,
# Strawberry's execution context): the per-request state, set afresh on each copy...
_PER_REQUEST = frozenset(
    {
        "context_value",
        "variable_values",
        "operation_extensions",
        "collected_errors",
        "pending_incremental_futures",
        "background_futures",
        "async_work_finished_hook_task",
        "async_helpers",
        "_relevant_sub_fields",
        "_stream_usages",
        "defer_usage_set",
        "groups",
        "tasks",
        "streams",
        "_initial_execution_plans",
        "_deferred_execution_plans",
    }
)
# ...and what is the same for every execution of one operation.
_PER_OPERATION = frozenset(
    {
        "schema",
        "fragment_definitions",
        "fragments",
        "root_value",
        "operation",
        "field_resolver",
        "type_resolver",
        "subscribe_field_resolver",
        "enable_early_execution",
        "hide_suggestions",
        "abort_signal",
        "hooks",
        "middleware_manager",
        "error_propagation",
        "is_awaitable",
        "is_async_iterable",
    }
)


class PreparedOperation:
    """One operation of a cached document, ready to execute (module docstring)."""

    __slots__ = (
        "_class",
        "_collected",
        "_direct",
        "_memos",
        "_plain",
        "_plain_response",
        "_roots",
        "_shared",
        "_state",
        "_template",
        "root_type",
        "serially",
    )

    def __init__(self, template: Executor[Any], root_type: GraphQLObjectType, shared: bool):
        self._class = type(template)
        self._template = {k: v for k, v in vars(template).items() if k in _PER_OPERATION}
        self.root_type = root_type
        self.serially = template.operation.operation is OperationType.MUTATION
        # Without directives, what collect_fields finds depends on the document only.
        self._shared = shared
        self._collected: Any = None
        # Root fields run by `_execute_roots` (plain ones by `_RootField`), once the
        # shared root fields are collected; None: by the executor's own methods.
        self._plain = (
            shared
            and not self.serially
            and self._template["middleware_manager"] is None
            and _executes_fields_as_known(self._class)
        )
        self._roots: tuple[_Root, ...] | None = None
        # build_response is graphql-core's own, with no execution hooks to run.
        self._plain_response = self._template["hooks"] is None and _builds_response_as_known(
            self._class
        )
        # When every root field is a plain function's value of a specified scalar
        # and there are no variables to coerce: those fields in order, answered
        # without an executor until one is not a value (`_RootField.value`).
        self._direct: tuple[tuple[str, _RootField], ...] | None = None
        self._memos: dict[str, Any] = {
            "_relevant_sub_fields": {},
            "_stream_usages": RefMap(),
            "_initial_execution_plans": RefMap(),
            "_deferred_execution_plans": RefMap(),
        }
        # What every executor of this operation starts with (`_executor`): the
        # operation's part, the per-request values that are constants, and when
        # shared the memos of what the document alone decides (nothing to stream or
        # defer).
        self._state: dict[str, Any] = {
            **self._template,
            "async_work_finished_hook_task": None,
            "defer_usage_set": None,
            **(self._memos if shared else {}),
        }

    def execute(
        self,
        context: object,
        variables: dict[str, Any] | None,
        extensions: dict[str, Any] | None,
    ) -> ExecutionResult | Awaitable[ExecutionResult]:
        """As graphql-core's `execute` of the document with these inputs."""
        direct = self._direct
        if direct is not None:
            results: dict[str, Any] = {}
            for response_name, field in direct:
                value = field.value()
                if type(value) is _Pending:
                    # The executor from here on, as if it had run the fields before.
                    return self._run(context, VariableValues({}, {}), extensions, results, value)
                results[response_name] = value
            # What the executor's run and build_response come to when every field's
            # value is its function's: no error, nothing to await or to defer.
            return ExecutionResult(results, None)
        template = self._template
        operation = template["operation"]
        if operation.variable_definitions:
            coerced = get_variable_values(
                template["schema"],
                operation.variable_definitions,
                variables or {},
                max_errors=MAX_COERCION_ERRORS,
                hide_suggestions=template["hide_suggestions"],
            )
            if isinstance(coerced, list):
                return ExecutionResult(None, errors=coerced)
        else:
            coerced = VariableValues({}, {})  # what coercing no definitions gives
        return self._run(context, coerced, extensions, None, None)

    def _run(
        self,
        context: object,
        coerced: VariableValues,
        extensions: dict[str, Any] | None,
        results: dict[str, Any] | None,
        pending: _Pending | None,
    ) -> ExecutionResult | Awaitable[ExecutionResult]:
        """The operation executed with an executor: from the start, or (`results`
        given) from the direct field whose value is `pending`, the fields before it
        answered `results`."""
        template = self._template
        schema = template["schema"]
        operation = template["operation"]
        hide = template["hide_suggestions"]
        executor = self._executor(context, coerced, extensions)
        try:
            collected = self._collected if self._shared else None
            if collected is None:
                try:
                    collected = collect_fields(
                        schema, template["fragments"], coerced, self.root_type, operation, hide
                    )
                except RecursionError:
                    collected = None
                if collected is None:
                    raise GraphQLError(SELECTIONS_NESTED_TOO_DEEPLY, operation)
                if self._shared:
                    self._collected = collected
                    if self._plain and not collected[1]:
                        self._roots = _roots(template, self.root_type, collected[0])
                        self._direct = self._direct_fields(self._roots)
            grouped_field_set, new_defer_usages, _forbidden = collected
            roots = self._roots
            if results is not None and roots is not None:
                result = _execute_roots(
                    executor, self.root_type, roots[len(results) :], results, pending
                )
            elif roots is not None:
                result = _execute_roots(executor, self.root_type, roots)
            else:
                result = executor.execute_collected_root_fields(
                    self.root_type, None, grouped_field_set, self.serially, new_defer_usages
                )
            if optimized_is_awaitable(result):
                return _awaited(executor, result)  # type: ignore[arg-type]
        except GraphQLError as error:
            executor.collected_errors.add(error, None)
            return _released(executor, _single(executor.finish(executor.build_response(None))))
        if self._plain_response and not executor.tasks and not executor.streams:  # type: ignore[attr-defined]
            # What build_response comes to without incremental work or hooks.
            response = ExecutionResult(result, executor.collected_errors.errors or None)  # type: ignore[arg-type]
            return _released(executor, executor.finish(response))
        return _released(executor, _single(executor.finish(executor.build_response(result))))  # type: ignore[arg-type]

    def _direct_fields(
        self, roots: tuple[_Root, ...] | None
    ) -> tuple[tuple[str, _RootField], ...] | None:
        """The root fields `execute` answers without an executor, or None: all must
        be direct (`_RootField.direct`), there must be no variables to coerce, and
        the response must be graphql-core's own (`_plain_response`, `finish`)."""
        if (
            roots is None
            or not self._plain_response
            or self._class.finish is not Executor.finish
            or self._template["abort_signal"] is not None
            or self._template["operation"].variable_definitions
        ):
            return None
        direct = []
        for response_name, _, _, field in roots:
            if field is None or not field.direct:
                return None
            direct.append((response_name, field))
        return tuple(direct)

    def _executor(
        self, context: object, variables: Any, extensions: dict[str, Any] | None
    ) -> Executor[Any]:
        cls = self._class
        executor = cls.__new__(cls)
        # The operation's part and the constant per-request values, then the rest,
        # in a dict of its own made the executor's (half the work of filling the
        # executor's fresh one).
        state = self._state.copy()
        state["context_value"] = context
        state["variable_values"] = variables
        state["operation_extensions"] = extensions
        state["collected_errors"] = CollectedErrors()
        state["pending_incremental_futures"] = set()
        state["background_futures"] = set()
        # GraphQLResolveInfoHelpers(gather=..., track=...), without its __new__.
        state["async_helpers"] = tuple.__new__(
            GraphQLResolveInfoHelpers, (executor.gather_async_work, executor.track_async_work)
        )
        if not self._shared:
            state["_relevant_sub_fields"] = {}
            state["_stream_usages"] = RefMap()
            state["_initial_execution_plans"] = RefMap()
            state["_deferred_execution_plans"] = RefMap()
        state["groups"] = []
        state["tasks"] = []
        state["streams"] = []
        executor.__dict__ = state
        return executor


# A root field: its response name, field details, path, and its `_RootField` when
# plain (else None: Executor.execute_field).
type _Root = tuple[str, FieldDetailsList, Path, "_RootField | None"]


def _executes_fields_as_known(cls: type[Executor[Any]]) -> bool:
    """Whether `cls` executes root fields with graphql-core's own methods (what
    `_execute_roots` and `_RootField` stand for)."""
    return (
        cls.execute_collected_root_fields
        in (
            Executor.execute_collected_root_fields,
            IncrementalExecutor.execute_collected_root_fields,
        )
        and cls.execute_root_grouped_field_set is Executor.execute_root_grouped_field_set
        and cls.execute_fields is Executor.execute_fields
        and cls.execute_field is Executor.execute_field
        and cls.complete_value is Executor.complete_value
        and cls.complete_leaf_value is Executor.complete_leaf_value
    )


def _builds_response_as_known(cls: type[Executor[Any]]) -> bool:
    """Whether `cls` builds a response with graphql-core's own methods (what
    `PreparedOperation.execute` stands in for when there is no incremental work)."""
    if cls.build_response is IncrementalExecutor.build_response:
        plain = getattr(cls, "get_incremental_work", None) is (
            IncrementalExecutor.get_incremental_work
        )
    else:
        plain = cls.build_response is Executor.build_response
    return plain and cls.run_async_work_finished_hook is Executor.run_async_work_finished_hook


def _roots(
    template: dict[str, Any], root_type: GraphQLObjectType, grouped_field_set: GroupedFieldSet
) -> tuple[_Root, ...] | None:
    """The root fields in order, each with its `_RootField` when plain; None when none
    is (the executor's own methods then run them all)."""
    schema: GraphQLSchema = template["schema"]
    roots: list[_Root] = []
    for response_name, field_details_list in grouped_field_set.items():
        path = Path(None, response_name, root_type.name)
        node = field_details_list[0].node
        field_def = schema.get_field(root_type, node.name.value)
        plain = None
        if (
            field_def is not None
            and not field_def.args
            and not node.arguments
            and all(d.fragment_variable_values is None for d in field_details_list)
        ):
            leaf = field_def.type
            if isinstance(leaf, GraphQLNonNull):
                leaf = leaf.of_type
            if is_leaf_type(leaf):
                plain = _RootField(
                    field_def,
                    field_details_list,
                    path,
                    root_type,
                    field_def.resolve or template["field_resolver"],
                    leaf if leaf in _SPECIFIED_SCALARS else None,  # type: ignore[arg-type]
                    template["is_awaitable"],
                )
        roots.append((response_name, field_details_list, path, plain))
    return tuple(roots) if any(root[3] is not None for root in roots) else None


def _execute_roots(
    executor: Executor[Any],
    root_type: GraphQLObjectType,
    roots: tuple[_Root, ...],
    results: dict[str, Any] | None = None,
    pending: _Pending | None = None,
) -> Any:
    """`Executor.execute_fields` on the root (no source, no parent path), plain
    fields run by their `_RootField`. `results`: the values of the fields before
    `roots` (answered without an executor); `pending`: what the first of `roots`
    returned or raised, for the executor to complete."""
    if results is None:
        results = {}
    is_awaitable = executor.is_awaitable
    awaitable_fields: list[str] = []
    try:
        for response_name, field_details_list, path, plain in roots:
            if plain is None:
                result = executor.execute_field(root_type, None, field_details_list, path, None)
            elif pending is not None:
                result = plain.complete(executor, pending)
                pending = None
            else:
                result = plain.execute(executor)
            if result is not Undefined:
                results[response_name] = result
                if is_awaitable(result):
                    awaitable_fields.append(response_name)
    except Exception:
        if awaitable_fields:
            executor.settle_in_background([results[field] for field in awaitable_fields])
        raise
    if not awaitable_fields:
        return results
    return _gathered(results, awaitable_fields)


async def _gathered(results: dict[str, Any], awaitable_fields: list[str]) -> dict[str, Any]:
    # execute_fields' get_results.
    if len(awaitable_fields) == 1:
        field = awaitable_fields[0]
        results[field] = await results[field]
    else:
        awaited = await gather_with_cancel(*(results[field] for field in awaitable_fields))
        results.update(zip(awaitable_fields, awaited, strict=True))
    return results


class _RootField:
    """A plain root field (a leaf type, no arguments): `Executor.execute_field` for
    it, its path, nodes and resolver found once. A value of a specified scalar (String,
    Int, Float, Boolean, ID: pure serializers) that serializes to something is the
    field's value; anything else is completed by the executor's own `complete_value`
    (errors and null checks as graphql-core's), and errors handled by its own
    `handle_field_error`.

    When the field's resolver is the one Strawberry made for a plain function (sync,
    no arguments, no `info`, no field extensions or permissions, no exception
    handlers: `_strawberry_function`), that function is called as Strawberry's
    resolver would call it, and the resolve info is only built if completing the
    value needs it."""

    __slots__ = (
        "field_def",
        "field_details_list",
        "function",
        "function_args",
        "is_awaitable",
        "nodes",
        "parent_type",
        "path",
        "resolve",
        "return_type",
        "scalar",
    )

    def __init__(
        self,
        field_def: GraphQLField,
        field_details_list: FieldDetailsList,
        path: Path,
        parent_type: GraphQLObjectType,
        resolve: Callable[..., Any],
        scalar: GraphQLLeafType | None,
        is_awaitable: Callable[[Any], bool],
    ) -> None:
        self.field_def = field_def
        self.field_details_list = field_details_list
        self.nodes: list[FieldNode] = [details.node for details in field_details_list]
        self.path = path
        self.parent_type = parent_type
        self.resolve = resolve
        self.return_type = field_def.type
        self.scalar = scalar
        found = _strawberry_function(field_def)
        self.function: Callable[..., Any] | None = found[0] if found is not None else None
        self.function_args: tuple[None, ...] = found[1] if found is not None else ()
        self.is_awaitable = is_awaitable

    @property
    def direct(self) -> bool:
        """Whether `value` can answer it without an executor (a plain function's
        value of a specified scalar)."""
        return self.function is not None and self.scalar is not None

    def execute(self, executor: Executor[Any]) -> Any:
        if self.function is not None:
            value = self.value()
            if type(value) is _Pending:
                return self.complete(executor, value)
            return value
        path = self.path
        try:
            info = executor.build_resolve_info(self.field_def, self.nodes, self.parent_type, path)
            result = self.resolve(None, info)
            if executor.is_awaitable(result):
                return executor.complete_awaitable_value(
                    self.return_type, self.field_details_list, info, path, result, None
                )
            scalar = self.scalar
            if (
                scalar is not None
                and result is not None
                and result is not Undefined
                and not isinstance(result, Exception)
            ):
                coerced = scalar.coerce_output_value(result)
                if coerced is not None and coerced is not Undefined:
                    return coerced
            # Null (for a non-null field, graphql-core's error), an error value, a
            # value the type refuses: the executor completes it, as execute_field.
            return executor.complete_value(
                self.return_type, self.field_details_list, info, path, result, None
            )
        except Exception as raw_error:
            executor.handle_field_error(raw_error, self.return_type, self.field_details_list, path)
            return None

    def value(self) -> Any:
        """The field's value without an executor (its resolver is a plain function):
        what its function returns once its specified scalar serializes it to
        something; otherwise a `_Pending` for `complete` (what it raised or returned)."""
        try:
            result = self.function(*self.function_args)  # type: ignore[misc]
        except Exception as error:
            return _Pending(None, error)
        scalar = self.scalar
        if (
            scalar is not None
            and result is not None
            and result is not Undefined
            and not isinstance(result, Exception)
            and not self.is_awaitable(result)
        ):
            try:
                coerced = scalar.coerce_output_value(result)
            except Exception as error:
                return _Pending(result, error)
            if coerced is not None and coerced is not Undefined:
                return coerced
        return _Pending(result, None)

    def complete(self, executor: Executor[Any], pending: _Pending) -> Any:
        """`pending` (what `value` could not make the field's value) completed and its
        errors handled by the executor's own methods, as `Executor.execute_field`
        would once the resolver returned or raised it."""
        error = pending.error
        path = self.path
        if error is None:
            result = pending.result
            try:
                info = executor.build_resolve_info(
                    self.field_def, self.nodes, self.parent_type, path
                )
                if executor.is_awaitable(result):
                    return executor.complete_awaitable_value(
                        self.return_type, self.field_details_list, info, path, result, None
                    )
                # Null (for a non-null field, graphql-core's error), an error value, a
                # value the type refuses: completed as execute_field completes it.
                return executor.complete_value(
                    self.return_type, self.field_details_list, info, path, result, None
                )
            except Exception as raw_error:
                error = raw_error
        executor.handle_field_error(error, self.return_type, self.field_details_list, path)
        return None


class _Pending:
    """What a plain function returned (`result`) or raised, or what its scalar raised
    serializing the result (`error`), for the executor to complete."""

    __slots__ = ("error", "result")

    def __init__(self, result: Any, error: Exception | None) -> None:
        self.result = result
        self.error = error


def _cells(function: Any) -> dict[str, Any]:
    """A closure's variables by name."""
    return {
        name: cell.cell_contents
        for name, cell in zip(
            function.__code__.co_freevars, function.__closure__ or (), strict=True
        )
    }


# What Strawberry (strawberry/schema/schema_converter.py, from_resolver) names the
# resolver it makes for a field with a resolver function.
_STRAWBERRY_RESOLVER = "GraphQLCoreConverter.from_resolver.<locals>._resolver"
# The SHA-256 of `GraphQLCoreConverter.from_resolver`'s source in strawberry-graphql
# 0.341.2, which `_strawberry_function` reads the closure of and stands in for: any
# other source turns the shortcut off (the resolver then runs as it is), and
# tests/test_prepared_execution.py fails until the shortcut is checked against it.
FROM_RESOLVER_SHA256 = "bcac1354fecdee79efc4cb931554163d64df8f0061909eab4d3687eba0c19ffb"


@functools.cache
def knows_strawberry_resolver() -> bool:
    """Whether the installed Strawberry makes field resolvers as the shortcut expects."""
    try:
        source = inspect.getsource(GraphQLCoreConverter.from_resolver)
    except (OSError, TypeError):
        return False
    return hashlib.sha256(source.encode()).hexdigest() == FROM_RESOLVER_SHA256


def _strawberry_function(
    field_def: GraphQLField,
) -> tuple[Callable[..., Any], tuple[()] | tuple[None]] | None:
    """The resolver function behind `field_def` and its arguments at the root, when
    calling it so is all Strawberry's resolver would do: its sync `_resolver` for
    this very field, without exception handlers, for a field without arguments,
    extensions (permissions are one) or `info`/`root`/`parent` parameters, so that
    Strawberry's Info, argument conversion and extension chain have nothing to do
    (`field.get_result` then calls `base_resolver(source)` if it takes `self`, else
    `base_resolver()`). None otherwise: the resolver runs as it is."""
    resolve = field_def.resolve
    field = field_def.extensions.get("strawberry-definition")
    if (
        resolve is None
        or not knows_strawberry_resolver()
        or not isinstance(field, StrawberryField)
        # A field class of its own may change what its resolver's result is.
        or type(field).get_result is not StrawberryField.get_result
        or getattr(resolve, "__qualname__", None) != _STRAWBERRY_RESOLVER
    ):
        return None
    try:
        cells = _cells(resolve)
        handlers = cells["field_exception_handlers"]
        # The field it was made for (that its Info is made with).
        same_field = _cells(cells["_strawberry_info_from_graphql"])["field"] is field
    except (AttributeError, KeyError, TypeError, ValueError):
        return None
    base = field.base_resolver
    if (
        not same_field
        or handlers
        or base is None
        or field.extensions
        or field.arguments
        or field.is_async
        or base.info_parameter is not None
        or base.root_parameter is not None
        or base.parent_parameter is not None
    ):
        return None
    return base, ((None,) if base.self_parameter is not None else ())


def _single(result: Any) -> ExecutionResult:
    # As `execute`: incremental results are refused (the schema has no @defer).
    if isinstance(result, ExecutionResult):
        return result
    raise GraphQLError(UNEXPECTED_MULTIPLE_PAYLOADS)


async def _awaited(executor: Executor[Any], result: Awaitable[Any]) -> ExecutionResult:
    # Executor.execute_operation's `await_result`, without an abort signal.
    try:
        data = await result
    except GraphQLError as error:
        executor.collected_errors.add(error, None)
        return _released(executor, _single(executor.build_response(None)))
    except Exception:
        await executor.cancel_incremental_work()
        executor.run_async_work_finished_hook()
        raise
    return _released(executor, _single(executor.build_response(data)))


def _released(executor: Executor[Any], result: ExecutionResult) -> ExecutionResult:
    """`result`, its executor's reference cycle broken once no work of it is left:
    its resolver-info helpers are its own bound methods, so without this the executor,
    the context and the request it holds (~30 objects for `{ ping }`) would wait for
    the cyclic garbage collector (bench/RESULTS.md: ~8 µs per request at 16
    connections). A GraphQLResolveInfo kept by a resolver keeps the helpers, which
    go on working. Not while work settles in the background (a failed non-null field's
    pending siblings, `Executor.settle_in_background`): it builds resolve infos still."""
    if not executor.tasks and not executor.streams and not executor.background_futures:  # type: ignore[attr-defined]
        executor.__dict__.pop("async_helpers", None)
    return result


class _Directives(Visitor):
    found = False

    def enter_directive(self, node: DirectiveNode, *_: Any) -> Any:
        self.found = True
        return self.BREAK


def prepare(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation: OperationDefinitionNode,
    executor_class: type[Executor[Any]],
    hide_suggestions: bool,
) -> PreparedOperation | None:
    """The prepared execution of `operation` (a validated document's one operation),
    or None where graphql-core's `execute` must run (module docstring)."""
    if schema.get_directive("defer") or schema.get_directive("stream"):
        return None
    root_type = schema.get_root_type(operation.operation)
    if root_type is None:
        return None
    fragment_definitions: dict[str, FragmentDefinitionNode] = {}
    fragments: dict[str, FragmentDetails] = {}
    for definition in document.definitions:
        if isinstance(definition, FragmentDefinitionNode):
            if definition.variable_definitions:
                return None
            fragment_definitions[definition.name.value] = definition
            fragments[definition.name.value] = FragmentDetails(definition, None)
    no_variables = get_variable_values(schema, (), {})
    assert not isinstance(no_variables, list)
    template = executor_class(
        schema,
        fragment_definitions,
        fragments,
        None,
        None,
        operation,
        no_variables,
        default_field_resolver,
        default_type_resolver,
        default_field_resolver,
        False,
        None,
        optimized_is_awaitable,  # type: ignore[arg-type]
        None,
        hide_suggestions=hide_suggestions,
        operation_extensions=None,  # type: ignore[call-arg]
    )
    if set(vars(template)) != _PER_REQUEST | _PER_OPERATION:
        return None  # another executor: its state is not known here
    return PreparedOperation(template, root_type, not _has_directives(operation, fragments))


def _has_directives(operation: OperationDefinitionNode, fragments: dict[str, Any]) -> bool:
    for node in (operation, *(f.definition for f in fragments.values())):
        finder = _Directives()
        visit(node.selection_set, finder)
        if finder.found:
            return True
    return False
