"""The one place that turns exceptions into GraphQL errors with a stable
`extensions.code`. Domain errors keep their message; errors raised before execution
(syntax, validation, variable coercion) are BAD_USER_INPUT; anything else is masked
as INTERNAL_SERVER_ERROR with an error id that is also in the log."""

from __future__ import annotations

import logging
import uuid

from graphql import GraphQLError, GraphQLSyntaxError
from strawberry.extensions import MaskErrors

from cryptovault.errors import DomainError

log = logging.getLogger("cryptovault.errors")

INTERNAL_MESSAGE = "Internal server error"


def map_error(error: GraphQLError) -> GraphQLError:
    original = error.original_error
    if isinstance(original, DomainError):
        return GraphQLError(
            original.message,
            nodes=error.nodes,
            path=error.path,
            extensions={"code": original.code, **original.extensions},
        )
    if isinstance(original, GraphQLError) and (original.extensions or {}).get("code"):
        return original
    if error.extensions and error.extensions.get("code"):
        return error
    if isinstance(error, GraphQLSyntaxError) and error.message.endswith("Parsing aborted."):
        # The parser's limits (MAX_TOKENS, nesting): the document is too big to parse.
        return GraphQLError(
            error.message.removeprefix("Syntax Error: "),
            nodes=error.nodes,
            source=error.source,
            positions=error.positions,
            extensions={"code": "QUERY_TOO_COMPLEX", "limit": "tokens"},
        )
    if error.path is None:
        # Raised before execution: bad syntax, an unknown field, a bad variable.
        return GraphQLError(
            error.message,
            nodes=error.nodes,
            source=error.source,
            positions=error.positions,
            extensions={"code": "BAD_USER_INPUT"},
        )
    error_id = uuid.uuid4().hex
    log.error(
        "unexpected error in a resolver",
        exc_info=original or error,
        extra={"error_id": error_id, "path": ".".join(map(str, error.path))},
    )
    report_unexpected(original or error, error_id)
    return GraphQLError(
        INTERNAL_MESSAGE,
        nodes=error.nodes,
        path=error.path,
        extensions={"code": "INTERNAL_SERVER_ERROR", "errorId": error_id},
    )


def report_unexpected(exc: BaseException, error_id: str) -> None:
    """Send the original exception to Sentry (when configured), tagged with the id the
    client saw."""
    try:
        import sentry_sdk
    except ImportError:  # pragma: no cover
        return
    if sentry_sdk.get_client().is_active():
        with sentry_sdk.new_scope() as scope:
            scope.set_tag("error_id", error_id)
            sentry_sdk.capture_exception(exc)


class ErrorMapping(MaskErrors):
    """MaskErrors' hooks cover queries, mutations and every subscription event; we
    only change what happens to each error."""

    def _process_errors(self, errors: list[GraphQLError]) -> list[GraphQLError]:
        return [map_error(e) for e in errors]
