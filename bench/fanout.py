"""Tick fan-out: one BTC tick to N WebSocket subscribers of
`subscription { prices(symbols: ["BTC"]) { symbol price bid ask timestamp } }`.

Three servers, each a fresh child process per N: the serialize-once floor (a plain
Starlette endpoint writing one pre-serialized frame to every socket), the app in
"grouped" mode (the default) and the app in "naive" mode (Strawberry executes the
selection set per subscriber). This process is the load generator: N sockets, then
ticks one after another (the next when every socket has the previous one).

Per server: tick-to-all-delivered p50/p99 (from sending the tick to the last socket
receiving it), per-message delivery latency p50/p99, server CPU per delivered message,
server RSS per idle subscribed connection, and RSS growth per delivered message.
The soak variant delivers 5,000 events to 200 subscribers for the memory figure.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from bench.common import child, cpu_seconds, free_port, percentile, rss_bytes
from bench.loadgen import HTTPClient, WSClient, http_connection, open_sockets, post

QUERY = 'subscription { prices(symbols: ["BTC"]) { symbol price bid ask timestamp } }'
SUBSCRIBE = orjson.dumps({"id": "1", "type": "subscribe", "payload": {"query": QUERY}})
INIT = orjson.dumps({"type": "connection_init", "payload": {}})
PONG = b'{"type":"pong"}'
PRICE = b'"price":"'


@dataclass
class Tick:
    sent: float = 0.0
    received: int = 0
    last: float = 0.0
    done: asyncio.Future[None] | None = None


@dataclass
class Fleet:
    """The load generator's view of N sockets."""

    size: int
    ticks: dict[int, Tick] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    record: bool = False
    seen: int = 0  # sockets that received at least one tick

    def on_text(self, client: WSClient, payload: bytes) -> None:
        now = time.perf_counter()
        i = payload.find(PRICE)
        if i < 0:
            if payload.startswith(b'{"type":"connection_ack"'):
                client.send(SUBSCRIBE)
            elif payload.startswith(b'{"type":"ping"'):
                client.send(PONG)
            return
        n = int(payload[i + 9 : payload.index(b".", i + 9)]) - 50_000
        tick = self.ticks.get(n)
        if tick is None:
            return
        if client.data is None:
            client.data = True
            self.seen += 1
        tick.received += 1
        tick.last = now
        if self.record:
            self.latencies.append(now - tick.sent)
        if tick.received >= self.size and tick.done is not None and not tick.done.done():
            tick.done.set_result(None)


