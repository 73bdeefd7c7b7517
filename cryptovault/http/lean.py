"""The lean HTTP path: a POSTed query or mutation whose document this process has
already parsed and validated (the parser cache, which persisted and trusted documents
reach too) runs on graphql-core directly (or is served its kept answer: schema.results),
with the schema extensions' work fused into one pass, its answer serialized with orjson
and written once.

Everything else (a new document, batches, GET, introspection, an operation over a
limit, APQ registrations, any request the view would refuse) takes
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

import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
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

from cryptovault.errors import DomainError
from cryptovault.extensions.cost import Analysis, CostAnalyzer
from cryptovault.extensions.limits import (
    CACHE_SIZE,
    Protection,
    budget_exhausted,
    identity_key,
    rate_limit_raw_headers,
    throttle_status,
)
from cryptovault.extensions.limits import _analyses as analyses
from cryptovault.extensions.masking import ErrorMapping, map_error
from cryptovault.extensions.metrics import UNKNOWN, OperationMetrics
from cryptovault.extensions.metrics import _escaped_code as escaped_code
from cryptovault.extensions.parsing import Parsing, Validation, cached_document, cached_validation
from cryptovault.http.prepared import PreparedOperation, prepare
from cryptovault.middleware import Answer
from cryptovault.observability.metrics import ANONYMOUS
from cryptovault.schema.results import (
    KeptResults,
    answer_key,
    keep,
    keeps_answer,
    kept_answer,
    recording,
)
from cryptovault.security.authenticator import request_header

if TYPE_CHECKING:
    from cryptovault.config import Settings
    from cryptovault.http.view import GraphQLView
    from cryptovault.resolvers.context import Context

__all__ = ["Answer", "LeanPath", "Prepared", "lean_sub_response", "request_header"]

# The schema's extensions (schema.build_schema) whose work `LeanPath.run` does.
PIPELINE = (OperationMetrics, ErrorMapping, Parsing, Validation, Protection, KeptResults)

JSON = "application/json"
_MEDIA_BYTES = {
    JSON: JSON.encode(),
    "application/graphql-response+json": b"application/graphql-response+json",
}
_REQUEST_KEYS = frozenset(("query", "operationName", "variables", "extensions"))
# The largest request body whose query is remembered (LeanPath._bodies).
_BODY_KEPT = 4096

type _Operation = tuple[
    DocumentNode, OperationDefinitionNode | None, bool, dict[bool, PreparedOperation | None]
]


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
    # Its answers are kept (schema.results: every root field reads shared state).
    keeps: bool = False
    # "query" or "mutation" (the operation's type, as the metrics label it).
    kind: str = "query"
    # Its prepared execution (http/prepared.py) per hide-suggestions flag, shared by
    # every request for the document (None: graphql-core's `execute`).
    executions: dict[bool, PreparedOperation | None] = field(default_factory=dict)


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
        # id(document) -> (the document, its operation or None (not served here),
        # whether its answers are kept, its prepared executions).
        self._operations: dict[int, _Operation] = {}
        # (query, operation name, media type, variables is None) -> its plan, for
        # requests without variables or extensions (checked against the cached
        # document, which the parser cache may have replaced).
        self._plans: dict[tuple[str, str | None, str, bool], Prepared] = {}
        # Request bodies (up to _BODY_KEPT bytes) of a query and operation name only,
        # without variables or extensions -> that query and operation name.
        self._bodies: dict[bytes, tuple[str, str | None]] = {}

    async def prepare(self, request: Request, accept: str | None) -> Prepared | None:
        """The operation, when the lean path can serve it; None: take the view."""
        if not self.enabled or request.method != "POST":
            return None
        content_type = request_header(request.scope, b"content-type") or ""
        if content_type.split(";", 1)[0].strip().lower() != JSON:
            return None
        if accept is None:
            return None
        # Kept on the request for the view (the edge read it already: no await then).
        body = getattr(request, "_body", None)
        if body is None:
            body = await request.body()
        services = self.view._app.state.services
        persisted = services.persisted_queries
        known = self._bodies.get(body)
        if known is not None and persisted.mode != "only":
            # A body seen before, of a query and operation name only: what decoding it
            # and resolving its query (itself, outside trusted mode) would give again.
            return self.plan(services.settings, known[0], known[1], None, None, accept)
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
        if query and variables is None and extensions is None and len(body) <= _BODY_KEPT:
            if len(self._bodies) >= CACHE_SIZE:
                self._bodies.clear()
            self._bodies[body] = (query, operation_name)
        if persisted.mode != "off" or extensions:
            try:
                query = await persisted.resolve(query, extensions)
            except DomainError:
                return None
            if persisted.pending(query) is not None:
                return None  # a registration: charged and kept by the view
        if not query:
            return None
        return self.plan(services.settings, query, operation_name, variables, extensions, accept)

    def plan(
        self,
        settings: Settings,
        query: str,
        operation_name: str | None,
        variables: dict[str, Any] | None,
        extensions: dict[str, Any] | None,
        media: str = JSON,
    ) -> Prepared | None:
        """The operation of `query`, when its document is cached, validated and within
        the limits; None otherwise (the view then parses, validates, refuses it)."""
        document = cached_document(query, settings.max_tokens)
        if document is None:
            return None
        plain = not variables and extensions is None
        if plain:
            # Without variables, all below depends on the document alone.
            memo_key = (query, operation_name, media, variables is None)
            known = self._plans.get(memo_key)
            if known is not None and known.document is document:
                return known
        found = self._operations.get(id(document))
        if found is None or found[0] is not document:
            found = (document, *self._operation(document), {})
            if len(self._operations) >= CACHE_SIZE:
                self._operations.clear()
            self._operations[id(document)] = found
        operation, keeps, executions = found[1], found[2], found[3]
        if operation is None:
            return None
        name = operation.name.value if operation.name else None
        if operation_name is not None and operation_name != name:
            return None
        if cached_validation(self.core, document, self.rules, settings.is_production) != []:
            return None  # not validated yet, or invalid: the view reports it
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
        prepared = Prepared(
            query,
            document,
            operation,
            name,
            variables,
            extensions,
            analyzer,
            analysis,
            media,
            keeps,
            operation.operation.value,
            executions,
        )
        if plain:
            if len(self._plans) >= CACHE_SIZE:
                self._plans.clear()
            self._plans[memo_key] = prepared
        return prepared

    def _operation(self, document: DocumentNode) -> tuple[OperationDefinitionNode | None, bool]:
        """The document's one query or mutation, and whether its answers are kept
        (schema.results)."""
        operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
        if len(operations) != 1:
            return None, False
        operation = operations[0]
        if operation.operation not in (OperationType.QUERY, OperationType.MUTATION):
            return None, False
        return operation, keeps_answer(self.core, operation)

    async def run(
        self, prepared: Prepared, context: Context, sub_response: Response
    ) -> Answer | Response:
        """Charge, execute and answer `prepared` in `context` (whose `response` is
        `sub_response`): what the extensions (metrics, error mapping, protection) and
        the view do for it, in one pass."""
        start = time.perf_counter()
        metrics = context.services.metrics
        kind = prepared.kind
        label = metrics.operation_label(prepared.operation_name or ANONYMOUS)
        requested = prepared.analysis.cost
        status = await context.services.limiter.spend(identity_key(context), requested)
        context.state["budget"] = status
        # As Protection's headers.update() on the view's fresh sub-response.
        limit_headers = rate_limit_raw_headers(status)
        sub_response.raw_headers.extend(limit_headers)
        cost: dict[str, Any] = {"requestedQueryCost": requested, "actualQueryCost": 0}
        cost["throttleStatus"] = throttle_status(status)
        response: dict[str, Any]
        if not status.allowed:
            # As Protection raises it before execution: a request error, no `data`.
            refused = budget_exhausted(requested, status)
            raw = GraphQLError(str(refused), original_error=refused)
            self.schema._process_errors([raw])
            errors = [map_error(raw)]
            codes = [escaped_code(refused)]
            response = {"errors": [e.formatted for e in errors], "extensions": {"cost": cost}}
        else:
            if prepared.keeps:
                result, memo = await self._answer(prepared, context)
            else:
                # _execute's work, without its coroutine.
                started = self._started(prepared, context)
                if optimized_is_awaitable(started):
                    started = await started  # type: ignore[misc]
                assert isinstance(started, ExecutionResult)
                result, memo = started, None
            errors = result.errors or []
            if errors:
                self.schema._process_errors(errors)
                errors = [map_error(e) for e in errors]
                codes = [str((e.extensions or {}).get("code") or UNKNOWN) for e in errors]
            else:
                codes = []
            if memo is not None and "cost" in memo:
                cost["actualQueryCost"] = memo["cost"]  # the same data as when computed
            else:
                cost["actualQueryCost"] = prepared.analyzer.actual_cost(result.data)
                if memo is not None:
                    memo["cost"] = cost["actualQueryCost"]
            response = {"data": result.data}
            if errors:
                response["errors"] = [e.formatted for e in errors]
            response["extensions"] = {"cost": cost}
        metrics.observe_operation(label, kind, time.perf_counter() - start)
        if codes:
            metrics.observe_errors(label, codes)
        self._log_operation(context, label, kind)
        if errors:
            self.view._handle_errors(errors, response)  # type: ignore[arg-type]
        sub_response.media_type = prepared.media
        if sub_response.background is not None:
            return self.view.create_response(response, sub_response)  # type: ignore[arg-type]
        # What the view's create_response makes of it, written without a Response.
        # 429 and 400 need an error; the view decides them.
        code = (
            self.view.response_status(response, sub_response)  # type: ignore[arg-type]
            if errors
            else 200
        )
        body = orjson.dumps(response)
        headers = [
            (b"content-length", b"%d" % len(body)),
            (b"content-type", _MEDIA_BYTES.get(prepared.media) or prepared.media.encode()),
        ]
        own = sub_response.raw_headers
        # Only the budget's headers (no resolver set any): none is one the edge sets.
        plain = own == limit_headers
        headers += own if plain else [h for h in own if h[0] != b"content-type"]
        return Answer(sub_response.status_code or code, headers, body, plain)

    async def _answer(
        self, prepared: Prepared, context: Context
    ) -> tuple[ExecutionResult, dict[str, int] | None]:
        """The operation's result, kept or executed (KeptResults' work), and where its
        actual cost is remembered when the answer is kept."""
        key = (
            answer_key(
                context.services,
                self.core,
                prepared.document,
                prepared.operation_name,
                prepared.variables,
            )
            if prepared.keeps
            else None
        )
        if key is None:
            return await self._execute(prepared, context), None
        kept = kept_answer(key)
        if kept is not None:
            return ExecutionResult(data=kept.data), kept.costs
        with recording() as recorded:
            result = await self._execute(prepared, context)
        kept = keep(key, result, recorded, (context.services, self.core, prepared.document))
        return result, kept.costs if kept is not None else None

    async def _execute(self, prepared: Prepared, context: Context) -> ExecutionResult:
        result = self._started(prepared, context)
        if optimized_is_awaitable(result):
            result = await result  # type: ignore[misc]
        assert isinstance(result, ExecutionResult)
        return result

    def _started(
        self, prepared: Prepared, context: Context
    ) -> ExecutionResult | Awaitable[ExecutionResult]:
        """The operation executed: its result, or what to await for it."""
        hide = context.services.settings.is_production  # hide_suggestions, for a Context
        executions = prepared.executions
        if hide in executions:
            execution = executions[hide]
        else:
            execution = executions[hide] = prepare(
                self.core, prepared.document, prepared.operation, self.executor, hide
            )
        if execution is not None:
            return execution.execute(context, prepared.variables, prepared.extensions)
        return execute(  # type: ignore[return-value]
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

    @staticmethod
    def _log_operation(context: Context, label: str, kind: str) -> None:
        # Read by the access log (cryptovault.middleware).
        request = context.request
        if not isinstance(request, Request):
            return  # run in process (bench.queries)
        state = request.scope.setdefault("state", {})
        state.setdefault("graphql_operations", []).append((label, kind))


def lean_sub_response() -> Response:
    """What Strawberry's view gives the context as its `response` (headers and
    cookies set there are copied to the answer)."""
    return _SubResponse()


class _SubResponse(Response):
    """Strawberry's sub-response (a Response without status, body or headers),
    made without the work of a Response's constructor."""

    def __init__(self) -> None:
        self.status_code = None  # type: ignore[assignment]
        self.background = None
        self.body = b""
        self.raw_headers = []
