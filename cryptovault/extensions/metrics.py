"""Per-operation metrics and access-log fields, as a schema extension.

Sync hooks only, and no `resolve` hook: an extension that wraps every field resolver
(or has async hooks there) makes big list queries several times slower. It must come
before ErrorMapping in the schema's extension list: hooks exit in reverse order, so it
then sees the errors with their final `extensions.code`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from graphql import FieldNode, GraphQLError, OperationDefinitionNode
from starlette.requests import Request
from strawberry.extensions import SchemaExtension
from strawberry.types import StreamExecutionResult

from cryptovault.extensions.masking import map_error
from cryptovault.observability.metrics import ANONYMOUS, INVALID, Metrics

UNKNOWN = "unknown"


class OperationMetrics(SchemaExtension):
    """Counts each operation by name and type, times queries and mutations, counts
    errors by code, tracks running subscriptions by root field, and leaves the
    operation's name and type in the HTTP request's state for the access log line."""

    def on_operation(self) -> Iterator[None]:
        start = time.perf_counter()
        self._streamed = False
        self._field: str | None = None
        self._operation: tuple[str, str] | None = None
        self._escaped: Exception | None = None
        try:
            yield
        except Exception as exc:
            # E.g. a syntax error raised by the parser cache's hook: Strawberry turns
            # it into the response's error after the operation hooks have exited.
            self._escaped = exc
            raise
        finally:
            self._finish(time.perf_counter() - start)

    def on_execute(self) -> Iterator[None]:
        # Reached only by documents that parsed and validated.
        name, kind = self._describe()
        metrics = self._metrics()
        if kind == "subscription" and metrics is not None:
            self._field = _root_field(self._definition()) or UNKNOWN
            metrics.subscription_started(self._field)
            metrics.observe_operation(name, kind, None)
        yield

    def on_stream_result(self, result: StreamExecutionResult) -> Iterator[None]:
        yield
        # After ErrorMapping (listed after us) has mapped this event's errors.
        self._streamed = True
        metrics = self._metrics()
        if metrics is not None:
            metrics.observe_errors(self._describe()[0], _codes(result))

    def _finish(self, seconds: float) -> None:
        name, kind = self._describe()
        metrics = self._metrics()
        if metrics is not None:
            if self._field is not None:
                metrics.subscription_ended(self._field)  # counted when it started
            else:
                # A subscription that never started has no meaningful duration.
                metrics.observe_operation(name, kind, None if kind == "subscription" else seconds)
            if self._escaped is not None:
                metrics.observe_errors(name, [_escaped_code(self._escaped)])
            elif not self._streamed:
                metrics.observe_errors(name, _codes(self.execution_context.result))
        context = self.execution_context.context
        request = getattr(context, "request", None)
        if isinstance(request, Request):
            # Read by the access log (cryptovault.middleware); a batch has several.
            state = request.scope.setdefault("state", {})
            state.setdefault("graphql_operations", []).append((name, kind))

    def _metrics(self) -> Metrics | None:
        services = getattr(self.execution_context.context, "services", None)
        return getattr(services, "metrics", None)

    def _definition(self) -> OperationDefinitionNode | None:
        document = self.execution_context.graphql_document
        if document is None:
            return None
        wanted = self.execution_context.operation_name
        operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
        if wanted is None:
            return operations[0] if operations else None
        return next((d for d in operations if d.name and d.name.value == wanted), None)

    def _describe(self) -> tuple[str, str]:
        """(operation label, type label) from the parsed document, never from raw
        text: "anonymous" for an unnamed operation, "invalid" when nothing parsed."""
        if self._operation is not None:
            return self._operation
        definition = self._definition()
        if definition is None:
            described = (INVALID, UNKNOWN)
        else:
            name = definition.name.value if definition.name else ANONYMOUS
            metrics = self._metrics()
            label = metrics.operation_label(name) if metrics is not None else name
            described = (label, definition.operation.value)
            self._operation = described
        return described


def _root_field(definition: OperationDefinitionNode | None) -> str | None:
    if definition is None:
        return None
    for selection in definition.selection_set.selections:
        if isinstance(selection, FieldNode):
            return selection.name.value
    return None


def _escaped_code(exc: Exception) -> str:
    error = exc if isinstance(exc, GraphQLError) else GraphQLError(str(exc), original_error=exc)
    if error.path is not None:
        return "INTERNAL_SERVER_ERROR"
    # Side-effect free for errors without a path (only resolver errors are logged).
    return str((map_error(error).extensions or {}).get("code") or UNKNOWN)


def _codes(result: Any) -> list[str]:
    errors = getattr(result, "errors", None) or []
    return [str((e.extensions or {}).get("code") or UNKNOWN) for e in errors]
