"""What introspection and new documents cost, in process, through the app (HTTP
handling included, httpx's ASGI transport, no socket).

- A plain introspection (graphql-core's `getIntrospectionQuery()`, what GraphiQL and
  code generators send), answered from the schema's cached result, against
  graphql-core executing the same document (its cost before the cache).
- The black-box probe (24 aliased `types` x 24 aliased `fields { args type { ofType } }`,
  1,070 characters): its static cost and answer now, against graphql-core executing it
  (what it cost when introspection was free).
- A hostile new document (400 x `rateLimit { remaining }`): what parsing and validating
  it charges, against the same document once cached.

CPU time of this process (the store runs in its own process and is not touched),
best of --rounds.

    python -m bench.introspection [--n 50] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench.common import OUT, in_process_services, store

REPEATED = "{" + " rateLimit { remaining }" * 400 + "}"


def probe(n: int) -> str:
    """The black-box probe: n aliased `types`, each with n aliased `fields` (1,070
    characters for n = 24; 9.8 MB of answer when introspection was free)."""
    return (
        "{ __schema { "
        + " ".join(f"t{i}: types {{ ...T }}" for i in range(n))
        + " } } fragment T on __Type { "
        + " ".join(f"f{j}: fields {{ ...F }}" for j in range(n))
        + " } fragment F on __Field { args { name } type { ofType { name } } }"
    )


async def best(run: Callable[[], Awaitable[Any]], n: int, rounds: int) -> float:
    """Milliseconds of CPU per call, the best of `rounds` rounds of `n` calls."""
    fastest = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(n):
            await run()
        fastest = min(fastest, (time.process_time() - start) / n * 1000)
    return fastest


async def measure(store_url: str, n: int, rounds: int) -> dict[str, Any]:
    import httpx
    import orjson
    from graphql import get_introspection_query, graphql_sync

    from cryptovault.app import create_app

    # Refusals are logged with their traceback by Strawberry: not what is measured.
    logging.getLogger("strawberry.execution").setLevel(logging.CRITICAL)
    services = await in_process_services(store_url)
    app = create_app(services.settings, services=services)
    schema = app.state.subscription_groups.schema._schema
    plain = get_introspection_query()
    results: dict[str, Any] = {}
    transport = httpx.ASGITransport(app=app, client=("10.0.0.9", 1))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:

            async def post(query: str) -> dict[str, Any]:
                response = await client.post("/graphql", json={"query": query})
                return response.json()

            async def executed() -> None:
                orjson.dumps(graphql_sync(schema, plain).data)

            first = time.process_time()
            body = await post(plain)
            results["plain_first_ms"] = (time.process_time() - first) * 1000
            results["plain_cost"] = body["extensions"]["cost"]["requestedQueryCost"]
            results["plain_bytes"] = len(orjson.dumps(body["data"]))
            results["plain_executed_ms"] = await best(executed, n, rounds)
            results["plain_cached_ms"] = await best(lambda: post(plain), n, rounds)

            start = time.process_time()
            refused = await post(probe(24))
            results["probe_ms"] = (time.process_time() - start) * 1000
            results["probe_answer"] = refused["errors"][0]["extensions"]
            results["probe_cost"] = refused["extensions"]["cost"]["requestedQueryCost"]
            start = time.process_time()
            before = orjson.dumps(graphql_sync(schema, probe(24)).data)
            results["probe_executed_ms"] = (time.process_time() - start) * 1000
            results["probe_executed_bytes"] = len(before)

            charged = []
            for i in range(rounds):
                start = time.process_time()
                body = await post(REPEATED + " " * (i + 1))  # a new text: not cached
                charged.append(
                    (
                        (time.process_time() - start) * 1000,
                        body["extensions"]["cost"].get("documentCost", 0),
                    )
                )
            results["document_new"] = min(charged)
            results["document_cached_ms"] = await best(lambda: post(REPEATED + " "), 3, rounds)
            body = await post(REPEATED + " ")
            results["document_cached_cost"] = body["extensions"]["cost"].get("documentCost", 0)
    finally:
        await services.close()
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    with store() as url:
        r = asyncio.run(measure(url, args.n, args.rounds))
    plain_ratio = r["plain_executed_ms"] / r["plain_cached_ms"]
    print(f"CPU ms per request (best of {args.rounds} x {args.n}), this process")
    print(
        f"  plain introspection, {r['plain_bytes']:,} bytes: graphql-core executes it in "
        f"{r['plain_executed_ms']:.1f} (1x); the app answers it from the cache in "
        f"{r['plain_cached_ms']:.1f} ({plain_ratio:.0f}x less), cost {r['plain_cost']} "
        f"(first request, computing the cache: {r['plain_first_ms']:.1f})"
    )
    print(
        f"  probe 24x24: graphql-core executes it in {r['probe_executed_ms']:,.0f} "
        f"({r['probe_executed_bytes']:,} bytes); the app refuses it in {r['probe_ms']:.1f}: "
        f"cost {r['probe_cost']:,}, {r['probe_answer']}"
    )
    new_ms, new_cost = r["document_new"]
    print(
        f"  400 x rateLimit {{ remaining }}: new {new_ms:.0f} ms, charged {new_cost:,} "
        f"points; cached {r['document_cached_ms']:.1f} ms, charged "
        f"{r['document_cached_cost']}"
    )
    OUT.mkdir(exist_ok=True)
    (OUT / "introspection.json").write_text(json.dumps(r, indent=2, default=str))


if __name__ == "__main__":
    main()
