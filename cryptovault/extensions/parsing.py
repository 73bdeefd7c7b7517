"""Schema extensions that parse and validate every operation, with caches, at the
caller's cost:

- `Parsing`: a cached parse bounded by MAX_TOKENS (lexical tokens and comments);
- `Validation`: cached validation with graphql-core's MaxIntrospectionDepthRule, and
  no "Did you mean ..." suggestions in production.

Invariant: CPU spent parsing and validating a document this process has not seen is
charged to the caller's cost budget in full (README "Budgets"): one point per
DOCUMENT_POINT_SECONDS beyond the first DOCUMENT_FREE_SECONDS, whether the document
turns out valid or not, even beyond what is left of the budget (a debt the refill pays
off). A caller with no point left gets no new document parsed, nor validated. Without
this, 2,000 tokens of repeated fields cost ~0.5 s of validation for free, and a
caller near the end of its budget would get it at a discount. Cached documents cost
nothing here.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

from graphql import (
    DocumentNode,
    FieldNode,
    GraphQLError,
    GraphQLSchema,
    NameNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    parse,
    validate,
)
from graphql.validation import ASTValidationRule, MaxIntrospectionDepthRule
from strawberry.extensions import SchemaExtension
from strawberry.schema.validation_rules.maybe_null import MaybeNullValidationRule
from strawberry.schema.validation_rules.one_of import OneOfInputValidationRule
from strawberry.types import ExecutionContext

if TYPE_CHECKING:
    from cryptovault.resolvers.context import Context

from cryptovault.errors import RateLimited
from cryptovault.extensions.caches import Lru
from cryptovault.extensions.limits import (
    CACHE_SIZE,
    DocumentWork,
    app_context,
    document_work,
    hide_suggestions,
    identity_key,
)
from cryptovault.protection.limiter import BudgetStatus

__all__ = ["DOCUMENT_FREE_SECONDS", "DOCUMENT_POINT_SECONDS", "Parsing", "Validation"]

# An operation costs ~0.05 ms of CPU per point to execute; parsing and validation are
# charged at half that rate. Ordinary documents take 1-4 ms (GraphiQL's introspection
# query 4 ms): the first 10 ms are free, so that they never pay.
DOCUMENT_POINT_SECONDS = 0.0001
DOCUMENT_FREE_SECONDS = 0.010


def document_points(cpu_seconds: float) -> int:
    return max(0, math.ceil((cpu_seconds - DOCUMENT_FREE_SECONDS) / DOCUMENT_POINT_SECONDS))


async def _charge(work: DocumentWork, ctx: Context) -> None:
    """Charge the work done and not paid for yet, in full: never refused, it may
    leave the caller in debt."""
    points = document_points(work.seconds) - work.charged
    if points > 0:
        await ctx.services.limiter.charge(identity_key(ctx), points)
        work.charged += points


# (query text, MAX_TOKENS) -> its document.
_documents: Lru[tuple[str, int], DocumentNode] = Lru(CACHE_SIZE)


def cached_document(query: str, max_tokens: int) -> DocumentNode | None:
    """The document `Parsing` parsed for `query`, if it is still cached."""
    return _documents.get((query, max_tokens))


def _unparsed(operation_name: str | None) -> DocumentNode:
    """Stands for a document refused before it was parsed: Strawberry reads the
    operation's type between parsing and validation, where the refusal is reported."""
    operation = OperationDefinitionNode(
        operation=OperationType.QUERY,
        name=NameNode(value=operation_name) if operation_name else None,
        variable_definitions=(),
        directives=(),
        selection_set=SelectionSetNode(
            selections=(FieldNode(name=NameNode(value="__typename"), arguments=(), directives=()),)
        ),
    )
    return DocumentNode(definitions=(operation,))


