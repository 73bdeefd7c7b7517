"""/metrics as Prometheus scrapes it: the series exist, move with traffic, keep
bounded labels (operation names, never query text), and can require a token; the
access log line names the operation and the user."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import replace
from datetime import UTC, datetime

import httpx
import orjson
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families

from cryptovault.app import create_app
from cryptovault.logs import JsonFormatter
from cryptovault.observability.metrics import MAX_OPERATIONS, OTHER, Metrics
from cryptovault.security.viewer import Viewer
from tests.conftest import tick

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def scrape(client: httpx.AsyncClient) -> Samples:
    r = await client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(r.text)


async def test_graphql_operations_are_counted_by_name_type_and_error_code(client, gql):
    before = await scrape(client)
    await gql.data('query WatchBtc { prices(symbols: ["BTC"]) { symbol } }')
    await gql.data('query WatchBtc { prices(symbols: ["BTC"]) { symbol } }')
    await gql.data("{ assets { symbol } }")
    await gql.execute('query BadSymbol { prices(symbols: ["NOPE"]) { symbol } }')
    await gql.execute("{ nope }")  # fails validation
    await gql.execute("query Broken { prices(")  # does not parse
    after = await scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("cryptovault_graphql_requests_total", operation="WatchBtc", type="query") == 2
    assert delta("cryptovault_graphql_requests_total", operation="anonymous", type="query") == 2
    assert delta("cryptovault_graphql_requests_total", operation="invalid", type="unknown") == 1
    latency = "cryptovault_graphql_request_duration_seconds_count"
    assert delta(latency, operation="WatchBtc", type="query") == 2
    errors = "cryptovault_graphql_errors_total"
    assert delta(errors, operation="BadSymbol", code="BAD_USER_INPUT") == 1
    assert delta(errors, operation="anonymous", code="BAD_USER_INPUT") == 1
    assert delta(errors, operation="invalid", code="BAD_USER_INPUT") == 1
    http = "cryptovault_http_requests_total"
    assert delta(http, method="POST", route="/graphql", status="200") == 6
    assert (
        delta("cryptovault_http_request_duration_seconds_count", method="POST", route="/graphql")
        == 6
    )


async def test_labels_never_hold_query_text_and_operation_names_are_capped(settings, services):
    metrics = Metrics()
    app = create_app(settings, services=replace(services, metrics=metrics))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        for i in range(MAX_OPERATIONS + 20):
            r = await c.post(
                "/graphql",
                json={"query": f'query Op{i} {{ asset(symbol: "SECRETSYM{i}") {{ symbol }} }}'},
            )
            assert r.status_code == 200
        r = await c.get("/metrics", params={"SECRETSYM": "1"})
    text = r.text
    assert "SECRETSYM" not in text and "asset(" not in text
    names = {
        dict(labels)["operation"]
        for (name, labels) in parse(text)
        if name == "cryptovault_graphql_requests_total"
    }
    # The first MAX_OPERATIONS names (counting the reserved "anonymous" and
    # "invalid"), then everything else under "other".
    assert OTHER in names
    assert len(names - {OTHER}) == MAX_OPERATIONS - 2
    assert (
        value(parse(text), "cryptovault_graphql_requests_total", operation=OTHER, type="query")
        == 22
    )


async def test_store_command_latency_and_readiness_are_exported(client, gql):
    before = await scrape(client)
    await gql.data('{ candles(symbol: "BTC", interval: ONE_HOUR, first: 5) { edges { cursor } } }')
    after = await scrape(client)
    finds = "cryptovault_store_command_duration_seconds_count"
    assert value(after, finds, command="find") > value(before, finds, command="find")
    assert value(after, "cryptovault_dependency_up", dependency="store") == 1
    assert value(after, "cryptovault_build_info", version="0.1.0", environment="test") == 1
    assert ("process_resident_memory_bytes", frozenset()) in after


async def test_ticks_are_counted_per_feed_and_the_last_tick_time_is_exported(client, services):
    before = await scrape(client)
    at = datetime.now(UTC).replace(microsecond=0)
    await services.market.publish_tick(tick("ADA", "0.91", at=at))
    await services.market.publish_tick(tick("ADA", "0.92", at=at))
    await asyncio.sleep(0)  # the memory bus delivers on the next loop turn
    after = await scrape(client)
    ingested = "cryptovault_ticks_ingested_total"
    assert value(after, ingested, feed="test") - value(before, ingested, feed="test") == 2
    received = "cryptovault_ticks_received_total"
    assert value(after, received) - value(before, received) == 2
    assert value(after, "cryptovault_market_last_tick_timestamp_seconds") >= at.timestamp()
    assert value(after, "cryptovault_feed_leader") == 1


async def test_counters_for_trading_identity_and_limits_exist_before_their_first_event(
    client, services
):
    samples = await scrape(client)
    assert value(samples, "cryptovault_orders_placed_total", side="BUY", type="LIMIT") == 0
    assert value(samples, "cryptovault_orders_filled_total", side="SELL") == 0
    text = (await client.get("/metrics")).text
    for name in ("cryptovault_rate_limit_rejections", "cryptovault_failed_logins"):
        assert f"# TYPE {name}_total counter" in text
    services.metrics.order_placed("BUY", "LIMIT")
    services.metrics.order_filled("BUY")
    services.metrics.rate_limited("cost")
    services.metrics.login_failed("bad_credentials")
    samples = await scrape(client)
    assert value(samples, "cryptovault_orders_placed_total", side="BUY", type="LIMIT") == 1
    assert value(samples, "cryptovault_orders_filled_total", side="BUY") == 1
    assert value(samples, "cryptovault_rate_limit_rejections_total", limit="cost") == 1
    assert value(samples, "cryptovault_failed_logins_total", reason="bad_credentials") == 1


def test_each_app_has_its_own_registry():
    a, b = Metrics(), Metrics()  # a shared global registry would refuse the second
    a.order_filled("BUY")
    assert value(parse(a.render().decode()), "cryptovault_orders_filled_total", side="BUY") == 1
    assert value(parse(b.render().decode()), "cryptovault_orders_filled_total", side="BUY") == 0


async def test_metrics_token_is_required_when_configured(settings, services):
    app = create_app(replace(settings, metrics_token="t" * 24), services=services)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        assert (await c.get("/metrics")).status_code == 401
        wrong = await c.get("/metrics", headers={"Authorization": "Bearer " + "x" * 24})
        assert wrong.status_code == 401 and "cryptovault_" not in wrong.text
        assert wrong.headers["www-authenticate"].startswith("Bearer")
        ok = await c.get("/metrics", headers={"Authorization": "Bearer " + "t" * 24})
        assert ok.status_code == 200 and "cryptovault_http_requests_total" in ok.text


async def until(condition, limit: float = 10.0) -> None:
    """Wait for the server side to catch up (a bound, not a timing assertion)."""
    async with asyncio.timeout(limit):
        while not condition():
            await asyncio.sleep(0.01)


async def test_live_subscriptions_and_websockets_are_gauged(live_url, client, services):
    async def gauges() -> tuple[float, float]:
        samples = await scrape(client)
        return (
            value(samples, "cryptovault_websocket_connections"),
            value(samples, "cryptovault_subscriptions_active", field="candles"),
        )

    async def subscribe(ws, id: str) -> None:
        # Two operations: the gauge is labelled by the one operationName picks.
        query = (
            "subscription Other { prices { price } } "
            'subscription Live { candles(symbol: "DOT", interval: ONE_MINUTE) { close } }'
        )
        payload = {"query": query, "operationName": "Live"}
        await ws.send(json.dumps({"id": id, "type": "subscribe", "payload": payload}))

    async def next_event(ws, id: str) -> dict:
        # Keep ticking until the subscription (which may start after a tick) delivers.
        # Events of an earlier subscription sent before its `complete` was handled
        # may still be unread: skipped.
        async with asyncio.timeout(10):
            while True:
                await services.market.publish_tick(tick("DOT", "7.10"))
                try:
                    message = json.loads(await asyncio.wait_for(ws.recv(), 0.05))
                except TimeoutError:
                    continue
                if message.get("id") == id:
                    return message

    assert await gauges() == (0, 0)
    async with websockets.connect(
        f"ws://{live_url}/graphql", subprotocols=["graphql-transport-ws"]
    ) as ws:
        await ws.send(json.dumps({"type": "connection_init"}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        await subscribe(ws, "c1")
        assert (await next_event(ws, "c1"))["type"] == "next"
        assert await gauges() == (1, 1)
        assert services.websockets.count == 1 and services.metrics.active_subscriptions == 1
        # Completed by the client: the gauge goes down, the socket stays.
        await ws.send(json.dumps({"id": "c1", "type": "complete"}))
        await until(lambda: services.metrics.active_subscriptions == 0)
        assert await gauges() == (1, 0)
        # Running when the client goes away: counted down too.
        await subscribe(ws, "c2")
        assert (await next_event(ws, "c2"))["type"] == "next"
        assert await gauges() == (1, 1)
    await until(lambda: services.websockets.count == 0)
    await until(lambda: services.metrics.active_subscriptions == 0)
    assert await gauges() == (0, 0)
    samples = await scrape(client)
    assert (
        value(samples, "cryptovault_graphql_requests_total", operation="Live", type="subscription")
        == 2
    )
    assert value(samples, "cryptovault_websocket_connections_opened_total") >= 1


class Lines(logging.Handler):
    """Formats records as the server does, at emit time (context variables included)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.lines: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(orjson.loads(self.format(record)))


