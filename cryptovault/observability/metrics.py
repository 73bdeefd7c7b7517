"""Prometheus metrics, one registry per app (several apps in one process, as in the
tests, never share or collide), served at `/metrics`.

Label values are bounded: operation names come from parsed documents (never raw
query text) and every free-form label keeps at most a fixed number of distinct
values; later newcomers are counted under "other". Counters that other features
increment (orders, logins, rate limits) are registered here with their label sets so
that dashboards and alert rules can rely on the names before the first event.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from pymongo import monitoring

from cryptovault import __version__
from cryptovault.documents.enums import OrderType, Side

# No `_created` series: they double the series count and no rule here uses them.
disable_created_metrics()


# What `Metrics.watch` reads at every scrape, by shape: the market service, the feed
# leader and the WebSocket registry (observability sits below all three).
class _Tick(Protocol):
    @property
    def timestamp(self) -> datetime: ...


class _TickSource(Protocol):
    @property
    def ticks_received(self) -> int: ...

    @property
    def latest(self) -> Mapping[str, _Tick]: ...


class _LeaderMarket(Protocol):
    @property
    def is_leader(self) -> bool: ...


class _Leader(Protocol):
    @property
    def market(self) -> _LeaderMarket: ...


class _Connections(Protocol):
    @property
    def count(self) -> int: ...


# Seconds. The top buckets matter: the p99 > 5 s alert needs a bucket at 5 and above.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)

OTHER = "other"
ANONYMOUS = "anonymous"  # an operation without a name
INVALID = "invalid"  # a document that did not parse: no operation to name
MAX_OPERATIONS = 100
MAX_LABEL_VALUES = 30
MAX_LABEL_LENGTH = 64

HTTP_ROUTES = frozenset({"/graphql", "/health", "/ready", "/metrics"})
HTTP_METHODS = frozenset({"GET", "POST", "OPTIONS", "HEAD"})
ORDER_SIDES = tuple(Side)
ORDER_TYPES = tuple(OrderType)
# What an owner was doing when its lease ran out (trading/engine.py recover).
TAKEOVER_STAGES = ("placing", "filling", "idle")


class BoundedLabel:
    """Admits at most `limit` distinct values (each at most MAX_LABEL_LENGTH
    characters); further values map to "other", so a client inventing operation
    names cannot grow the number of series without bound."""

    def __init__(self, limit: int, preset: Iterable[str] = ()) -> None:
        self.limit = limit
        self._seen: set[str] = set(preset)
        self._lock = threading.Lock()

    def __call__(self, value: str | None) -> str:
        if not value:
            return OTHER
        value = value[:MAX_LABEL_LENGTH]
        if value in self._seen:
            return value
        with self._lock:
            if len(self._seen) >= self.limit:
                return OTHER
            self._seen.add(value)
        return value


class _Callbacks(Collector):
    """Values read from live objects at scrape time (no bookkeeping on hot paths)."""

    def __init__(self) -> None:
        self.sources: list[Callable[[], Iterator[Metric]]] = []

    def collect(self) -> Iterator[Metric]:
        for source in self.sources:
            yield from source()


class _Series:
    """One histogram child: observations per bucket (not cumulative) and their sum."""

    __slots__ = ("buckets", "sum")

    def __init__(self, size: int) -> None:
        self.buckets = [0] * size
        self.sum = 0.0


class RequestTally(Collector):
    """A counter and a histogram of the hot paths (each HTTP request, each GraphQL
    operation), kept in plain numbers: exposed exactly as prometheus_client's
    `Counter(counter)` and `Histogram(histogram, buckets=buckets)` registered in its
    place would be (names, help, label order, buckets, values, the same float sums),
    without their per-observation locks and child lookups.

        tally = RequestTally(("c", "Help.", ["a", "b"]), ("h", "Help.", ["a"]), (0.1, 1.0), r)
        count, series = tally.cell(("x", "y")), tally.series(("x",))
        count[0] += 1  # Counter.labels("x", "y").inc()
        tally.observe(series, 0.05)  # Histogram.labels("x").observe(0.05)
    """

    def __init__(
        self,
        counter: tuple[str, str, Sequence[str]],
        histogram: tuple[str, str, Sequence[str]],
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        self.counter, self.histogram = counter, histogram
        bounds = [float(b) for b in buckets]
        if bounds[-1] != float("inf"):
            bounds.append(float("inf"))
        self.bounds = tuple(bounds)
        self._le = tuple(floatToGoString(b) for b in bounds)
        self._counts: dict[tuple[str, ...], list[int]] = {}
        self._series: dict[tuple[str, ...], _Series] = {}
        registry.register(self)

    def cell(self, labels: tuple[str, ...]) -> list[int]:
        """The counter's child for `labels` (created at 0, as `Counter.labels`): a list
        of one count to add to."""
        found = self._counts.get(labels)
        if found is None:
            found = self._counts[labels] = [0]
        return found

    def series(self, labels: tuple[str, ...]) -> _Series:
        """The histogram's child for `labels` (created empty, as `Histogram.labels`)."""
        found = self._series.get(labels)
        if found is None:
            found = self._series[labels] = _Series(len(self.bounds))
        return found

    def observe(self, series: _Series, amount: float) -> None:
        # The first bucket whose bound is >= amount, as Histogram.observe; a NaN is
        # >= none of them (bisect would put it in the first): it goes to the sum
        # only, so not to the count either.
        if amount <= self.bounds[-1]:
            series.buckets[bisect_left(self.bounds, amount)] += 1
        series.sum += amount

    def describe(self) -> Iterable[Metric]:
        return [
            Metric(self.counter[0], self.counter[1], "counter"),
            Metric(self.histogram[0], self.histogram[1], "histogram"),
        ]

    def collect(self) -> Iterable[Metric]:
        name, documentation, labelnames = self.counter
        counter = Metric(name, documentation, "counter")
        for values, cell in list(self._counts.items()):
            counter.add_sample(
                name + "_total", dict(zip(labelnames, values, strict=True)), float(cell[0])
            )
        name, documentation, labelnames = self.histogram
        histogram = Metric(name, documentation, "histogram")
        for values, series in list(self._series.items()):
            labels = dict(zip(labelnames, values, strict=True))
            total = 0.0
            for le, count in zip(self._le, list(series.buckets), strict=True):
                total += count
                histogram.add_sample(name + "_bucket", {**labels, "le": le}, total)
            histogram.add_sample(name + "_count", labels, total)
            histogram.add_sample(name + "_sum", labels, series.sum)
        return [counter, histogram]