class Parsing(SchemaExtension):
    def on_operation(self) -> Iterator[None]:
        ctx = app_context(self.execution_context.context)
        if ctx is not None:
            limit = ctx.services.settings.max_tokens
            # Strawberry's own parse (which reports syntax errors) uses these too.
            self.execution_context.parse_options.update(  # type: ignore[call-arg]
                max_lexical_tokens=limit, max_comments=limit
            )
        yield

    async def on_parse(self) -> AsyncIterator[None]:
        ec = self.execution_context
        limit = ec.parse_options.get("max_lexical_tokens")
        if ec.query and isinstance(limit, int):
            document = cached_document(ec.query, limit)
            if document is None:
                document = await self._parse_new(ec, ec.query, limit)
            # None: Strawberry parses it again to report the syntax error.
            ec.graphql_document = document
        yield

    async def _parse_new(self, ec: ExecutionContext, query: str, limit: int) -> DocumentNode | None:
        work = document_work(ec)
        ctx = app_context(ec.context)
        if ctx is not None:
            status = await ctx.services.limiter.afford(identity_key(ctx), 1)
            if not status.allowed:
                work.refused = _budget_exhausted(status)
                return _unparsed(ec.operation_name)
        try:
            with work.measure():
                document = parse(query, max_lexical_tokens=limit, max_comments=limit)
        except GraphQLError:
            # Strawberry parses it again to report the error: the same work twice.
            work.seconds *= 2
            if ctx is not None:
                await _charge(work, ctx)
            return None
        _documents.put((query, limit), document)
        return document


# (schema, document, rules, hide suggestions) -> the validation errors.
_validations: Lru[
    tuple[int, int, tuple[type[ASTValidationRule], ...], bool], list[GraphQLError]
] = Lru(CACHE_SIZE)


def cached_validation(
    schema: GraphQLSchema,
    document: DocumentNode,
    rules: tuple[type[ASTValidationRule], ...],
    hide: bool,
) -> list[GraphQLError] | None:
    """The errors `Validation` found in `document`, if it is still cached."""
    return _validations.get((id(schema), id(document), rules, hide))


class Validation(SchemaExtension):
    async def on_validate(self) -> AsyncIterator[None]:
        ec = self.execution_context
        refused = document_work(ec).refused
        if refused is not None:
            ec.pre_execution_errors = [refused]
            yield
            return
        assert ec.graphql_document is not None
        extra = (MaxIntrospectionDepthRule, MaybeNullValidationRule, OneOfInputValidationRule)
        rules = (*ec.validation_rules, *(r for r in extra if r not in ec.validation_rules))
        schema = ec.schema._schema
        hide = hide_suggestions(ec.context)
        key = (id(schema), id(ec.graphql_document), rules, hide)
        errors = _validations.get(key)
        if errors is None:
            errors = await self._validate_new(ec, key, rules, hide)
        ec.pre_execution_errors = errors
        yield

    async def _validate_new(
        self,
        ec: ExecutionContext,
        key: tuple[int, int, tuple[type[ASTValidationRule], ...], bool],
        rules: tuple[type[ASTValidationRule], ...],
        hide: bool,
    ) -> list[GraphQLError]:
        assert ec.graphql_document is not None
        work = document_work(ec)
        ctx = app_context(ec.context)
        if ctx is not None:
            status = await ctx.services.limiter.afford(
                identity_key(ctx), document_points(work.seconds) + 1
            )
            if not status.allowed:
                await _charge(work, ctx)  # its parsing
                return [_budget_exhausted(status)]
        schema = ec.schema._schema
        with work.measure():
            errors = validate(schema, ec.graphql_document, rules, hide_suggestions=hide)
        _validations.put(key, errors, keep=(schema, ec.graphql_document))
        if ctx is not None:
            await _charge(work, ctx)
        return errors


def _budget_exhausted(status: BudgetStatus) -> GraphQLError:
    retry = max(1, math.ceil(status.retry_after))
    refused = RateLimited(
        "Cost budget exhausted: a document this server has not seen yet is parsed and "
        f"validated at the caller's cost, and {status.remaining} of {status.limit} points "
        f"are left; retry in {retry} s",
        retryAfter=retry,
        remaining=status.remaining,
        limit=status.limit,
    )
    return GraphQLError(refused.message, original_error=refused)
