"""What the cost limiter adds to a request.

The API is served by uvicorn in a child process on 127.0.0.1 (embedded store, no
feed); this process sends the same cheap query from CONCURRENCY connections for
DURATION seconds per mode, after a warm-up:

- off:    the limiter's storage call replaced by a constant "allowed" (the cost
          analysis still runs);
- memory: the in-process `limits` storage (one instance);
- redis:  the Redis storage shared by instances (REDIS_URL, default
          redis://127.0.0.1:6379/15; skipped when unreachable).

Reports requests/s, p50/p99 latency, the server's CPU time per request (the
steadiest number on a shared machine) and the ratios to "off"; writes
bench/out/limiter.json. Each mode runs --rounds times, in alternating order; the run with the least
server CPU per request is kept. Bounded: about
6 x (DURATION + 4) seconds.

    python -m bench.limiter [--duration 5] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from bench.common import OUT, cpu_seconds, free_port

QUERY = "{ assets { symbol price { price } } }"
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")


def serve(mode: str, port: int) -> None:
    """The child process: the real app with `mode`'s limiter."""
    import uvicorn

    from cryptovault.app import create_app
    from cryptovault.config import Settings
    from cryptovault.logs import configure_logging
    from cryptovault.protection.limiter import BudgetStatus
    from cryptovault.services import start_services

    configure_logging("WARNING", "console")
    settings = Settings(
        environment="test",
        data_dir=Path(tempfile.mkdtemp(prefix="bench-limiter-")),
        mongodb_db=f"bench_{uuid.uuid4().hex[:8]}",
        redis_url=REDIS_URL if mode == "redis" else None,
        market_feed="none",
        log_level="WARNING",
        cost_budget=10**9,
        cost_budget_anonymous=10**9,
    )

    async def run() -> None:
        services = await start_services(settings, feed=None)
        if mode == "off":

            async def allowed(key: str, cost: int) -> BudgetStatus:
                return BudgetStatus(10**9, 10**9, cost, 60, 0.0)

            services.limiter.spend = allowed  # type: ignore[method-assign]
        app = create_app(settings, services=services)
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="off"
        )
        try:
            await uvicorn.Server(config).serve()
        finally:
            await services.close()

    asyncio.run(run())


async def wait_for_server(port: int) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        for _ in range(150):
            with contextlib.suppress(httpx.TransportError):
                if (await client.get("/health")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError("the server did not start")


def request_bytes(port: int) -> bytes:
    body = json.dumps({"query": QUERY}).encode()
    head = (
        f"POST /graphql HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes) -> int:
    """One request on a keep-alive connection; returns the status (a minimal client:
    httpx would cost more CPU than the server on this 2-core machine)."""
    writer.write(raw)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    body = await reader.readexactly(length)
    return status if b'"errors"' not in body else 500


async def load(port: int, pid: int, duration: float, concurrency: int) -> dict[str, float]:
    await wait_for_server(port)
    raw = request_bytes(port)
    latencies: list[float] = []
    errors = 0

    async def worker(warm_until: float, until: float) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while (now := time.perf_counter()) < until:
                status = await exchange(reader, writer, raw)
                if now >= warm_until:
                    latencies.append(time.perf_counter() - now)
                    errors += status != 200
        finally:
            writer.close()

    cpu: list[float | None] = []

    async def sample_cpu(at: float) -> None:
        await asyncio.sleep(max(0.0, at - time.perf_counter()))
        cpu.append(cpu_seconds(pid))

    start = time.perf_counter()
    warm_until = start + 1.0
    await asyncio.gather(
        sample_cpu(warm_until),
        sample_cpu(warm_until + duration),
        *(worker(warm_until, warm_until + duration) for _ in range(concurrency)),
    )
    latencies.sort()
    server_cpu = cpu[1] - cpu[0] if None not in cpu else float("nan")  # type: ignore[operator]
    return {
        "server_cpu_ms_per_request": server_cpu * 1000 / len(latencies),
        "requests": len(latencies),
        "errors": errors,
        "rps": len(latencies) / duration,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
    }


def redis_reachable() -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping())
    except Exception:
        return False


def measure(mode: str, duration: float, concurrency: int) -> dict[str, float]:
    port = free_port()
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.limiter", "--serve", mode, "--port", str(port)],
        cwd=Path(__file__).parent.parent,
    )
    try:
        return asyncio.run(load(port, child.pid, duration, concurrency))
    finally:
        child.terminate()
        try:
            child.wait(timeout=15)
        except subprocess.TimeoutExpired:
            child.kill()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--serve", choices=["off", "memory", "redis"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.port)
        return

    modes = ["off", "memory"] + (["redis"] if redis_reachable() else [])
    # Each mode twice, interleaved, keeping its better run: less noise from whatever
    # else the machine does.
    results: dict[str, dict[str, float]] = {}
    for round_ in range(args.rounds):
        for mode in modes if round_ % 2 == 0 else reversed(modes):
            run = measure(mode, args.duration, args.concurrency)
            best = results.get(mode)
            if best is None or run["server_cpu_ms_per_request"] < best["server_cpu_ms_per_request"]:
                results[mode] = run
    base = results["off"]
    print(
        f"\nlimiter overhead: {QUERY!r}, {args.concurrency} connections, {args.duration:g} s each"
    )
    print(
        f"{'mode':<8}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'errors':>7}"
        f"{'cpu ms/req':>11}{'cpu ratio':>10}{'rps ratio':>10}"
    )
    for mode, r in results.items():
        r["cpu_ratio_vs_off"] = r["server_cpu_ms_per_request"] / base["server_cpu_ms_per_request"]
        r["rps_ratio_vs_off"] = base["rps"] / r["rps"]
        print(
            f"{mode:<8}{r['rps']:>8.0f}{r['p50_ms']:>8.2f}{r['p99_ms']:>8.2f}{r['errors']:>7}"
            f"{r['server_cpu_ms_per_request']:>11.3f}{r['cpu_ratio_vs_off']:>10.2f}"
            f"{r['rps_ratio_vs_off']:>10.2f}"
        )
    print("cpu: the server process's CPU time per request; ratios: mode / off")
    if "redis" not in results:
        print(f"redis: skipped ({REDIS_URL} unreachable)")
    OUT.mkdir(exist_ok=True)
    (OUT / "limiter.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