class Trigger:
    """Sends ticks to the server under test over one keep-alive HTTP connection."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.http: HTTPClient | None = None

    async def send(self, n: int) -> None:
        if self.http is None or self.http.lost:
            self.http = await http_connection(self.port)
        await self.http.request(post(f"/bench/tick?n={n}", b"", self.port))

    def close(self) -> None:
        if self.http is not None and self.http.transport is not None:
            self.http.transport.close()


async def trigger(http: Trigger, fleet: Fleet, n: int, timeout: float) -> bool:
    tick = Tick(done=asyncio.get_running_loop().create_future())
    fleet.ticks[n] = tick
    tick.sent = time.perf_counter()
    await http.send(n)
    try:
        await asyncio.wait_for(asyncio.shield(tick.done), timeout)  # type: ignore[arg-type]
        return True
    except TimeoutError:
        return False
    finally:
        if n - 2 in fleet.ticks:
            del fleet.ticks[n - 2]


async def measure(
    server: str, n: int, ticks: int, budget: float, store_url: str, deflate: bool = False
) -> dict[str, Any]:
    """`server`: floor, grouped or naive; `deflate`: the clients negotiate
    permessage-deflate, as browsers do."""
    port = free_port()
    args = ["floor"] if server == "floor" else ["app", "--store", store_url, "--mode", server]
    label = server + ("+deflate" if deflate else "")
    result: dict[str, Any] = {"server": label, "subscribers": n}
    # The server negotiates permessage-deflate only if it is on (as WS_PER_MESSAGE_DEFLATE).
    env = {"WS_PER_MESSAGE_DEFLATE": "true"} if deflate else None
    with child(args, port, env) as pid:
        await asyncio.sleep(0.5)
        http = Trigger(port)
        base_rss = rss_bytes(pid)
        fleet = Fleet(n)
        sockets = await open_sockets(
            port, n, "/graphql", "graphql-transport-ws", fleet.on_text, deflate=deflate
        )
        for s in sockets:
            s.send(INIT)
        tick_timeout = 10 + n * 0.003
        # Warm-up: until every socket has a tick (the subscribe messages are handled).
        k = 0
        started = time.monotonic()
        while fleet.seen < n and time.monotonic() - started < 120:
            k += 1
            await trigger(http, fleet, k, 2 + n * 0.003)
        if fleet.seen < n:
            result["error"] = f"only {fleet.seen} of {n} sockets subscribed"
            return result
        for _ in range(2):
            k += 1
            await trigger(http, fleet, k, tick_timeout)
        idle_rss = rss_bytes(pid)
        result["rss_per_connection_kb"] = (idle_rss - base_rss) / n / 1024
        fleet.record = True
        to_all: list[float] = []
        cpu0, own0, t0 = cpu_seconds(pid), time.process_time(), time.monotonic()
        measured = 0
        while measured < ticks and (measured < 3 or time.monotonic() - t0 < budget):
            k += 1
            if not await trigger(http, fleet, k, tick_timeout):
                result["error"] = f"tick {k} not delivered to all {n} in {tick_timeout:.0f} s"
                break
            tick = fleet.ticks[k]
            to_all.append(tick.last - tick.sent)
            measured += 1
        cpu = cpu_seconds(pid) - cpu0
        own = time.process_time() - own0
        end_rss = rss_bytes(pid)
        delivered = measured * n
        for s in sockets:
            s.close()
        http.close()
    result.update(
        ticks=measured,
        delivered=delivered,
        to_all_p50_ms=percentile(to_all, 50) * 1000,
        to_all_p99_ms=percentile(to_all, 99) * 1000,
        msg_p50_ms=percentile(fleet.latencies, 50) * 1000,
        msg_p99_ms=percentile(fleet.latencies, 99) * 1000,
        cpu_us_per_msg=cpu / delivered * 1e6 if delivered else float("nan"),
        loadgen_cpu_us_per_msg=own / delivered * 1e6 if delivered else float("nan"),
        rss_growth_bytes_per_msg=(end_rss - idle_rss) / delivered if delivered else float("nan"),
        rss_growth_mb=(end_rss - idle_rss) / 2**20,
    )
    return result


def ticks_for(n: int, quick: bool) -> int:
    """Enough deliveries for a steady CPU figure (/proc counts 10 ms steps)."""
    ticks = max(10, min(400, 200_000 // n))
    return max(5, ticks // 5) if quick else ticks


async def run(store_url: str, quick: bool) -> dict[str, Any]:
    sizes = [100, 1000] if quick else [100, 1000, 5000, 10_000]
    rows = []
    for n in sizes:
        for server in ("floor", "grouped", "naive"):
            ticks = ticks_for(n, quick)
            budget = 20.0 if quick else 60.0
            if server == "naive":
                ticks = min(ticks, 30 if n <= 1000 else 5)
            row = await measure(server, n, ticks, budget, store_url)
            print(format_row(row), flush=True)
            rows.append(row)
    # Browsers negotiate permessage-deflate: then every frame is compressed per socket.
    for server in ("floor", "grouped"):
        row = await measure(server, 1000, ticks_for(1000, quick), 20.0, store_url, deflate=True)
        print(format_row(row), flush=True)
        rows.append(row)
    soak_events = 1000 if quick else 5000
    soak = [await measure("grouped", 200, soak_events, 600, store_url)]
    print(format_row(soak[0]), flush=True)
    soak.append(await measure("naive", 200, 100 if quick else 300, 300, store_url))
    print(format_row(soak[1]), flush=True)
    return {"fanout": rows, "soak": soak}


HEADER = (
    f"{'server':<16}{'N':>7}{'ticks':>6}{'all p50':>9}{'all p99':>9}{'msg p50':>9}"
    f"{'msg p99':>9}{'cpu µs/msg':>11}{'KB/conn':>9}{'B/msg':>8}"
)


def format_row(r: dict[str, Any]) -> str:
    if "ticks" not in r:
        return f"{r['server']:<16}{r['subscribers']:>7}  {r.get('error')}"
    line = (
        f"{r['server']:<16}{r['subscribers']:>7}{r['ticks']:>6}{r['to_all_p50_ms']:>9.1f}"
        f"{r['to_all_p99_ms']:>9.1f}{r['msg_p50_ms']:>9.1f}{r['msg_p99_ms']:>9.1f}"
        f"{r['cpu_us_per_msg']:>11.1f}{r['rss_per_connection_kb']:>9.1f}"
        f"{r['rss_growth_bytes_per_msg']:>8.1f}"
    )
    if r.get("error"):
        line += f"  ({r['error']})"
    return line