class HeaderAuthenticator:
    """A stand-in for the identity feature's authenticator: `Bearer user:<id>`."""

    async def authenticate(self, request, payload=None):
        header = request.headers.get("authorization", "")
        if header.startswith("Bearer user:"):
            return Viewer(user_id=header.removeprefix("Bearer user:"))
        return None


@pytest.fixture
def access_lines():
    handler = Lines()
    logger = logging.getLogger("cryptovault.access")
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.INFO)
    yield handler.lines
    logger.removeHandler(handler)
    logger.setLevel(previous)


async def test_access_line_names_the_operation_the_user_and_the_duration(
    settings, services, access_lines
):
    app = create_app(settings, services=replace(services, authenticator=HeaderAuthenticator()))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        await c.post(
            "/graphql",
            json={"query": "query Assets { assets { symbol } }"},
            headers={"Authorization": "Bearer user:u-42", "X-Request-ID": "rid-access-1"},
        )
        await c.get("/health")
    graphql, health = access_lines[-2:]
    assert graphql["request_id"] == "rid-access-1"
    assert graphql["user_id"] == "u-42"
    assert (graphql["operation"], graphql["operation_type"]) == ("Assets", "query")
    assert graphql["status"] == 200 and graphql["duration_ms"] > 0
    assert "operation" not in health and "user_id" not in health


