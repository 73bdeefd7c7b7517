"""ASGI middleware: a request id on every request (taken from X-Request-ID or made
up), echoed in the response and bound to every log line; one access log line per
HTTP request (with the GraphQL operation names, and the user id when known) and its
Prometheus metrics."""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cryptovault.logs import request_id_var, user_id_var

if TYPE_CHECKING:
    from cryptovault.observability.metrics import Metrics

log = logging.getLogger("cryptovault.access")

_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def _metrics(scope: Scope) -> Metrics | None:
    services = getattr(getattr(scope.get("app"), "state", None), "services", None)
    return getattr(services, "metrics", None)


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        incoming = ""
        for name, value in scope.get("headers", []):
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        # Only accept well-formed ids: they end up in logs and headers.
        request_id = incoming if _VALID_ID.match(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)
        user_token = user_id_var.set(None)
        start = time.perf_counter()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if scope["type"] == "http":
                seconds = time.perf_counter() - start
                fields: dict[str, object] = {
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round(seconds * 1000, 2),
                    "client": (scope.get("client") or ("", 0))[0],
                }
                # Left by the OperationMetrics schema extension (several in a batch).
                operations = scope["state"].get("graphql_operations")
                if operations:
                    fields["operation"] = ",".join(name for name, _ in operations)
                    fields["operation_type"] = ",".join(kind for _, kind in operations)
                log.info("request", extra=fields)
                metrics = _metrics(scope)
                if metrics is not None:
                    metrics.observe_http(scope["method"], scope["path"], status, seconds)
            request_id_var.reset(token)
            user_id_var.reset(user_token)
