"""The lean HTTP path: a POSTed query or mutation whose document this process has
already parsed and validated (the parser cache, which persisted and trusted documents
reach too) runs on graphql-core directly, with the schema extensions' work fused into
one pass, its answer serialized with orjson and written once.

Everything else (a new document, batches, GET, introspection, an operation over a
limit, kept answers, APQ registrations, any request the view would refuse) takes
Strawberry's view (cryptovault/http/view.py), which does the same work through the
extensions. The decision is taken before anything with a side effect (authentication,
the budget): a request is served entirely by one path or the other.

Invariant: for every request it serves, the lean path answers what the view would,
byte for byte (data, errors with their `extensions.code`, masking, the cost report,
status, headers), and charges, counts and logs the same (tests/test_lean_path.py runs
the same operations through both and compares them).

    lean = LeanPath(view)
    response = await lean.prepare(request)  # None: take the view
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from graphql import (
    DocumentNode,
    ExecutionResult,
    GraphQLError,
    OperationDefinitionNode,
    OperationType,
    execute,
    specified_rules,
)
from graphql.validation import MaxIntrospectionDepthRule
from starlette.requests import Request
from starlette.responses import Response
from strawberry import Schema
from strawberry.execution import optimized_is_awaitable
from strawberry.schema.validation_rules.maybe_null import MaybeNullValidationRule
from strawberry.schema.validation_rules.one_of import OneOfInputValidationRule

from cryptovault.errors import DomainError, RateLimited
from cryptovault.extensions.cost import Analysis, CostAnalyzer
from cryptovault.extensions.limits import Protection, identity_key, rate_limit_headers
from cryptovault.extensions.limits import _analyses as analyses
from cryptovault.extensions.masking import ErrorMapping, map_error
from cryptovault.extensions.metrics import UNKNOWN, OperationMetrics
from cryptovault.extensions.metrics import _escaped_code as escaped_code
from cryptovault.extensions.parsing import Parsing, Validation, cached_document, cached_validation
from cryptovault.observability.metrics import ANONYMOUS
from cryptovault.schema.results import KeptResults, keeps_answer

if TYPE_CHECKING:
    from cryptovault.http.view import GraphQLView
    from cryptovault.schema.context import Context

__all__ = ["LeanPath", "Prepared", "lean_sub_response"]

# The schema's extensions (schema.build_schema) whose work `LeanPath.run` does.
PIPELINE = (OperationMetrics, ErrorMapping, Parsing, Validation, Protection, KeptResults)

JSON = "application/json"
_REQUEST_KEYS = frozenset(("query", "operationName", "variables", "extensions"))


@dataclass(slots=True)
class Prepared:
    """An operation the lean path serves: everything known before any side effect."""

    query: str
    document: DocumentNode
    operation: OperationDefinitionNode
    operation_name: str | None
    variables: dict[str, Any] | None
    extensions: dict[str, Any] | None
    analyzer: CostAnalyzer
    analysis: Analysis
    media: str


class LeanPath:
    def __init__(self, view: GraphQLView) -> None:
        self.view = view
        schema = view.schema
        assert isinstance(schema, Schema)
        self.schema = schema
        self.core = schema._schema
        self.executor = schema.execution_context_class
        base = tuple(specified_rules)
        extra = (MaxIntrospectionDepthRule, MaybeNullValidationRule, OneOfInputValidationRule)
        # What the Validation extension validates with (its cache key).
        self.rules = (*base, *(r for r in extra if r not in base))
        # Only the extensions whose work this path does (another one, e.g. Sentry's
        # tracing, would be skipped): else every operation takes the view.
        self.enabled = schema.extensions == PIPELINE

    async def prepare(self, request: Request, accept: str | None) -> Prepared | None:
        """The operation, when the lean path can serve it; None: take the view."""
        if not self.enabled or request.method != "POST":
            return None
        content_type = request.headers.get("content-type", "")
        if content_type.split(";", 1)[0].strip().lower() != JSON:
            return None
        if accept is None:
            return None
        body = await request.body()  # kept on the request for the view
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        if type(data) is not dict or not data.keys() <= _REQUEST_KEYS:
            return None
        query = data.get("query")
        operation_name = data.get("operationName")
        variables = data.get("variables")
        extensions = data.get("extensions")
        if (
            (query is not None and type(query) is not str)
            or (operation_name is not None and type(operation_name) is not str)
            or (variables is not None and type(variables) is not dict)
            or (extensions is not None and type(extensions) is not dict)
        ):
            return None
        services = self.view._app.state.services
        persisted = services.persisted_queries
        if persisted.mode != "off" or extensions:
            try:
                query = await persisted.resolve(query, extensions)
            except DomainError:
                return None
            if persisted.pending(query) is not None:
                return None  # a registration: charged and kept by the view
        if not query:
            return None
        settings = services.settings
        document = cached_document(query, settings.max_tokens)
        if document is None:
            return None
        operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
        if len(operations) != 1:
            return None
        operation = operations[0]
        name = operation.name.value if operation.name else None
        if operation_name is not None and operation_name != name:
            return None
        if operation.operation not in (OperationType.QUERY, OperationType.MUTATION):
            return None
        hide = settings.is_production
        if cached_validation(self.core, document, self.rules, hide) != []:
            return None  # not validated yet, or invalid: the view reports it
        if keeps_answer(self.core, operation):
            return None
        analyzer, analysis = analyses.get(self.core, document, operation, variables)
        if analysis.introspection:
            return None
        for actual, maximum in (
            (analysis.depth, settings.max_query_depth),
            (analysis.aliases, settings.max_aliases),
            (analysis.directives, settings.max_directives_per_field),
            (analysis.root_fields, settings.max_root_fields),
            (analysis.cost, settings.max_query_cost),
        ):
            if actual > maximum:
                return None
        return Prepared(
            query, document, operation, name, variables, extensions, analyzer, analysis, accept
        )

    async def run(self, prepared: Prepared, context: Context, sub_response: Response) -> Response:
        """Charge, execute and answer `prepared` in `context` (whose `response` is
        `sub_response`): what the extensions (metrics, error mapping, protection) and
        the view do for it, in one pass."""
        start = time.perf_counter()
        metrics = context.services.metrics
        kind = prepared.operation.operation.value
        label = metrics.operation_label(prepared.operation_name or ANONYMOUS)
        requested = prepared.analysis.cost
        status = await context.services.limiter.spend(identity_key(context), requested)
        context.state["budget"] = status
        sub_response.headers.update(rate_limit_headers(status))
        cost: dict[str, Any] = {"requestedQueryCost": requested, "actualQueryCost": 0}
        cost["throttleStatus"] = {
            "maximumAvailable": status.limit,
            "currentlyAvailable": status.remaining,
            "restoreRate": round(status.restore_rate, 2),
        }
        response: dict[str, Any]
        if not status.allowed:
            # As Protection raises it before execution: a request error, no `data`.
            retry = max(1, math.ceil(status.retry_after))
            refused = RateLimited(
                f"Cost budget exhausted: this operation costs {requested}, "
                f"{status.remaining} of {status.limit} points are left; retry in {retry} s",
                retryAfter=retry,
                cost=requested,
                remaining=status.remaining,
                limit=status.limit,
            )
            raw = GraphQLError(str(refused), original_error=refused)
            self.schema._process_errors([raw])
            errors = [map_error(raw)]
            codes = [escaped_code(refused)]
            response = {"errors": [e.formatted for e in errors], "extensions": {"cost": cost}}
        else:
            result = execute(
                self.core,
                prepared.document,
                root_value=None,
                context_value=context,
                variable_values=prepared.variables,
                operation_name=prepared.operation_name,
                executor_class=self.executor,
                is_awaitable=optimized_is_awaitable,  # type: ignore[arg-type]
                operation_extensions=prepared.extensions,
            )
            if optimized_is_awaitable(result):
                result = await result  # type: ignore[misc]
            assert isinstance(result, ExecutionResult)
            errors = result.errors or []
            if errors:
                self.schema._process_errors(errors)
                errors = [map_error(e) for e in errors]
            codes = [str((e.extensions or {}).get("code") or UNKNOWN) for e in errors]
            cost["actualQueryCost"] = prepared.analyzer.actual_cost(result.data)
            response = {"data": result.data}
            if errors:
                response["errors"] = [e.formatted for e in errors]
            response["extensions"] = {"cost": cost}
        metrics.observe_operation(label, kind, time.perf_counter() - start)
        metrics.observe_errors(label, codes)
        self._log_operation(context, label, kind)
        if errors:
            self.view._handle_errors(errors, response)  # type: ignore[arg-type]
        sub_response.media_type = prepared.media
        return self.view.create_response(response, sub_response)  # type: ignore[arg-type]

    @staticmethod
    def _log_operation(context: Context, label: str, kind: str) -> None:
        # Read by the access log (cryptovault.middleware).
        request = context.request
        state = request.scope.setdefault("state", {})
        state.setdefault("graphql_operations", []).append((label, kind))


def lean_sub_response() -> Response:
    """What Strawberry's view gives the context as its `response` (headers and
    cookies set there are copied to the answer)."""
    sub_response = Response()
    sub_response.status_code = None  # type: ignore[assignment]
    del sub_response.headers["content-length"]
    return sub_response
