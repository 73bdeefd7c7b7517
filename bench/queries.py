"""Queries over HTTP and in-process.

HTTP: `{ ping }`, `{ prices { symbol price } }` and a 100-item `candles` page, POSTed
to the app (a child process, the store in its own process) from 1 and from 16
keep-alive connections for a fixed time, against a plain Starlette endpoint that
returns the very same response bytes. Reports requests/s, p50/p99 latency and the
server's CPU time per request.

In-process: the app's path for an operation over HTTP once its document is cached
(cryptovault/http/lean.py: charged, executed, its cost report and response bytes made;
the view, i.e. Strawberry with our extensions, for what it does not serve), and a plain
Strawberry `schema.execute` with our extensions, against graphql-core executing the
already parsed and validated document with the same executor class and context: what
the GraphQL layer costs around execution.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from bench.common import child, cpu_seconds, free_port, in_process_services, percentile
from bench.loadgen import closed_loop, http_connection, post

QUERIES = {
    "ping": "{ ping }",
    "prices": "{ prices { symbol price } }",
    "candles100": (
        '{ candles(symbol: "BTC", interval: ONE_MINUTE, first: 100) { edges { cursor '
        "node { openTime open high low close volume closed } } pageInfo { hasNextPage "
        "endCursor } } }"
    ),
}


async def load(port: int, path_of, pid: int, duration: float) -> list[dict[str, Any]]:
    rows = []
    for name, query in QUERIES.items():
        raw = post(path_of(name), orjson.dumps({"query": query}), port)
        await closed_loop(port, raw, 4, 0.5)  # warm-up
        for connections in (1, 16):
            cpu0 = cpu_seconds(pid)
            latencies, errors = await closed_loop(port, raw, connections, duration)
            cpu = cpu_seconds(pid) - cpu0
            rows.append(
                {
                    "query": name,
                    "connections": connections,
                    "requests": len(latencies),
                    "rps": len(latencies) / duration,
                    "p50_ms": percentile(latencies, 50) * 1000,
                    "p99_ms": percentile(latencies, 99) * 1000,
                    "cpu_us_per_request": cpu / max(1, len(latencies)) * 1e6,
                    "errors": errors,
                }
            )
    return rows


def _best(runs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per (query, connections), the round with the most requests/s: the machine is
    shared, and interference only ever makes a run slower."""
    return [max(rows, key=lambda r: r["rps"]) for rows in zip(*runs, strict=True)]


async def http(store_url: str, quick: bool) -> dict[str, Any]:
    duration = 2.0 if quick else 4.0
    rounds = 1 if quick else 2
    bodies: dict[str, str] = {}
    bodies_file = Path(tempfile.mkdtemp(prefix="bench-bodies-")) / "bodies.json"
    app_runs: list[list[dict[str, Any]]] = []
    floor_runs: list[list[dict[str, Any]]] = []

    async def app_round() -> None:
        port = free_port()
        with child(["app", "--store", store_url], port) as pid:
            client = await http_connection(port)
            for name, query in QUERIES.items():
                raw = post("/graphql", orjson.dumps({"query": query}), port)
                status, body = await client.request(raw)
                assert status == 200 and b'"errors"' not in body, body[:300]
                bodies.setdefault(name, body.decode())
            client.transport.close()  # type: ignore[union-attr]
            app_runs.append(await load(port, lambda _: "/graphql", pid, duration))
        bodies_file.write_bytes(orjson.dumps(bodies))

    async def floor_round() -> None:
        port = free_port()
        with child(["floor", "--bodies", str(bodies_file)], port) as pid:
            floor_runs.append(await load(port, lambda name: f"/json/{name}", pid, duration))

    # Alternating: app, floor, floor, app, ... (the floor needs the app's bodies first).
    await app_round()
    await floor_round()
    for _ in range(rounds - 1):
        await floor_round()
        await app_round()
    rows = _best(app_runs)
    for app_row, floor_row in zip(rows, _best(floor_runs), strict=True):
        app_row["floor_rps"] = floor_row["rps"]
        app_row["floor_p50_ms"] = floor_row["p50_ms"]
        app_row["floor_p99_ms"] = floor_row["p99_ms"]
        app_row["floor_cpu_us_per_request"] = floor_row["cpu_us_per_request"]
        app_row["rps_ratio"] = app_row["rps"] / floor_row["rps"]
        app_row["cpu_ratio"] = floor_row["cpu_us_per_request"] / app_row["cpu_us_per_request"]
        app_row["response_bytes"] = len(bodies[app_row["query"]])
    return {"http": rows}


