"""Schema extensions that protect every operation, over HTTP and WebSocket alike:

- `Parsing`: a cached parse bounded by MAX_TOKENS (lexical tokens and comments);
- `Validation`: cached validation with graphql-core's MaxIntrospectionDepthRule, and
  no "Did you mean ..." suggestions in production;
- `Protection`: after validation, before any resolver: the introspection policy, the
  shape limits (depth, aliases, directives per field, root fields), the static cost
  against MAX_QUERY_COST, then the caller's cost budget; reports
  `extensions.cost` and the RateLimit headers. A plain introspection is answered from
  the schema's cached result (schema.introspection) at a small fixed cost.
- `HidingSuggestionsExecutor`: no suggestions in variable coercion errors in
  production either.
"""

from __future__ import annotations

import functools
import math
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
from graphql import (
    DocumentNode,
    ExecutionResult,
    GraphQLError,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    get_operation_ast,
    parse,
    validate,
)
from graphql.validation import ASTValidationRule, MaxIntrospectionDepthRule
from starlette.responses import Response
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.schema.validation_rules.maybe_null import MaybeNullValidationRule
from strawberry.schema.validation_rules.one_of import OneOfInputValidationRule

from cryptovault.errors import Forbidden, QueryTooComplex, RateLimited
from cryptovault.protection.limiter import BudgetStatus
from cryptovault.schema import introspection
from cryptovault.schema.context import Context
from cryptovault.schema.cost import Analysis, CostAnalyzer

INTROSPECTION_SCOPE = "schema:read"
CACHE_SIZE = 1024


def _context(value: object) -> Context | None:
    return value if isinstance(value, Context) else None


def _hide_suggestions(context: object) -> bool:
    ctx = _context(context)
    return ctx is not None and ctx.services.settings.is_production


class _Analyses:
    """The static analysis of recent (schema, document, operation, variables): a hot
    query is analysed once, not on every request. Least recently used out first."""

    def __init__(self, size: int) -> None:
        self.size = size
        # Keyed by identity (a document's own hash walks the whole tree); each entry
        # keeps its schema and document alive, so no other object can take their ids
        # while it exists.
        self._entries: OrderedDict[
            tuple[int, int, int, bytes], tuple[Any, DocumentNode, CostAnalyzer, Analysis]
        ] = OrderedDict()

    def get(
        self,
        schema: GraphQLSchema,
        document: DocumentNode,
        operation: OperationDefinitionNode,
        variables: dict[str, Any] | None,
    ) -> tuple[CostAnalyzer, Analysis]:
        try:
            frozen = orjson.dumps(variables, option=orjson.OPT_SORT_KEYS) if variables else b""
        except TypeError:  # not JSON (only from in-process callers): no caching
            analyzer = CostAnalyzer(schema, document, operation, variables)
            return analyzer, analyzer.analyze()
        key = (id(schema), id(document), id(operation), frozen)
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
            return entry[2], entry[3]
        analyzer = CostAnalyzer(schema, document, operation, variables)
        analysis = analyzer.analyze()
        self._entries[key] = (schema, document, analyzer, analysis)
        if len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return analyzer, analysis


_analyses = _Analyses(CACHE_SIZE)


@functools.lru_cache(maxsize=CACHE_SIZE)
def _parse(query: str, max_tokens: int) -> DocumentNode:
    return parse(query, max_lexical_tokens=max_tokens, max_comments=max_tokens)


class Parsing(SchemaExtension):
    def on_operation(self) -> Iterator[None]:
        ctx = _context(self.execution_context.context)
        if ctx is not None:
            limit = ctx.services.settings.max_tokens
            # Strawberry's own parse (which reports syntax errors) uses these too.
            self.execution_context.parse_options.update(  # type: ignore[call-arg]
                max_lexical_tokens=limit, max_comments=limit
            )
        yield

    def on_parse(self) -> Iterator[None]:
        ec = self.execution_context
        limit = ec.parse_options.get("max_lexical_tokens")
        if ec.query and isinstance(limit, int):
            try:
                ec.graphql_document = _parse(ec.query, limit)
            except GraphQLError:
                # Strawberry parses again inside its error handling and reports it.
                ec.graphql_document = None
        yield


