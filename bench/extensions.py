"""What each schema extension adds to an operation, in process.

`{ ping }` (the smallest operation: what is measured is the pipeline, not the
resolver) executed by Strawberry with the app's extensions switched on one group at a
time, against graphql-core executing the cached document. CPU time of this process,
the best of --rounds rounds of --n executions each; the store runs in its own process
and `ping` does not touch it.

    python -m bench.extensions [--n 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from bench.common import OUT, in_process_services, store

QUERY = "{ ping }"


async def measure(store_url: str, n: int, rounds: int) -> list[dict[str, Any]]:
    import strawberry
    from graphql import execute, parse
    from strawberry.execution import optimized_is_awaitable

    from cryptovault.extensions.limits import HidingSuggestionsExecutor, Protection
    from cryptovault.extensions.masking import ErrorMapping
    from cryptovault.extensions.metrics import OperationMetrics
    from cryptovault.extensions.parsing import Parsing, Validation
    from cryptovault.resolvers.context import Context
    from cryptovault.schema import Mutation, Query, Subscription

    services = await in_process_services(store_url)
    pipelines: dict[str, list[Any]] = {
        "parse and validation caches only": [Parsing, Validation],
        "+ protection (cost, limits, budget)": [Parsing, Validation, Protection],
        "+ operation metrics": [OperationMetrics, Parsing, Validation, Protection],
        "+ error mapping (the app's schema)": [
            OperationMetrics,
            ErrorMapping,
            Parsing,
            Validation,
            Protection,
        ],
    }
    rows: list[dict[str, Any]] = []
    try:

        def best(run: Any) -> float:
            fastest = float("inf")
            for _ in range(rounds):
                start = time.process_time()
                for _ in range(n):
                    run()
                fastest = min(fastest, (time.process_time() - start) / n * 1e6)
            return fastest

        for label, extensions in pipelines.items():
            schema = strawberry.Schema(
                query=Query,
                mutation=Mutation,
                subscription=Subscription,
                extensions=extensions,
                execution_context_class=HidingSuggestionsExecutor,
            )
            result = await schema.execute(QUERY, context_value=Context(services, None))  # type: ignore[arg-type]
            assert not result.errors, result.errors

            async def many(schema: Any = schema) -> None:
                for _ in range(n):
                    await schema.execute(QUERY, context_value=Context(services, None))

            fastest = float("inf")
            for _ in range(rounds):
                start = time.process_time()
                await many()
                fastest = min(fastest, (time.process_time() - start) / n * 1e6)
            rows.append({"pipeline": label, "cpu_us": fastest})

        core = strawberry.Schema(query=Query, mutation=Mutation, subscription=Subscription)
        document = parse(QUERY)

        def core_execute() -> None:
            result = execute(
                core._schema,
                document,
                context_value=Context(services, None),  # type: ignore[arg-type]
                executor_class=HidingSuggestionsExecutor,
                is_awaitable=optimized_is_awaitable,
            )
            assert not getattr(result, "errors", None)

        rows.insert(
            0, {"pipeline": "graphql-core execute (cached document)", "cpu_us": best(core_execute)}
        )
    finally:
        await services.close()
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    with store() as url:
        rows = asyncio.run(measure(url, args.n, args.rounds))
    print(f"{QUERY!r} in process, CPU µs per operation (best of {args.rounds} x {args.n})")
    for row in rows:
        print(f"  {row['pipeline']:<42}{row['cpu_us']:>8.1f}")
    OUT.mkdir(exist_ok=True)
    (OUT / "extensions.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