async def in_process(store_url: str, quick: bool) -> dict[str, Any]:
    from graphql import execute, parse, validate
    from strawberry.execution import optimized_is_awaitable

    from cryptovault.resolvers.context import Context
    from cryptovault.schema import build_schema

    services = await in_process_services(store_url)
    rows = []
    try:
        from bench.servers import seed
        from cryptovault.app import GraphQLApp, create_app
        from cryptovault.http.lean import lean_sub_response

        await seed(services)
        schema = build_schema()
        core = schema._schema
        executor_class = schema.execution_context_class
        # The app's own HTTP path, in process: the lean path for a cached document
        # (cryptovault/http/lean.py), else Strawberry with the extensions.
        app = create_app(services.settings, services)
        view = next(r.app for r in app.router.routes if isinstance(r.app, GraphQLApp))  # type: ignore[attr-defined]
        lean = view.lean
        for name, query in QUERIES.items():
            document = parse(query)
            assert not validate(core, document)
            iterations = (200 if name == "candles100" else 2000) // (4 if quick else 1)
            warm = await view.schema.execute(query, context_value=Context(services, None))  # type: ignore[arg-type]
            assert not warm.errors, warm.errors
            path = "lean" if lean.plan(services.settings, query, None, None, None) else "view"

            async def strawberry_execute(query: str = query) -> None:
                result = await schema.execute(query, context_value=Context(services, None))  # type: ignore[arg-type]
                assert not result.errors, result.errors

            async def app_execute(query: str = query) -> None:
                prepared = lean.plan(services.settings, query, None, None, None)
                if prepared is None:
                    result = await view.schema.execute(
                        query,
                        context_value=Context(services, None),  # type: ignore[arg-type]
                    )
                    assert not result.errors, result.errors
                    return
                sub_response = lean_sub_response()
                context = Context(services, None, response=sub_response)  # type: ignore[arg-type]
                answer = await lean.run(prepared, context, sub_response)
                assert answer.status_code == 200  # type: ignore[union-attr]

            async def core_execute(document: Any = document) -> None:
                result = execute(
                    core,
                    document,
                    context_value=Context(services, None),  # type: ignore[arg-type]
                    executor_class=executor_class,
                    is_awaitable=optimized_is_awaitable,
                    operation_extensions=None,
                )
                if asyncio.iscoroutine(result):
                    result = await result
                assert not result.errors, result.errors  # type: ignore[union-attr]

            # This process's CPU time (the store's work is in its own process), in
            # alternating rounds, the best of each: the machine is shared.
            timings = {
                "strawberry": float("inf"),
                "app": float("inf"),
                "graphql-core": float("inf"),
            }
            for _ in range(4):
                for label, run in (
                    ("strawberry", strawberry_execute),
                    ("app", app_execute),
                    ("graphql-core", core_execute),
                ):
                    start = time.process_time()
                    for _ in range(iterations):
                        await run()
                    spent = (time.process_time() - start) / iterations * 1e6
                    timings[label] = min(timings[label], spent)
            rows.append(
                {
                    "query": name,
                    "strawberry_us": timings["strawberry"],
                    "app_us": timings["app"],
                    "app_path": path,
                    "graphql_core_us": timings["graphql-core"],
                    "ratio": timings["strawberry"] / timings["graphql-core"],
                    "app_ratio": timings["app"] / timings["graphql-core"],
                }
            )
    finally:
        await services.close()
    return {"in_process": rows}