@functools.lru_cache(maxsize=CACHE_SIZE)
def _validate(
    schema: GraphQLSchema,
    document: DocumentNode,
    rules: tuple[type[ASTValidationRule], ...],
    hide_suggestions: bool,
) -> list[GraphQLError]:
    return validate(schema, document, rules, hide_suggestions=hide_suggestions)


class Validation(SchemaExtension):
    def on_validate(self) -> Iterator[None]:
        ec = self.execution_context
        assert ec.graphql_document is not None
        extra = (MaxIntrospectionDepthRule, MaybeNullValidationRule, OneOfInputValidationRule)
        rules = (*ec.validation_rules, *(r for r in extra if r not in ec.validation_rules))
        ec.pre_execution_errors = _validate(
            ec.schema._schema, ec.graphql_document, rules, _hide_suggestions(ec.context)
        )
        yield


class HidingSuggestionsExecutor(StrawberryGraphQLCoreExecutionContext):
    @classmethod
    def build(cls, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        context = args[3] if len(args) > 3 else kwargs.get("context_value")
        if _hide_suggestions(context):
            kwargs["hide_suggestions"] = True
        return super().build(*args, **kwargs)


def identity_key(ctx: Context) -> str:
    """Whose budget an operation spends: the user or API key, else the client IP."""
    return ctx.viewer.rate_limit_key if ctx.viewer is not None else f"ip:{ctx.client_ip}"


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


class Protection(SchemaExtension):
    """Runs between validation and execution (`on_execute`), once per operation,
    including when a subscription starts."""

    def __init__(self) -> None:
        self.analyzer: CostAnalyzer | None = None
        self.requested: int | None = None
        self.status: BudgetStatus | None = None
        # Set when the operation was answered from the cached introspection result.
        self.cached: bool = False

    async def on_execute(self) -> AsyncIterator[None]:
        await self._check()
        yield

    async def _check(self) -> None:
        ec = self.execution_context
        ctx = _context(ec.context)
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
            ec.result = ExecutionResult(data=answer)
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
        status = await ctx.services.limiter.spend(identity_key(ctx), cost)
        self.status = status
        ctx.state["budget"] = status
        if isinstance(ctx.response, Response):
            ctx.response.headers.update(rate_limit_headers(status))
        if not status.allowed:
            retry = max(1, math.ceil(status.retry_after))
            raise RateLimited(
                f"Cost budget exhausted: this operation costs {cost}, "
                f"{status.remaining} of {status.limit} points are left; retry in {retry} s",
                retryAfter=retry,
                cost=cost,
                remaining=status.remaining,
                limit=status.limit,
            )

    async def get_results(self) -> dict[str, Any]:  # type: ignore[override]
        if self.requested is None:
            return {}
        ec = self.execution_context
        is_subscription = (
            self.analyzer is not None
            and self.analyzer.operation.operation == OperationType.SUBSCRIPTION
        )
        if is_subscription:
            # Events are executed once per group of subscribers and the same bytes go
            # to each (README "Subscriptions at scale"): no per-viewer budget in them.
            # Starting a subscription is still charged.
            return {}
        ctx = _context(ec.context)
        status = self.status
        if status is None and ctx is not None:
            status = await ctx.services.limiter.peek(identity_key(ctx))
        actual = 0
        if self.cached:
            actual = self.requested
        elif self.analyzer is not None and self.status is not None and self.status.allowed:
            data = getattr(ec.result, "data", None)
            actual = self.analyzer.actual_cost(data)
        cost: dict[str, Any] = {
            "requestedQueryCost": self.requested,
            "actualQueryCost": actual,
        }
        if status is not None:
            cost["throttleStatus"] = {
                "maximumAvailable": status.limit,
                "currentlyAvailable": status.remaining,
                "restoreRate": round(status.restore_rate, 2),
            }
        return {"cost": cost}
