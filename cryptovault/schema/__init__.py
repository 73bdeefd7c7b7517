"""The GraphQL schema: root types composed from each domain's pieces."""

from __future__ import annotations

import strawberry
from strawberry.extensions import ParserCache, ValidationCache
from strawberry.schema.config import StrawberryConfig

from cryptovault.schema.errors import ErrorMapping
from cryptovault.schema.market import MarketQuery, MarketSubscription
from cryptovault.schema.metrics import OperationMetrics
from cryptovault.schema.scalars import SCALAR_MAP


@strawberry.type(description="Every read: market data, the viewer's data, admin views.")
class Query(MarketQuery):
    pass


@strawberry.type(description="Live streams over WebSocket (graphql-transport-ws or graphql-ws).")
class Subscription(MarketSubscription):
    pass


def build_schema() -> strawberry.Schema:
    return strawberry.Schema(
        query=Query,
        subscription=Subscription,
        extensions=[
            # First: its exit hooks run last, after ErrorMapping has set the codes.
            OperationMetrics,
            ErrorMapping,
            # Factories: a fresh extension per request; the caches are module-level.
            lambda: ParserCache(maxsize=1024),
            lambda: ValidationCache(maxsize=1024),
        ],
        config=StrawberryConfig(auto_camel_case=True, scalar_map=SCALAR_MAP),  # type: ignore[arg-type]
    )


def schema_sdl() -> str:
    return strawberry.printer.print_schema(build_schema()) + "\n"