async def test_failed_logins_and_rate_limit_rejections_move_the_counters(client, gql, services):
    from tests.conftest import log_in, sign_up

    before = await scrape(client)
    email = (await sign_up(gql))["user"]["email"]
    await log_in(gql, email, "not the password at all")
    await log_in(gql, "nobody-here@example.com", "not the password at all")
    budget = services.settings.cost_budget
    assert (await services.limiter.spend("user:metrics-probe", budget)).allowed
    assert not (await services.limiter.spend("user:metrics-probe", 1)).allowed
    # A cost larger than the whole budget is refused, not a crash.
    assert not (await services.limiter.spend("user:metrics-probe-2", budget + 1)).allowed
    after = await scrape(client)
    name = "cryptovault_failed_logins_total"
    assert (
        value(after, name, reason="bad_credentials")
        == value(before, name, reason="bad_credentials") + 2
    )
    rejections = "cryptovault_rate_limit_rejections_total"
    assert value(after, rejections, limit="cost") == value(before, rejections, limit="cost") + 2


def test_the_request_tallies_expose_what_prometheus_counters_and_histograms_would():
    """Metrics.observe_http and observe_operation count in plain numbers
    (observability/metrics.RequestTally); the exposition is byte for byte what
    prometheus_client's Counter and Histogram give for the same observations."""
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    from cryptovault.observability.metrics import LATENCY_BUCKETS, RequestTally

    reference, tallied = CollectorRegistry(), CollectorRegistry()
    counter = Counter("t_requests", "Requests.", ["method", "status"], registry=reference)
    histogram = Histogram(
        "t_duration_seconds", "Durations.", ["method"], buckets=LATENCY_BUCKETS, registry=reference
    )
    tally = RequestTally(
        ("t_requests", "Requests.", ["method", "status"]),
        ("t_duration_seconds", "Durations.", ["method"]),
        LATENCY_BUCKETS,
        tallied,
    )
    assert generate_latest(tallied) == generate_latest(reference)  # no series yet
    # On and between the bounds, past the top one, zero; one series counted only.
    amounts = [0.0, 0.005, 0.0050001, 0.3, 5.0, 29.9, 30.0, 31.0, 1e-7, 0.1 + 0.2]
    for i, amount in enumerate(amounts):
        method = ("GET", "POST")[i % 2]
        counter.labels(method, "200").inc()
        tally.cell((method, "200"))[0] += 1
        histogram.labels(method).observe(amount)
        tally.observe(tally.series((method,)), amount)
    counter.labels("PUT", "405").inc()
    tally.cell(("PUT", "405"))[0] += 1
    histogram.labels("PUT")
    tally.series(("PUT",))
    assert generate_latest(tallied) == generate_latest(reference)
    assert b"t_duration_seconds_sum" in generate_latest(tallied)


def test_a_nan_observation_lands_in_no_bucket_as_in_prometheus_histograms():
    """prometheus_client's Histogram.observe adds a NaN to the sum (which becomes NaN)
    and to no bucket (`amount <= bound` is false for every bound), so not to the count
    either; the tally exposes the same bytes. Infinities land in the first or last
    bucket."""
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    from cryptovault.observability.metrics import LATENCY_BUCKETS, RequestTally

    reference, tallied = CollectorRegistry(), CollectorRegistry()
    Counter("t_requests", "Requests.", ["method"], registry=reference)
    histogram = Histogram(
        "t_duration_seconds", "Durations.", ["method"], buckets=LATENCY_BUCKETS, registry=reference
    )
    tally = RequestTally(
        ("t_requests", "Requests.", ["method"]),
        ("t_duration_seconds", "Durations.", ["method"]),
        LATENCY_BUCKETS,
        tallied,
    )
    for method, amounts in (
        ("GET", [0.002, float("nan"), 0.3]),
        ("POST", [float("inf"), float("-inf")]),
    ):
        for amount in amounts:
            histogram.labels(method).observe(amount)
            tally.observe(tally.series((method,)), amount)
    exposed = generate_latest(tallied)
    assert exposed == generate_latest(reference)
    assert b't_duration_seconds_count{method="GET"} 2.0' in exposed
    assert b't_duration_seconds_sum{method="GET"} NaN' in exposed
    assert b't_duration_seconds_bucket{le="0.005",method="GET"} 1.0' in exposed
