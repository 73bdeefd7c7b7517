"""Sentry error reporting (only when SENTRY_DSN is set).

Only unexpected errors become events: extensions/masking.py map_error() reports each one
once, tagged with the `errorId` the client saw. Sentry's Strawberry integration
would also send every GraphQL error of a response (permission denials, bad input);
`before_send` drops those. Secrets never leave the process: request bodies are not
attached, frame locals are not sent (a resolver's locals may hold a password), and
every event is scrubbed of password/token/secret/OTP/API-key fields, credential
headers and cookies, the GraphQL response, and the whole GraphQL payload of auth
mutations (their query text may hold inline secrets too)."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode

from graphql import FieldNode, GraphQLError, OperationDefinitionNode, OperationType, parse

from cryptovault import __version__
from cryptovault.config import Settings
from cryptovault.logs import request_id_var, user_id_var

log = logging.getLogger(__name__)

FILTERED = "[Filtered]"

# Mutations whose variables (and inline arguments) are credentials or return them.
AUTH_MUTATIONS = frozenset(
    {
        "register",
        "login",
        "refreshToken",
        "logout",
        "changePassword",
        "requestPasswordReset",
        "resetPassword",
        "enableTwoFactor",
        "confirmTwoFactor",
        "disableTwoFactor",
        "createApiKey",
        "revokeApiKey",
        "revokeSession",
        "revokeOtherSessions",
    }
)
# Keys (compared lower-case without separators) whose values are secrets.
_SECRET_PARTS = (
    "password",
    "passwd",
    "secret",
    "token",
    "apikey",
    "authorization",
    "cookie",
    "credential",
    "privatekey",
    "jwt",
)
_SECRET_KEYS = frozenset(
    {"otp", "totp", "otpcode", "totpcode", "twofactorcode", "recoverycode", "recoverycodes"}
)
_SEPARATORS = re.compile(r"[^a-z0-9]")


def is_secret_key(key: object) -> bool:
    if not isinstance(key, str):
        return False
    normalized = _SEPARATORS.sub("", key.lower())
    return normalized in _SECRET_KEYS or any(part in normalized for part in _SECRET_PARTS)


def is_auth_operation(query: object) -> bool:
    """Whether a GraphQL document contains an auth mutation. A document that does
    not parse counts as one: it cannot be shown to be harmless."""
    if not isinstance(query, str):
        return False
    try:
        document = parse(query)
    except GraphQLError:
        return True
    for definition in document.definitions:
        if (
            isinstance(definition, OperationDefinitionNode)
            and definition.operation is OperationType.MUTATION
        ):
            for selection in definition.selection_set.selections:
                if isinstance(selection, FieldNode) and selection.name.value in AUTH_MUTATIONS:
                    return True
    return False


def scrub(value: Any) -> Any:
    """A copy of `value` with every secret-named key's value replaced."""
    if isinstance(value, Mapping):
        return {k: FILTERED if is_secret_key(k) else scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        # Header lists: [["authorization", "Bearer ..."], ...]
        if len(value) == 2 and is_secret_key(value[0]) and isinstance(value[1], str):
            return [value[0], FILTERED]
        return [scrub(v) for v in value]
    return value


def _scrub_graphql_payload(data: Any) -> Any:
    payloads = data if isinstance(data, list) else [data]
    if any(isinstance(p, Mapping) and is_auth_operation(p.get("query")) for p in payloads):
        return FILTERED
    return scrub(data)


def _scrub_query_string(query_string: str) -> str:
    pairs = parse_qsl(query_string, keep_blank_values=True)
    if any(key == "query" and is_auth_operation(value) for key, value in pairs):
        return FILTERED
    return urlencode([(k, FILTERED if is_secret_key(k) else v) for k, v in pairs])


def before_send(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any] | None:
    exception_values = (event.get("exception") or {}).get("values") or []
    if any((v.get("mechanism") or {}).get("type") == "strawberry" for v in exception_values):
        # The Strawberry integration reports every error of every response; the
        # unexpected ones were already reported by map_error() with their error id.
        return None
    request = event.get("request")
    if isinstance(request, dict):
        if "data" in request:
            request["data"] = _scrub_graphql_payload(request["data"])
        request.pop("cookies", None)
        if isinstance(request.get("query_string"), str):
            request["query_string"] = _scrub_query_string(request["query_string"])
    contexts = event.get("contexts")
    if isinstance(contexts, dict):
        contexts.pop("response", None)  # a GraphQL response may carry tokens
    tags = event.setdefault("tags", {})
    if isinstance(tags, dict) and (request_id := request_id_var.get()):
        tags.setdefault("request_id", request_id)
    if user_id := user_id_var.get():
        event["user"] = {"id": user_id}
    else:
        event.pop("user", None)
    return scrub(event)


def init_sentry(settings: Settings, transport: Any = None) -> bool:
    """Start Sentry when SENTRY_DSN is set (once per process). Must run before the
    schema is built: the Strawberry integration hooks schema construction."""
    if not settings.sentry_dsn:
        return False
    import sentry_sdk
    from sentry_sdk.integrations.logging import LoggingIntegration, ignore_logger
    from sentry_sdk.integrations.starlette import StarletteIntegration
    from sentry_sdk.integrations.strawberry import StrawberryIntegration

    if sentry_sdk.get_client().is_active():
        return True
    sentry_sdk.init(
        dsn=settings.sentry_dsn,
        environment=settings.sentry_environment or settings.environment,
        release=settings.sentry_release or f"cryptovault@{__version__}",
        traces_sample_rate=settings.sentry_traces_sample_rate,
        profiles_sample_rate=settings.sentry_profiles_sample_rate,
        # Neither `send_default_pii` nor `data_collection`: the SDK then sends no
        # personal data (no IP address, cookies, bodies or GraphQL documents).
        max_request_body_size="never",
        include_local_variables=False,
        before_send=before_send,  # type: ignore[arg-type]
        before_send_transaction=before_send,  # type: ignore[arg-type]
        integrations=[
            StarletteIntegration(),
            # The sync extension: the async one makes large list queries 5-7x slower.
            StrawberryIntegration(async_execution=False),
            LoggingIntegration(level=logging.INFO, event_level=logging.ERROR),
        ],
        transport=transport,
    )
    # map_error() logs each unexpected error and reports it itself, with its id.
    ignore_logger("cryptovault.errors")
    log.info(
        "sentry enabled",
        extra={
            "sentry_environment": settings.sentry_environment or settings.environment,
            "traces_sample_rate": settings.sentry_traces_sample_rate,
        },
    )
    return True


def without_field_spans(schema: Any) -> None:
    """Swap the Strawberry integration's extension for one without its per-field
    `resolve` hook. That hook wraps every resolver, traced or not: measured here it
    made a 1,700-field query 60 % slower (8.3 -> 13.3 ms) with tracing off. Spans of
    the operation, parsing, validation and execution remain."""
    try:
        from sentry_sdk.integrations.strawberry import SentrySyncExtension
    except ImportError:  # pragma: no cover
        return
    from strawberry.extensions import SchemaExtension

    class SentryOperationSpans(SentrySyncExtension):
        resolve = SchemaExtension.resolve  # type: ignore[assignment]

    schema.extensions = tuple(
        SentryOperationSpans if e is SentrySyncExtension else e for e in schema.extensions
    )


def flush_sentry(timeout: float = 2.0) -> None:
    try:
        import sentry_sdk
    except ImportError:  # pragma: no cover
        return
    client = sentry_sdk.get_client()
    if client.is_active():
        client.flush(timeout=timeout)
