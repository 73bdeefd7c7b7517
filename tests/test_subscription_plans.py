"""A plain subscription selection (leaves only) runs from its plan
(subscriptions/plans.py) with exactly graphql-core's result; anything else, and any
event the plan would answer differently (an error), runs on graphql-core."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from graphql import parse

from cryptovault.extensions.masking import map_error
from cryptovault.market.candles import Interval
from cryptovault.resolvers.context import Context
from cryptovault.schema import build_schema
from cryptovault.schema.market import Candle, Price
from cryptovault.subscriptions.groups import SubscriptionGroups
from cryptovault.subscriptions.plans import plan_for

SCHEMA = build_schema()
GROUPS = SubscriptionGroups(SCHEMA)
NOW = datetime(2026, 12, 5, 9, 30, 15, 123456, tzinfo=UTC)
PRICE_FIELDS = [
    "symbol",
    "price",
    "bid",
    "ask",
    "change24h",
    "changePercent24h",
    "high24h",
    "low24h",
    "volume24h",
    "timestamp",
]
CANDLE_FIELDS = [
    "symbol",
    "interval",
    "openTime",
    "closeTime",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "closed",
]


def price(**overrides: Any) -> Price:
    values: dict[str, Any] = {
        "symbol": "BTC",
        "price": Decimal("50001.00"),
        "bid": Decimal("50000.50"),
        "ask": Decimal("50001.50"),
        "change24h": Decimal("-12.5"),
        "change_percent24h": Decimal("-0.02"),
        "high24h": Decimal("50100"),
        "low24h": Decimal("49000.10"),
        "volume24h": Decimal("1234.5678"),
        "timestamp": NOW,
    }
    return Price(**{**values, **overrides})


def candle(**overrides: Any) -> Candle:
    values: dict[str, Any] = {
        "symbol": "ETH",
        "interval": Interval.FIVE_MINUTES,
        "open_time": NOW,
        "close_time": NOW + timedelta(minutes=5),
        "open": Decimal("3000.01"),
        "high": Decimal("3010"),
        "low": Decimal("2990.5"),
        "close": Decimal("3005.25"),
        "volume": Decimal("12.000001"),
        "closed": False,
    }
    return Candle(**{**values, **overrides})


def group(query: str, variables: dict[str, Any] | None = None, planned: bool = True) -> Any:
    document = parse(query)
    return SimpleNamespace(
        document=document,
        operation_name=None,
        variables=variables,
        context=Context(
            services=SimpleNamespace(settings=SimpleNamespace(is_production=True)), request=None
        ),  # type: ignore[arg-type]
        plan=plan_for(SCHEMA._schema, document, None) if planned else None,
    )


def results(query: str, event: Any, variables: dict[str, Any] | None = None) -> tuple[Any, Any]:
    """(with its plan, on graphql-core): data and the errors as clients get them."""
    out = []
    for planned in (True, False):
        result = GROUPS.execute(group(query, variables, planned), event)
        errors = [map_error(e).formatted for e in result.errors or ()]
        for error in errors:  # a masked error's id is new each time
            error.get("extensions", {}).pop("errorId", None)
        out.append((result.data, errors))
    return out[0], out[1]


def selections(fields: list[str]) -> list[str]:
    """Every field, a few subsets and orders, and aliases."""
    return [
        " ".join(fields),
        " ".join(reversed(fields)),
        fields[0],
        " ".join(fields[::2]),
        " ".join(f"a{n}: {f}" for n, f in enumerate(fields)),
    ]


@pytest.mark.parametrize("selection", selections(PRICE_FIELDS))
@pytest.mark.parametrize(
    "event",
    [price(), price(change24h=None, change_percent24h=None, high24h=None, low24h=None)],
    ids=["known-day", "no-day"],
)
def test_prices_from_the_plan_are_what_graphql_core_answers(selection: str, event: Price):
    query = f'subscription {{ prices(symbols: ["BTC"]) {{ {selection} }} }}'
    assert plan_for(SCHEMA._schema, parse(query), None) is not None
    planned, executed = results(query, event)
    assert planned == executed
    assert executed[0]["prices"] and not executed[1]


@pytest.mark.parametrize("selection", selections(CANDLE_FIELDS))
@pytest.mark.parametrize("interval", list(Interval))
def test_candles_from_the_plan_are_what_graphql_core_answers(selection: str, interval: Interval):
    query = f"subscription {{ live: candles(symbol: $s, interval: $i) {{ {selection} }} }}"
    query = query.replace("subscription {", "subscription($s: String!, $i: CandleInterval!) {")
    variables = {"s": "ETH", "i": interval.name}
    assert plan_for(SCHEMA._schema, parse(query), None) is not None
    planned, executed = results(query, candle(interval=interval, closed=True), variables)
    assert planned == executed
    assert executed[0]["live"] and not executed[1]


@pytest.mark.parametrize(
    "query",
    [
        'subscription { prices(symbols: ["BTC"]) { __typename price } }',
        'subscription { prices(symbols: ["BTC"]) { price @include(if: true) } }',
        'subscription { prices(symbols: ["BTC"]) { ...P } } fragment P on Price { price }',
        'subscription { prices(symbols: ["BTC"]) { ... on Price { price } } }',
        'subscription { prices(symbols: ["BTC"]) { price price } }',
        'subscription { prices(symbols: ["BTC"]) @skip(if: false) { price } }',
        'subscription A { prices(symbols: ["BTC"]) { price } } '
        'subscription B { prices(symbols: ["ETH"]) { bid } }',
        "subscription { orderUpdates { id trades { id } } }",
        "subscription { alertTriggered { id } }",
    ],
)
def test_selections_that_are_not_plain_get_no_plan(query: str):
    assert plan_for(SCHEMA._schema, parse(query), None) is None
    if "fragment" in query or "__typename" in query or "@" in query or "... on" in query:
        planned, executed = results(query, price())  # all the same on graphql-core
        assert planned == executed and not executed[1]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("price", None),  # null in a non-null field
        ("timestamp", "not a datetime"),
        ("bid", ValueError("a resolver's error")),
        ("symbol", object()),
    ],
)
def test_an_event_the_plan_cannot_answer_gets_graphql_cores_errors(field: str, value: Any):
    query = 'subscription { prices(symbols: ["BTC"]) { symbol price bid timestamp } }'
    planned, executed = results(query, price(**{field: value}))
    assert executed[1], "graphql-core reports an error for this event"
    assert planned == executed


def test_an_event_of_another_type_gets_graphql_cores_error():
    query = 'subscription { prices(symbols: ["BTC"]) { symbol } }'
    planned, executed = results(query, candle())
    assert planned == executed


def test_every_field_subset_of_a_price_matches():
    for size in (2, 3):
        for subset in itertools.combinations(PRICE_FIELDS, size):
            query = f'subscription {{ prices(symbols: ["BTC"]) {{ {" ".join(subset)} }} }}'
            planned, executed = results(query, price(high24h=None))
            assert planned == executed
