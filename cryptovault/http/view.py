"""The GraphQL HTTP view: Strawberry's ASGI view with our context, orjson encoding and
the HTTP protections (README "Protecting the API"): JSON-only POST bodies, content
negotiation (GraphQL over HTTP), persisted queries, operation types per method, 429
with Retry-After for rate-limited answers, and the request timeout.

The WebSocket side (protocol handlers, connection_init) is added by app.GraphQLApp."""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from typing import Any

import orjson
from cross_web import HTTPException
from graphql import GraphQLError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import MissingQueryError
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData, process_result
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.types import ExecutionResult
from strawberry.types.execution import PreExecutionError
from strawberry.types.graphql import OperationType
from strawberry.types.unset import UNSET

from cryptovault.config import Settings
from cryptovault.errors import DomainError
from cryptovault.extensions.masking import map_error
from cryptovault.http.deadline import within
from cryptovault.http.lean import JSON, Answer, LeanPath, lean_sub_response, request_header
from cryptovault.logs import user_id_var
from cryptovault.middleware import error_response
from cryptovault.resolvers.context import Context
from cryptovault.services import Services
from cryptovault.web import WebApp

log = logging.getLogger("cryptovault.app")

GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"


# Accept header -> its media type: clients send a handful of distinct values, each
# worked out once; past the bound, new values are worked out on every request.
_NEGOTIATED: dict[str | None, str | None] = {}
_NEGOTIATED_MAX = 64


def negotiate(accept: str | None) -> str | None:
    """The response media type for an Accept header (GraphQL over HTTP), or None
    when the client accepts neither JSON type (406)."""
    try:
        return _NEGOTIATED[accept]
    except KeyError:
        media = _negotiate(accept)
    if len(_NEGOTIATED) < _NEGOTIATED_MAX:
        _NEGOTIATED[accept] = media
    return media


def _negotiate(accept: str | None) -> str | None:
    if not accept:
        return JSON
    types = set()
    for part in accept.split(","):
        media, *params = (x.strip() for x in part.split(";"))
        if any(p.replace(" ", "") in ("q=0", "q=0.0", "q=0.00", "q=0.000") for p in params):
            continue
        types.add(media.lower())
    if GRAPHQL_RESPONSE_JSON in types:
        return GRAPHQL_RESPONSE_JSON
    if types & {JSON, "application/*", "*/*"}:
        return JSON
    return None


def _check_operation(item: object) -> None:
    if not isinstance(item, dict):
        raise HTTPException(400, "Each GraphQL request must be a JSON object")
    for key, kinds in (
        ("query", (str, type(None))),
        ("operationName", (str, type(None))),
        ("variables", (dict, type(None))),
        ("extensions", (dict, type(None))),
    ):
        if not isinstance(item.get(key), kinds):
            raise HTTPException(400, f"The request's `{key}` has the wrong type")