class Metrics:
    """Every metric of one app. Attribute names are the Python handles; the
    Prometheus names are in README "Operations and observability"."""

    def __init__(self, environment: str = "development") -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.operation_label = BoundedLabel(MAX_OPERATIONS, preset=(ANONYMOUS, INVALID))
        self._labels: dict[str, BoundedLabel] = {}
        self._live_subscriptions: Tally[str] = Tally()
        # The hot path's labelled children, looked up once per label values (every
        # label here is bounded: methods, routes, statuses, operation labels, codes).
        self._http_children: dict[tuple[str, str, int], tuple[list[int], _Series]] = {}
        self._operation_children: dict[tuple[str, str], tuple[list[int], _Series]] = {}
        self._error_children: dict[tuple[str, str], Any] = {}
        # Per feed name: the ticks counter's child (one per price tick on the leader).
        self._tick_children: dict[str, Any] = {}

        Info("cryptovault_build", "Version and environment of this instance.", registry=r).info(
            {"version": __version__, "environment": environment}
        )
        # Counted on every request: plain numbers, exposed as a Counter and a Histogram.
        self.http = RequestTally(
            (
                "cryptovault_http_requests",
                "HTTP requests by method, route and status code.",
                ["method", "route", "status"],
            ),
            (
                "cryptovault_http_request_duration_seconds",
                "HTTP request duration (until the response is sent).",
                ["method", "route"],
            ),
            LATENCY_BUCKETS,
            r,
        )
        self.graphql = RequestTally(
            (
                "cryptovault_graphql_requests",
                "GraphQL operations by operation name and type (query, mutation, "
                "subscription); a subscription counts once, when it starts.",
                ["operation", "type"],
            ),
            (
                "cryptovault_graphql_request_duration_seconds",
                "GraphQL query and mutation execution time, parsing included.",
                ["operation", "type"],
            ),
            LATENCY_BUCKETS,
            r,
        )
        self.graphql_errors = Counter(
            "cryptovault_graphql_errors",
            "GraphQL errors by operation and extensions.code (subscription events too).",
            ["operation", "code"],
            registry=r,
        )
        self.websocket_connections = Gauge(
            "cryptovault_websocket_connections",
            "Open WebSocket connections on this instance.",
            registry=r,
        )
        self.websocket_connections_opened = Counter(
            "cryptovault_websocket_connections_opened",
            "WebSocket connections accepted.",
            registry=r,
        )
        self.subscriptions = Gauge(
            "cryptovault_subscriptions_active",
            "Running GraphQL subscriptions by root field.",
            ["field"],
            registry=r,
        )
        self.ticks_ingested = Counter(
            "cryptovault_ticks_ingested",
            "Price ticks taken from a feed and published to the bus (feed leader only).",
            ["feed"],
            registry=r,
        )
        self.store_commands = Histogram(
            "cryptovault_store_command_duration_seconds",
            "Store (MongoDB wire protocol) command round trips by command name.",
            ["command"],
            buckets=STORE_BUCKETS,
            registry=r,
        )
        self.store_command_failures = Counter(
            "cryptovault_store_command_failures",
            "Store commands that failed, by command name.",
            ["command"],
            registry=r,
        )
        self.dependency_up = Gauge(
            "cryptovault_dependency_up",
            "1 when a dependency (store, redis) answered its last check, else 0.",
            ["dependency"],
            registry=r,
        )
        self.retention_deleted = Counter(
            "cryptovault_retention_deleted",
            "Documents deleted by the retention job, by collection.",
            ["collection"],
            registry=r,
        )
        # Incremented by trading, identity and API protection.
        self.orders_placed = Counter(
            "cryptovault_orders_placed",
            "Orders accepted, by side and type.",
            ["side", "type"],
            registry=r,
        )
        self.orders_filled = Counter(
            "cryptovault_orders_filled",
            "Orders that became completely filled, by side.",
            ["side"],
            registry=r,
        )
        self.trading_takeovers = Counter(
            "cryptovault_trading_takeovers",
            "Orders whose owner's lease ran out, taken over and settled by the recovery "
            "sweep, by what the owner was doing.",
            ["stage"],
            registry=r,
        )
        self.trading_sweep_failures = Counter(
            "cryptovault_trading_sweep_failures",
            "Orders or adjustments the recovery sweep could not settle (retried with "
            "back-off; the sweep goes on for everything else).",
            ["kind"],
            registry=r,
        )
        self.rate_limit_rejections = Counter(
            "cryptovault_rate_limit_rejections",
            "Requests refused by a rate limit or budget, by limit.",
            ["limit"],
            registry=r,
        )
        self.failed_logins = Counter(
            "cryptovault_failed_logins",
            "Failed sign-in attempts, by reason.",
            ["reason"],
            registry=r,
        )
        # Series that exist from the start read 0 instead of missing.
        for stage in TAKEOVER_STAGES:
            self.trading_takeovers.labels(stage)
        for kind in ("order", "adjustment"):
            self.trading_sweep_failures.labels(kind)
        for side in ORDER_SIDES:
            self.orders_filled.labels(side)
            for kind in ORDER_TYPES:
                self.orders_placed.labels(side, kind)
        self._callbacks = _Callbacks()
        r.register(self._callbacks)
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)

    # -- for other features ----------------------------------------------------------

    def order_placed(self, side: str, type: str) -> None:
        self.orders_placed.labels(self._bounded("side", side), self._bounded("type", type)).inc()

    def order_filled(self, side: str) -> None:
        self.orders_filled.labels(self._bounded("side", side)).inc()

    def order_taken_over(self, stage: str) -> None:
        self.trading_takeovers.labels(self._bounded("stage", stage)).inc()

    def sweep_failed(self, kind: str) -> None:
        self.trading_sweep_failures.labels(self._bounded("kind", kind)).inc()

    def rate_limited(self, limit: str) -> None:
        """`limit`: which limit refused the request, e.g. "cost", "auth", "connections"."""
        self.rate_limit_rejections.labels(self._bounded("limit", limit)).inc()

    def login_failed(self, reason: str) -> None:
        """`reason`: e.g. "bad_credentials", "locked", "bad_otp"."""
        self.failed_logins.labels(self._bounded("reason", reason)).inc()

    # -- recorded by this package ----------------------------------------------------

    def observe_http(self, method: str, path: str, status: int, seconds: float) -> None:
        method = method if method in HTTP_METHODS else OTHER
        route = path if path in HTTP_ROUTES else OTHER
        key = (method, route, status)
        found = self._http_children.get(key)
        if found is None:
            found = self._http_children[key] = (
                self.http.cell((method, route, str(status))),
                self.http.series((method, route)),
            )
        found[0][0] += 1
        self.http.observe(found[1], seconds)

    def observe_operation(self, operation: str, type: str, seconds: float | None) -> None:
        key = (operation, type)
        found = self._operation_children.get(key)
        if found is None:
            found = self._operation_children[key] = (
                self.graphql.cell(key),
                self.graphql.series(key),
            )
        found[0][0] += 1
        if seconds is not None:
            self.graphql.observe(found[1], seconds)

    def observe_errors(self, operation: str, codes: Iterable[str]) -> None:
        for code in codes:
            key = (operation, self._bounded("code", code))
            child = self._error_children.get(key)
            if child is None:
                child = self._error_children[key] = self.graphql_errors.labels(*key)
            child.inc()

    def subscription_started(self, field: str) -> None:
        field = self._bounded("field", field)
        self._live_subscriptions[field] += 1
        self.subscriptions.labels(field).inc()

    def subscription_ended(self, field: str) -> None:
        field = self._bounded("field", field)
        self._live_subscriptions[field] -= 1
        self.subscriptions.labels(field).dec()

    def tick_ingested(self, feed: str) -> None:
        child = self._tick_children.get(feed)
        if child is None:
            child = self.ticks_ingested.labels(self._bounded("feed", feed))
            # Feeds are few; a bounded table all the same (past it, looked up each time).
            if len(self._tick_children) < MAX_LABEL_VALUES:
                self._tick_children[feed] = child
        child.inc()

    def retention_swept(self, collection: str, deleted: int) -> None:
        self.retention_deleted.labels(self._bounded("collection", collection)).inc(deleted)

    def dependencies_checked(self, checks: dict[str, str]) -> None:
        for name, state in checks.items():
            self.dependency_up.labels(self._bounded("dependency", name)).set(
                1 if state == "ok" else 0
            )

    @property
    def active_subscriptions(self) -> int:
        """Running subscriptions on this instance (the admin `stats` reads it)."""
        return sum(self._live_subscriptions.values())

    # -- wiring ----------------------------------------------------------------------

    def watch(
        self,
        market: _TickSource | None = None,
        leader: _Leader | None = None,
        websockets: _Connections | None = None,
    ) -> None:
        """Read these objects' live state at every scrape."""
        if websockets is not None:
            self.websocket_connections.set_function(lambda: websockets.count)
        if market is not None:

            def market_state() -> Iterator[Metric]:
                received = CounterMetricFamily(
                    "cryptovault_ticks_received",
                    "Price ticks applied by this instance (from the bus, any feed).",
                )
                received.add_metric([], market.ticks_received)
                yield received
                last = GaugeMetricFamily(
                    "cryptovault_market_last_tick_timestamp_seconds",
                    "Unix time of the newest tick this instance applied (0: none yet).",
                )
                stamps = [t.timestamp.timestamp() for t in list(market.latest.values())]
                last.add_metric([], max(stamps, default=0.0))
                yield last

            self._callbacks.sources.append(market_state)
        if leader is not None:

            def leadership() -> Iterator[Metric]:
                gauge = GaugeMetricFamily(
                    "cryptovault_feed_leader",
                    "1 on the instance that holds the feed lease and runs the feed.",
                )
                gauge.add_metric([], 1 if leader.market.is_leader else 0)
                yield gauge

            self._callbacks.sources.append(leadership)

    def store_listener(self) -> StoreCommandMetrics:
        return StoreCommandMetrics(self)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def _bounded(self, label: str, value: str) -> str:
        bounded = self._labels.get(label)
        if bounded is None:
            bounded = self._labels.setdefault(label, BoundedLabel(MAX_LABEL_VALUES))
        return bounded(value)


class StoreCommandMetrics(monitoring.CommandListener):
    """pymongo command monitoring: the latency of every store round trip."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.command = BoundedLabel(60)

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        pass

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        self.metrics.store_commands.labels(self.command(event.command_name)).observe(
            event.duration_micros / 1_000_000
        )

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        name = self.command(event.command_name)
        self.metrics.store_commands.labels(name).observe(event.duration_micros / 1_000_000)
        self.metrics.store_command_failures.labels(name).inc()
