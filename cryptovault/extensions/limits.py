"""Schema extensions that protect every operation, over HTTP and WebSocket alike
(parsing and validation, at the caller's cost: extensions.parsing):

- `Protection`: after validation, before any resolver: the introspection policy, the
  shape limits (depth, aliases, directives per field, root fields), the static cost
  against MAX_QUERY_COST, then the caller's cost budget; reports
  `extensions.cost` and the RateLimit headers. A plain introspection is answered from
  the schema's cached result (extensions.introspection) at a small fixed cost, once its
  variables coerced as executing it would (with the same errors otherwise).
- `HidingSuggestionsExecutor`: no suggestions in variable coercion errors in
  production either.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import math
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from graphql import (
    DocumentNode,
    ExecutionResult,
    GraphQLError,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    get_operation_ast,
)
from starlette.responses import Response
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.types import ExecutionContext

if TYPE_CHECKING:
    from cryptovault.resolvers.context import Context

from cryptovault.errors import Forbidden, QueryTooComplex, RateLimited
from cryptovault.extensions import introspection
from cryptovault.extensions.caches import OperationCache
from cryptovault.extensions.cost import Analysis, CostAnalyzer
from cryptovault.protection.limiter import BudgetStatus

INTROSPECTION_SCOPE = "schema:read"
CACHE_SIZE = 1024
# Set per operation by schema.results: a dict shared by every request served the same
# kept answer, where its actual cost is remembered once computed. A context variable,
# not ctx.state: a WebSocket's operations share one context, and may run at once.
actual_cost_memo: ContextVar[dict[str, int] | None] = ContextVar("actual_cost_memo", default=None)


def app_context(value: object) -> Context | None:
    """The app's Context, or None for an operation run without one (tests, benches)."""
    return value if isinstance(value, _context_class()) else None


@functools.cache
def _context_class() -> type[Context]:
    # Imported on first use: the schema's types import this package (the cost rules).
    from cryptovault.resolvers.context import Context

    return Context


def hide_suggestions(context: object) -> bool:
    ctx = app_context(context)
    return ctx is not None and ctx.services.settings.is_production


def _analyze(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation: OperationDefinitionNode,
    variables: Mapping[str, Any] | None,
) -> tuple[CostAnalyzer, Analysis]:
    analyzer = CostAnalyzer(schema, document, operation, variables)
    return analyzer, analyzer.analyze()


# A hot query is analysed once, not on every request.
_analyses = OperationCache(CACHE_SIZE, _analyze)


def budget_exhausted(cost: int, status: BudgetStatus) -> RateLimited:
    """The refusal of an operation its caller's cost budget cannot pay for."""
    retry = max(1, math.ceil(status.retry_after))
    return RateLimited(
        f"Cost budget exhausted: this operation costs {cost}, "
        f"{status.remaining} of {status.limit} points are left; retry in {retry} s",
        retryAfter=retry,
        cost=cost,
        remaining=status.remaining,
        limit=status.limit,
    )


def throttle_status(status: BudgetStatus) -> dict[str, Any]:
    """`extensions.cost.throttleStatus`: the caller's budget after this operation."""
    return {
        "maximumAvailable": status.limit,
        "currentlyAvailable": status.remaining,
        "restoreRate": _restore_rate(status.limit, status.window_seconds),
    }


@functools.lru_cache(maxsize=64)
def _restore_rate(limit: int, window_seconds: int) -> float:
    """Points restored per second, rounded as the API shows them (one budget
    configuration per kind of caller)."""
    return round(limit / window_seconds, 2)


@dataclass(slots=True)
class DocumentWork:
    """One operation's parsing and validation: CPU seconds spent, points charged, and
    the refusal when the caller could not afford to have its document parsed."""

    seconds: float = 0.0
    charged: int = 0
    refused: GraphQLError | None = None

    @contextlib.contextmanager
    def measure(self) -> Iterator[None]:
        # Garbage collection is held off meanwhile: a collection that happens to fall
        # here is not this document's work.
        enabled = gc.isenabled()
        gc.disable()
        start = time.thread_time()
        try:
            yield
        finally:
            self.seconds += time.thread_time() - start
            if enabled:
                gc.enable()