class GraphQLView(GraphQL[Context, None]):
    """Strawberry's ASGI view, HTTP side: subclasses set `_app` (for its services),
    `settings` and `web` in their constructor."""

    _app: Starlette
    settings: Settings
    web: WebApp

    @functools.cached_property
    def lean(self) -> LeanPath:
        """Operations whose document is cached skip the extensions (http/lean.py)."""
        return LeanPath(self)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        await self.serve_http(scope, receive, send)

    async def serve_http(
        self, scope: Scope, receive: Receive, send: Send, body: bytes | None = None
    ) -> None:
        """An HTTP request; `body`: its body, when the edge read it already
        (middleware.DirectRoute)."""
        response = await self.respond(scope, receive, body)
        await response(scope, receive, send)

    async def respond(
        self, scope: Scope, receive: Receive, body: bytes | None = None
    ) -> Response | Answer:
        """The response to an HTTP request, within the request timeout (counted from
        here; its timer is only set if the work waits for something: http/deadline.py)."""
        request = Request(scope=scope, receive=receive)
        if body is not None:
            request._body = body  # what Request.body() keeps once read
        timeout = self.settings.request_timeout_seconds
        try:
            return await within(self._respond(request), asyncio.get_running_loop().time() + timeout)
        except HTTPException as exc:
            return self._http_error(exc)
        except TimeoutError:
            error_id = uuid.uuid4().hex
            log.warning("request timed out", extra={"error_id": error_id, "timeout_s": timeout})
            return JSONResponse(
                {
                    "errors": [
                        {
                            "message": "The operation did not finish within "
                            f"{timeout:g} s and was stopped",
                            "extensions": {"code": "INTERNAL_SERVER_ERROR", "errorId": error_id},
                        }
                    ]
                },
                status_code=504,
            )

    async def _respond(self, request: Request) -> Response | Answer:
        accept = request_header(request.scope, b"accept")
        prepared = await self.lean.prepare(request, negotiate(accept))
        if prepared is None:
            return await self.run(request)  # type: ignore[no-any-return]
        sub_response = lean_sub_response()
        services: Services = self._app.state.services
        # An authenticator that can tell (security/authenticator.py) a request it
        # would answer None for at once.
        anonymous = getattr(services.authenticator, "anonymous", None)
        if anonymous is not None and anonymous(request):
            # What get_context makes for it, without awaiting `authenticate`.
            context = Context(services=services, request=request, response=sub_response)
        else:
            context = await self.get_context(request, sub_response)
        return await self.lean.run(prepared, context, sub_response)

    @staticmethod
    def _http_error(exc: HTTPException) -> Response:
        code = "NOT_FOUND" if exc.status_code == 404 else "BAD_USER_INPUT"
        headers = {"Allow": "POST"} if exc.status_code == 405 else None
        return error_response(exc.status_code, exc.reason, code, headers)

    async def run(
        self, request: Request | WebSocket, context: Any = UNSET, root_value: Any = UNSET
    ) -> Any:  # type: ignore[override]
        if isinstance(request, Request) and request.method == "POST":
            content_type = request.headers.get("content-type", "")
            mime = content_type.split(";", 1)[0].strip().lower()
            if mime != JSON:
                # Form and text/plain bodies are what a cross-site form can send
                # without a CORS preflight: refusing them closes that CSRF door.
                raise HTTPException(415, "POST bodies must be application/json")
        return await super().run(request, context, root_value)

    def should_render_graphql_ide(self, request: Any) -> bool:  # type: ignore[override]
        # An APQ GET carries only `extensions`: it is an operation, not a page visit.
        return super().should_render_graphql_ide(request) and (
            request.query_params.get("extensions") is None
        )

    async def render_graphql_ide(self, request: Request) -> Response:  # type: ignore[override]
        return self.web.graphiql(request)

    async def get_sub_response(self, request: Request) -> Response:  # type: ignore[override]
        sub_response = await super().get_sub_response(request)
        media = negotiate(request.headers.get("accept"))
        if media is None:
            if request.method == "GET" and "query" not in request.query_params:
                media = JSON  # a page visit: GraphiQL
            else:
                raise HTTPException(
                    406, f"Accept {GRAPHQL_RESPONSE_JSON} or {JSON} to receive GraphQL responses"
                )
        sub_response.media_type = media
        return sub_response

    def parse_json(self, data: str | bytes) -> Any:  # type: ignore[override]
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise HTTPException(400, "Unable to parse request body as JSON") from None
        return parsed

    async def parse_http_body(self, request: Any) -> Any:  # type: ignore[override]
        if request.method == "POST":
            parsed = self.parse_json(await request.get_body())
            if isinstance(parsed, list):
                if not self.schema.config.batching_config:
                    raise HTTPException(400, "Batched (array) requests are not accepted")
                for item in parsed:
                    _check_operation(item)
            else:
                _check_operation(parsed)
        return await super().parse_http_body(request)

    async def get_context(  # type: ignore[override]
        self, request: Request | WebSocket, response: Response | None = None
    ) -> Context:
        services: Services = self._app.state.services
        # HTTP: credentials from headers. WebSocket: from the connection_init payload,
        # checked in on_ws_connect (the context is built before that message arrives).
        viewer = None
        refused: DomainError | None = None
        if isinstance(request, Request):
            try:
                viewer = await services.authenticator.authenticate(request)
            except DomainError as exc:
                # Public fields still answer; fields that need a viewer raise it.
                refused = exc
            if viewer is not None:
                user_id_var.set(viewer.user_id)
        return Context(
            services=services,
            request=request,
            response=response,  # type: ignore[arg-type]
            viewer=viewer,
            auth_error=refused,
        )

    async def execute_single(  # type: ignore[override]
        self,
        request: Request,
        request_adapter: Any,
        sub_response: Response,
        context: Context,
        root_value: Any,
        request_data: GraphQLRequestData,
    ) -> ExecutionResult:
        try:
            query = await context.services.persisted_queries.resolve(
                request_data.query, request_data.extensions
            )
        except DomainError as exc:
            error = GraphQLError(exc.message, extensions={"code": exc.code, **exc.extensions})
            return PreExecutionError(data=None, errors=[error])
        # Subscriptions are served over WebSocket only; GET carries queries only.
        allowed = {OperationType.QUERY}
        if request_adapter.method == "POST":
            allowed.add(OperationType.MUTATION)
        try:
            return await self.schema.execute(
                query,
                root_value=root_value,
                variable_values=request_data.variables,
                context_value=context,
                operation_name=request_data.operation_name,
                allowed_operation_types=allowed,
                operation_extensions=request_data.extensions,
            )
        except InvalidOperationTypeError as exc:
            if request_adapter.method == "GET":
                raise HTTPException(
                    405, "Only queries may be sent with GET: send mutations with POST"
                ) from exc
            raise HTTPException(400, "Subscriptions are served over WebSocket only") from exc
        except CannotGetOperationTypeError as exc:
            raise HTTPException(400, exc.as_http_error_reason()) from exc
        except MissingQueryError as exc:
            raise HTTPException(400, "No GraphQL query found in the request") from exc

    def encode_json(self, data: object) -> str:
        # A str, not bytes: WebSocket protocols require text frames.
        return orjson.dumps(data).decode()

    async def process_result(  # type: ignore[override]
        self, request: Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        # Errors raised while parsing with the parser cache bypass the schema
        # extensions; map them here too (mapping an already mapped error is a no-op).
        if result.errors:
            result.errors = [map_error(e) for e in result.errors]
        response = process_result(result)
        if isinstance(result, PreExecutionError):
            # GraphQL over HTTP: a request error (nothing executed) has no `data`.
            response.pop("data", None)
        return response

    @staticmethod
    def response_status(
        response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse], sub_response: Response
    ) -> int:
        """429 (with Retry-After) when an operation was rate limited; 400 for a request
        error answered as application/graphql-response+json; else 200."""
        items = response_data if isinstance(response_data, list) else [response_data]
        errors: list[dict[str, Any]] = [
            e  # type: ignore[misc]
            for item in items
            for e in item.get("errors") or ()
        ]
        limited = [e for e in errors if (e.get("extensions") or {}).get("code") == "RATE_LIMITED"]
        if limited:
            if "retry-after" not in sub_response.headers:
                retry = max(
                    int((e.get("extensions") or {}).get("retryAfter") or 1) for e in limited
                )
                sub_response.headers["Retry-After"] = str(retry)
            return 429
        if (
            (sub_response.media_type or JSON) == GRAPHQL_RESPONSE_JSON
            and not isinstance(response_data, list)
            and "data" not in response_data
        ):
            return 400
        return 200

    def create_response(  # type: ignore[override]
        self,
        response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse],
        sub_response: Response,
    ) -> Response:
        media = sub_response.media_type or JSON
        status = self.response_status(response_data, sub_response)
        response = Response(self.encode_json(response_data), status_code=status, media_type=media)
        response.headers.raw.extend(
            (k, v) for k, v in sub_response.headers.raw if k != b"content-type"
        )
        if sub_response.background:
            response.background = sub_response.background
        if sub_response.status_code:
            response.status_code = sub_response.status_code
        return response
