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

Invariant: `execute` answers exactly what `graphql.execute(schema, document, ...,
executor_class=...)` would (data, errors, their paths and locations): it runs the
same methods of the same executor class, on the same inputs. `prepare` returns None
(the caller then runs graphql-core's `execute`) for whatever it does not cover: an
executor class whose state is not the one known here (another graphql-core), fragment
variables, a schema with `@defer`/`@stream`.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from graphql import (
    DirectiveNode,
    DocumentNode,
    ExecutionResult,
    FragmentDefinitionNode,
    GraphQLError,
    GraphQLObjectType,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    Visitor,
    visit,
)
from graphql.execution.collect_fields import FragmentDetails, collect_fields
from graphql.execution.executor import (
    SELECTIONS_NESTED_TOO_DEEPLY,
    UNEXPECTED_MULTIPLE_PAYLOADS,
    CollectedErrors,
    Executor,
    default_field_resolver,
    default_type_resolver,
)
from graphql.execution.values import VariableValues, get_variable_values
from graphql.pyutils import RefMap
from graphql.type import GraphQLResolveInfoHelpers
from strawberry.execution import optimized_is_awaitable

__all__ = ["PreparedOperation", "prepare"]

MAX_COERCION_ERRORS = 50  # graphql-core's default

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
        "_memos",
        "_shared",
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
        self._memos: dict[str, Any] = {
            "_relevant_sub_fields": {},
            "_stream_usages": RefMap(),
            "_initial_execution_plans": RefMap(),
            "_deferred_execution_plans": RefMap(),
        }

    def execute(
        self,
        context: object,
        variables: dict[str, Any] | None,
        extensions: dict[str, Any] | None,
    ) -> ExecutionResult | Awaitable[ExecutionResult]:
        """As graphql-core's `execute` of the document with these inputs."""
        template = self._template
        schema = template["schema"]
        operation = template["operation"]
        hide = template["hide_suggestions"]
        if operation.variable_definitions:
            coerced = get_variable_values(
                schema,
                operation.variable_definitions,
                variables or {},
                max_errors=MAX_COERCION_ERRORS,
                hide_suggestions=hide,
            )
            if isinstance(coerced, list):
                return ExecutionResult(None, errors=coerced)
        else:
            coerced = VariableValues({}, {})  # what coercing no definitions gives
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
            grouped_field_set, new_defer_usages, _forbidden = collected
            result = executor.execute_collected_root_fields(
                self.root_type, None, grouped_field_set, self.serially, new_defer_usages
            )
            if optimized_is_awaitable(result):
                return _awaited(executor, result)  # type: ignore[arg-type]
        except GraphQLError as error:
            executor.collected_errors.add(error, None)
            return _single(executor.finish(executor.build_response(None)))
        return _single(executor.finish(executor.build_response(result)))  # type: ignore[arg-type]

    def _executor(
        self, context: object, variables: Any, extensions: dict[str, Any] | None
    ) -> Executor[Any]:
        cls = self._class
        executor = cls.__new__(cls)
        state = executor.__dict__
        state.update(self._template)
        state["context_value"] = context
        state["variable_values"] = variables
        state["operation_extensions"] = extensions
        state["collected_errors"] = CollectedErrors()
        state["pending_incremental_futures"] = set()
        state["background_futures"] = set()
        state["async_work_finished_hook_task"] = None
        state["async_helpers"] = GraphQLResolveInfoHelpers(
            gather=executor.gather_async_work, track=executor.track_async_work
        )
        if self._shared:
            # Memos of what the document alone decides (nothing to stream or defer).
            state.update(self._memos)
        else:
            state["_relevant_sub_fields"] = {}
            state["_stream_usages"] = RefMap()
            state["_initial_execution_plans"] = RefMap()
            state["_deferred_execution_plans"] = RefMap()
        state["defer_usage_set"] = None
        state["groups"] = []
        state["tasks"] = []
        state["streams"] = []
        return executor


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
        return _single(executor.build_response(None))
    except Exception:
        await executor.cancel_incremental_work()
        executor.run_async_work_finished_hook()
        raise
    return _single(executor.build_response(data))


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
