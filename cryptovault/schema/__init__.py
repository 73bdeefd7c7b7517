"""The GraphQL schema: root types composed from each domain's pieces."""

from __future__ import annotations

import strawberry
from strawberry.schema.config import StrawberryConfig

from cryptovault.extensions.limits import HidingSuggestionsExecutor, Protection
from cryptovault.extensions.masking import ErrorMapping
from cryptovault.extensions.metrics import OperationMetrics
from cryptovault.extensions.parsing import Parsing, Validation
from cryptovault.schema.admin import AdminMutation, AdminQuery
from cryptovault.schema.alerts import AlertMutation, AlertQuery, AlertSubscription
from cryptovault.schema.audit import AuditQuery, AuditSubscription
from cryptovault.schema.auth import AuthMutation, AuthQuery
from cryptovault.schema.market import MarketQuery, MarketSubscription
from cryptovault.schema.nodes import NodeQuery
from cryptovault.schema.ping import PingQuery
from cryptovault.schema.portfolio import PortfolioQuery, PortfolioSubscription
from cryptovault.schema.privacy import PrivacyMutation
from cryptovault.schema.rate_limit import RateLimitQuery
from cryptovault.schema.results import KeptResults
from cryptovault.schema.scalars import SCALAR_MAP
from cryptovault.schema.trading import TradingMutation, TradingQuery, TradingSubscription
from cryptovault.schema.users import UserQuery
from cryptovault.schema.watchlists import WatchlistMutation, WatchlistQuery


@strawberry.type(description="Every read: market data, the viewer's data, admin views.")
class Query(
    MarketQuery,
    UserQuery,
    AuthQuery,
    AuditQuery,
    RateLimitQuery,
    AdminQuery,
    TradingQuery,
    PingQuery,
    WatchlistQuery,
    AlertQuery,
    PortfolioQuery,
    NodeQuery,
):
    pass


@strawberry.type(description="Every change: sign-in and account management, trading, admin.")
class Mutation(
    AuthMutation, TradingMutation, PrivacyMutation, AdminMutation, WatchlistMutation, AlertMutation
):
    pass


@strawberry.type(description="Live streams over WebSocket (graphql-transport-ws or graphql-ws).")
class Subscription(
    MarketSubscription,
    TradingSubscription,
    AuditSubscription,
    AlertSubscription,
    PortfolioSubscription,
):
    pass


def build_schema(max_batch_operations: int = 0) -> strawberry.Schema:
    """`max_batch_operations` > 0 accepts JSON arrays of up to that many operations."""
    return strawberry.Schema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        # Classes: a fresh extension per operation; the parse and validation caches
        # are module-level. Order matters: errors are mapped last, on the way out,
        # and metrics (first) see the mapped codes; kept answers (last) are served only
        # after Protection has checked and charged the operation.
        extensions=[OperationMetrics, ErrorMapping, Parsing, Validation, Protection, KeptResults],
        execution_context_class=HidingSuggestionsExecutor,
        config=StrawberryConfig(
            auto_camel_case=True,
            scalar_map=SCALAR_MAP,  # type: ignore[arg-type]
            batching_config=(
                {"max_operations": max_batch_operations} if max_batch_operations > 0 else None
            ),
        ),
    )


def schema_sdl() -> str:
    return strawberry.printer.print_schema(build_schema()) + "\n"