def document_work(ec: ExecutionContext) -> DocumentWork:
    """Kept on the operation's execution context (a Context lives as long as a
    WebSocket, across its operations)."""
    work = getattr(ec, "_cryptovault_document_work", None)
    if work is None:
        work = DocumentWork()
        setattr(ec, "_cryptovault_document_work", work)  # noqa: B010
    return work


class HidingSuggestionsExecutor(StrawberryGraphQLCoreExecutionContext):
    @classmethod
    def build(cls, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        context = args[3] if len(args) > 3 else kwargs.get("context_value")
        if hide_suggestions(context):
            kwargs["hide_suggestions"] = True
        return super().build(*args, **kwargs)


def identity_key(ctx: Context) -> str:
    """Whose budget an operation spends: the user or API key, else the client IP."""
    return ctx.budget_key


def introspection_allowed(ctx: Context) -> bool:
    if not ctx.services.settings.is_production:
        return True
    return ctx.viewer is not None and ctx.viewer.has_scope(INTROSPECTION_SCOPE)


def rate_limit_headers(status: BudgetStatus) -> dict[str, str]:
    reset_in = math.ceil(status.reset_in)
    headers = {
        # IETF draft-ietf-httpapi-ratelimit-headers: a policy and its current state.
        "RateLimit-Policy": f'"cost";q={status.limit};w={status.window_seconds}',
        "RateLimit": f'"cost";r={status.remaining};t={reset_in}',
        "X-RateLimit-Limit": str(status.limit),
        "X-RateLimit-Remaining": str(status.remaining),
        "X-RateLimit-Reset": str(math.ceil(status.reset_at)),
        "X-RateLimit-Used": str(status.limit - status.remaining),
    }
    if not status.allowed:
        headers["Retry-After"] = str(max(1, math.ceil(status.retry_after)))
    return headers


def rate_limit_raw_headers(status: BudgetStatus) -> list[tuple[bytes, bytes]]:
    """`rate_limit_headers` as a response's raw headers (names lowercased, as
    Starlette's MutableHeaders writes them), made without the dict: a new list of
    them, whose bytes are shared with the last answers of the same budget state
    (the same second, remaining points and limit: e.g. every free `{ ping }`)."""
    limit, remaining = status.limit, status.remaining
    reset_in = math.ceil(status.reset_in)
    reset_at = math.ceil(status.reset_at)
    if not status.allowed:
        return [
            *_budget_headers(limit, status.window_seconds, remaining, reset_in, reset_at),
            (b"retry-after", b"%d" % max(1, math.ceil(status.retry_after))),
        ]
    return list(_budget_headers(limit, status.window_seconds, remaining, reset_in, reset_at))


@functools.lru_cache(maxsize=256)
def _budget_headers(
    limit: int, window_seconds: int, remaining: int, reset_in: int, reset_at: int
) -> tuple[tuple[bytes, bytes], ...]:
    return (
        (b"ratelimit-policy", b'"cost";q=%d;w=%d' % (limit, window_seconds)),
        (b"ratelimit", b'"cost";r=%d;t=%d' % (remaining, reset_in)),
        (b"x-ratelimit-limit", b"%d" % limit),
        (b"x-ratelimit-remaining", b"%d" % remaining),
        (b"x-ratelimit-reset", b"%d" % reset_at),
        (b"x-ratelimit-used", b"%d" % (limit - remaining)),
    )


def _cached_result(
    ec: ExecutionContext, document: DocumentNode, data: dict[str, Any]
) -> ExecutionResult:
    """The cached introspection answer, once the operation's variables coerced: else
    the errors executing it would give (graphql-core coerces them before any field
    runs, with the same executor, so suggestions are hidden alike)."""
    built = ec.schema.execution_context_class.build(
        ec.schema._schema,
        document,
        root_value=ec.root_value,
        context_value=ec.context,
        raw_variable_values=ec.variables,
        operation_name=ec.operation_name,
    )
    if isinstance(built, list):
        return ExecutionResult(data=None, errors=built)
    return ExecutionResult(data=data)


class Protection(SchemaExtension):
    """Runs between validation and execution (`on_execute`), once per operation,
    including when a subscription starts."""

    def __init__(self) -> None:
        self.analyzer: CostAnalyzer | None = None
        self.requested: int | None = None
        self.status: BudgetStatus | None = None
        # Set when the operation was answered from the cached introspection result.
        self.cached: bool = False
        self.registration_cost = 0

    async def on_execute(self) -> AsyncIterator[None]:
        await self._check()
        yield

    async def _check(self) -> None:
        ec = self.execution_context
        ctx = app_context(ec.context)
        if ctx is None or ec.graphql_document is None:
            return
        operation = get_operation_ast(ec.graphql_document, ec.operation_name)
        if operation is None:
            return
        settings = ctx.services.settings
        self.analyzer, analysis = _analyses.get(
            ec.schema._schema, ec.graphql_document, operation, ec.variables
        )
        self.requested = analysis.cost

        if analysis.introspection and not introspection_allowed(ctx):
            raise Forbidden(
                "Introspection is disabled for this caller: authenticate, or use an API key "
                f"with the '{INTROSPECTION_SCOPE}' scope",
                scope=INTROSPECTION_SCOPE,
            )
        answer = (
            introspection.answer(ec.schema._schema, ec.graphql_document, operation, ec.variables)
            if analysis.introspection
            else None
        )
        if answer is not None:
            self.cached = True
            self.requested = introspection.CACHED_INTROSPECTION_COST
            await self._spend(ctx, self.requested)
            ec.result = _cached_result(ec, ec.graphql_document, answer)
            return
        for limit, actual, maximum in (
            ("depth", analysis.depth, settings.max_query_depth),
            ("aliases", analysis.aliases, settings.max_aliases),
            ("directives", analysis.directives, settings.max_directives_per_field),
            ("rootFields", analysis.root_fields, settings.max_root_fields),
        ):
            if actual > maximum:
                raise QueryTooComplex(
                    f"The operation exceeds the {limit} limit ({actual} > {maximum})",
                    limit=limit,
                    actual=actual,
                    maximum=maximum,
                )
        if analysis.cost > settings.max_query_cost:
            raise QueryTooComplex(
                f"The operation costs {analysis.cost}, more than the maximum of "
                f"{settings.max_query_cost}: request fewer items (first/last) or fewer fields",
                limit="cost",
                cost=analysis.cost,
                actual=analysis.cost,
                maximum=settings.max_query_cost,
            )

        await self._spend(ctx, analysis.cost)

    async def _spend(self, ctx: Context, cost: int) -> None:
        """Charge the operation, and the registration of its document when the request
        asked for one (automatic persisted queries): kept only once paid for."""
        persisted = ctx.services.persisted_queries
        registration = persisted.pending(self.execution_context.query)
        if registration is not None:
            cost += registration.cost
        status = await ctx.services.limiter.spend(identity_key(ctx), cost)
        if registration is not None and status.allowed:
            await persisted.register(registration)
            self.registration_cost = registration.cost
        self.status = status
        ctx.state["budget"] = status
        if isinstance(ctx.response, Response):
            ctx.response.headers.update(rate_limit_headers(status))
        if not status.allowed:
            raise budget_exhausted(cost, status)

    async def get_results(self) -> dict[str, Any]:  # type: ignore[override]
        ec = self.execution_context
        document_cost = document_work(ec).charged
        if self.requested is None:
            return {"cost": {"documentCost": document_cost}} if document_cost else {}
        is_subscription = (
            self.analyzer is not None
            and self.analyzer.operation.operation == OperationType.SUBSCRIPTION
        )
        if is_subscription:
            # Events are executed once per group of subscribers and the same bytes go
            # to each (README "Subscriptions at scale"): no per-viewer budget in them.
            # Starting a subscription is still charged.
            return {}
        ctx = app_context(ec.context)
        status = self.status
        if status is None and ctx is not None:
            status = await ctx.services.limiter.peek(identity_key(ctx))
        actual = 0
        if self.cached:
            actual = self.requested
        elif self.analyzer is not None and self.status is not None and self.status.allowed:
            memo = actual_cost_memo.get()
            if memo is not None and "cost" in memo:
                actual = memo["cost"]  # the same data as when it was computed
            else:
                actual = self.analyzer.actual_cost(getattr(ec.result, "data", None))
                if memo is not None:
                    memo["cost"] = actual
        cost: dict[str, Any] = {
            "requestedQueryCost": self.requested,
            "actualQueryCost": actual,
        }
        if document_cost:
            cost["documentCost"] = document_cost
        if self.registration_cost:
            cost["persistedQueryCost"] = self.registration_cost
        if status is not None:
            cost["throttleStatus"] = throttle_status(status)
        return {"cost": cost}
