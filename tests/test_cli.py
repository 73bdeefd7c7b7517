"""The command line as a user runs it: `cryptovault serve` with the embedded store
streams simulated prices; `cryptovault db` serves one store to several instances;
`cryptovault export-schema` prints the committed schema."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis.asyncio as aioredis
from gql import Client, gql
from gql.transport.websockets import WebsocketsTransport

from cryptovault import cli
from cryptovault.security.audit import SECURITY_CHANNEL
from cryptovault.security.origin import SYSTEM
from cryptovault.services import start_services
from tests.conftest import REDIS_URL, free_port, make_settings

ROOT = Path(__file__).parents[1]


def spawn(
    *args: str, env: dict[str, str], cwd: Path, stderr: Any = subprocess.PIPE
) -> subprocess.Popen:
    """`python -m cryptovault <args>` as a real process (stdout piped)."""
    return subprocess.Popen(
        [sys.executable, "-m", "cryptovault", *args],
        env={**os.environ, **env},
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )


async def wait_http(url: str, timeout: float = 30) -> httpx.Response:
    async with httpx.AsyncClient() as c:
        for _ in range(int(timeout / 0.1)):
            try:
                return await c.get(url)
            except httpx.TransportError:
                await asyncio.sleep(0.1)
    raise AssertionError(f"{url} did not answer")


async def test_serve_with_embedded_store_streams_simulated_prices(tmp_path):
    port = free_port()
    proc = spawn(
        "serve",
        env={
            "PORT": str(port),
            "DATA_DIR": str(tmp_path / "data"),
            "TICK_INTERVAL_MS": "100",
            "ENVIRONMENT": "development",
            "LOG_FORMAT": "json",
        },
        cwd=tmp_path,
    )
    try:
        assert (await wait_http(f"http://127.0.0.1:{port}/health")).status_code == 200
        ready = await wait_http(f"http://127.0.0.1:{port}/ready")
        assert ready.json()["checks"] == {"store": "ok"}
        transport = WebsocketsTransport(url=f"ws://127.0.0.1:{port}/graphql")
        async with Client(transport=transport) as session:
            seen = []
            async with asyncio.timeout(10):
                async for event in session.subscribe(
                    gql('subscription { prices(symbols: ["BTC"]) { symbol price } }')
                ):
                    seen.append(event["prices"])
                    if len(seen) == 3:
                        break
        assert [p["symbol"] for p in seen] == ["BTC"] * 3
        # The embedded store's file and the development secret live in DATA_DIR.
        assert (tmp_path / "data" / "cryptovault.sqlite3").exists()
        assert (tmp_path / "data" / "jwt_secret").exists()
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    # uvicorn re-raises the signal it stopped on, so SIGTERM shows as -15.
    assert proc.returncode in (0, -15), err[-2000:]
    # Every log line is a JSON object, and the shutdown logged no error.
    assert all(line.startswith("{") for line in err.splitlines() if line.strip())
    lines = [orjson.loads(line) for line in err.splitlines() if line.strip()]
    assert any(line["message"] == "cryptovault ready" for line in lines)
    assert [line["message"] for line in lines if line["level"] == "ERROR"] == []


async def test_db_command_serves_one_store_to_several_instances(tmp_path):
    port = free_port()
    proc = spawn("db", "--port", str(port), "--data-dir", str(tmp_path), env={}, cwd=tmp_path)
    try:
        line = await asyncio.to_thread(proc.stdout.readline)  # type: ignore[union-attr]
        assert line.startswith("MONGODB_URL=mongodb://127.0.0.1:")
        url = line.strip().split("=", 1)[1]
        settings = make_settings(url)
        a = await start_services(settings, feed=None)
        try:
            await a.store.db["shared"].insert_one({"_id": "x", "by": "a"})
            b_client = __import__("pymongo").AsyncMongoClient(url)
            doc = await b_client[settings.mongodb_db]["shared"].find_one({"_id": "x"})
            await b_client.close()
            assert doc == {"_id": "x", "by": "a"}
        finally:
            await a.store.db.client.drop_database(settings.mongodb_db)
            await a.close()
    finally:
        proc.terminate()
        proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert (tmp_path / "cryptovault.sqlite3").exists()


def test_export_schema_prints_the_committed_schema():
    out = subprocess.run(
        [sys.executable, "-m", "cryptovault", "export-schema"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert out == (ROOT / "schema.graphql").read_text()
    assert "type Query" in out and "type Subscription" in out


@pytest.mark.redis
async def test_create_admin_promote_existing_tells_running_instances_through_redis(
    store_server, tmp_path
):
    """The promotion is made by a separate process; with REDIS_URL set its audit
    entry goes out on the bus, so the running instances end the registrant's sockets
    at once (tests/test_socket_revocation.py) instead of at their next recheck."""
    settings = make_settings(store_server.url, redis_url=REDIS_URL)
    services = await start_services(settings, feed=None)
    redis = aioredis.from_url(REDIS_URL)
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    try:
        email = "ops-registrant@example.com"
        signed_in = await services.identity.register(email, "a long passphrase", SYSTEM)
        await pubsub.subscribe(f"{settings.mongodb_db}:{SECURITY_CHANNEL}")
        env = {"MONGODB_URL": store_server.url, "MONGODB_DB": settings.mongodb_db}
        env |= {"REDIS_URL": REDIS_URL, "DATA_DIR": str(tmp_path)}
        proc = spawn("create-admin", "--email", email, "--promote-existing", env=env, cwd=tmp_path)
        out, err = await asyncio.to_thread(proc.communicate, timeout=60)
        assert proc.returncode == 0, err
        assert "is now an admin" in out
        message = None
        async with asyncio.timeout(30):
            while message is None:
                message = await pubsub.get_message(timeout=1.0)
        entry = orjson.loads(message["data"])
        assert (entry["action"], entry["user_id"]) == ("admin.promoted", signed_in.user.id)
    finally:
        await pubsub.aclose()
        await redis.aclose()
        await services.store.db.client.drop_database(settings.mongodb_db)
        await services.close()


def test_serve_refuses_several_workers_without_redis_and_a_shared_store(tmp_path):
    """Each worker would have its own in-process bus and its own embedded store."""
    for env, missing in (
        ({"REDIS_URL": "", "MONGODB_URL": ""}, "REDIS_URL and MONGODB_URL"),
        ({"REDIS_URL": REDIS_URL, "MONGODB_URL": ""}, "MONGODB_URL"),
    ):
        proc = spawn(
            "serve",
            "--workers",
            "2",
            env={**env, "DATA_DIR": str(tmp_path), "ENVIRONMENT": "development"},
            cwd=tmp_path,
        )
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 2, err[-2000:]
        assert f"--workers 2 needs {missing}:" in err
        assert "cryptovault db" in err


@pytest.mark.redis
async def test_serve_with_two_workers_on_redis_and_a_db_server(tmp_path):
    """`serve --workers 2` against `cryptovault db` and Redis: both workers start
    their own instance on one port, queries are answered, live prices arrive (the
    feed runs on the worker holding the lease, the ticks travel over Redis)."""
    db_port, port = free_port(), free_port()
    db = spawn(
        "db", "--port", str(db_port), "--data-dir", str(tmp_path / "db"), env={}, cwd=tmp_path
    )
    log_path = tmp_path / "serve.log"
    serve = None
    try:
        line = await asyncio.to_thread(db.stdout.readline)  # type: ignore[union-attr]
        store_url = line.strip().split("=", 1)[1]
        with log_path.open("w") as log_file:
            serve = spawn(
                "serve",
                "--workers",
                "2",
                env={
                    "PORT": str(port),
                    "MONGODB_URL": store_url,
                    "MONGODB_DB": f"workers_{os.getpid()}_{port}",
                    "REDIS_URL": REDIS_URL,
                    "DATA_DIR": str(tmp_path / "data"),
                    "TICK_INTERVAL_MS": "100",
                    # Bounds the stop (the parent kills a worker after 3 x this + 10 s).
                    "SHUTDOWN_TIMEOUT_SECONDS": "2",
                    "ENVIRONMENT": "development",
                    "LOG_FORMAT": "json",
                },
                cwd=tmp_path,
                stderr=log_file,
            )

        def ready_workers() -> set[int]:
            lines = [orjson.loads(x) for x in log_path.read_text().splitlines() if x.strip()]
            return {x["worker"] for x in lines if x["message"] == "cryptovault ready"}

        async with asyncio.timeout(60):  # a bound for a hung start, not a measurement
            while ready_workers() != {1, 2}:
                assert serve.poll() is None, log_path.read_text()[-2000:]
                await asyncio.sleep(0.1)
        for _ in range(10):
            async with httpx.AsyncClient() as client:  # a new connection each time
                answer = await client.post(
                    f"http://127.0.0.1:{port}/graphql", json={"query": "{ ping }"}
                )
            assert answer.json()["data"] == {"ping": "pong"}
        transport = WebsocketsTransport(url=f"ws://127.0.0.1:{port}/graphql")
        async with Client(transport=transport) as session:
            seen = []
            async with asyncio.timeout(20):
                async for event in session.subscribe(
                    gql('subscription { prices(symbols: ["BTC"]) { symbol price } }')
                ):
                    seen.append(event["prices"]["symbol"])
                    if len(seen) == 3:
                        break
        assert seen == ["BTC"] * 3
    finally:
        if serve is not None:
            serve.terminate()
            serve.communicate(timeout=60)  # past the parent's own bound (16 s here)
        db.terminate()
        db.communicate(timeout=20)
    assert serve.returncode == 0, log_path.read_text()[-4000:]
    lines = [orjson.loads(x) for x in log_path.read_text().splitlines() if x.strip()]
    assert [x["message"] for x in lines if x["level"] == "ERROR"] == [], lines[-10:]
    # Both workers shut down as one `serve` does.
    assert {x["worker"] for x in lines if x["message"] == "cryptovault stopped"} == {1, 2}


@pytest.mark.redis
async def test_serve_kills_a_worker_that_does_not_stop_in_time(tmp_path):
    """A worker frozen (SIGSTOP) when `serve --workers 2` is told to stop: the parent
    does not wait on it forever; after its bound (3 x SHUTDOWN_TIMEOUT_SECONDS + 10 s)
    it kills the worker, logs it and exits 3 for the supervisor. The other worker
    still shuts down as usual."""
    db_port, port = free_port(), free_port()
    db = spawn(
        "db", "--port", str(db_port), "--data-dir", str(tmp_path / "db"), env={}, cwd=tmp_path
    )
    log_path = tmp_path / "serve.log"
    serve = None
    try:
        line = await asyncio.to_thread(db.stdout.readline)  # type: ignore[union-attr]
        with log_path.open("w") as log_file:
            serve = spawn(
                "serve",
                "--workers",
                "2",
                env={
                    "PORT": str(port),
                    "MONGODB_URL": line.strip().split("=", 1)[1],
                    "MONGODB_DB": f"stuck_{os.getpid()}_{port}",
                    "REDIS_URL": REDIS_URL,
                    "DATA_DIR": str(tmp_path / "data"),
                    "SHUTDOWN_TIMEOUT_SECONDS": "0.5",
                    "ENVIRONMENT": "development",
                    "LOG_FORMAT": "json",
                },
                cwd=tmp_path,
                stderr=log_file,
            )

        def logged() -> list[dict]:
            return [orjson.loads(x) for x in log_path.read_text().splitlines() if x.strip()]

        async with asyncio.timeout(60):  # a bound for a hung start, not a measurement
            while {x.get("worker") for x in logged() if x["message"] == "cryptovault ready"} != {
                1,
                2,
            }:
                assert serve.poll() is None, log_path.read_text()[-2000:]
                await asyncio.sleep(0.1)
        started = next(x for x in logged() if x["message"] == "workers started")
        frozen = started["workers"][0]
        os.kill(frozen, signal.SIGSTOP)
        serve.terminate()
        serve.communicate(timeout=60)
    finally:
        if serve is not None and serve.poll() is None:
            serve.kill()
            serve.communicate(timeout=30)
        db.terminate()
        db.communicate(timeout=20)
    assert serve.returncode == 3
    lines = logged()
    killed = [x for x in lines if x["message"] == "worker did not stop in time: killed"]
    assert [x["worker"] for x in killed] == ["cryptovault-worker-1"]
    assert {x["worker"] for x in lines if x["message"] == "cryptovault stopped"} == {2}
    with pytest.raises(ProcessLookupError):
        os.kill(frozen, 0)  # gone, not left stopped


async def test_a_worker_logs_what_its_tasks_await_on_sigusr1(caplog):
    """What the parent asks of a worker that does not stop in time: the log says
    where each task waits (innermost last), not only that the worker was stuck."""

    async def stuck_in_close(event: asyncio.Event) -> None:
        await event.wait()

    async def closing(event: asyncio.Event) -> None:
        await stuck_in_close(event)

    event = asyncio.Event()
    task = asyncio.create_task(closing(event), name="closing-services")
    await asyncio.sleep(0)
    with caplog.at_level("WARNING", logger="cryptovault.workers"):
        cli._log_stacks(signal.SIGUSR1, None)
    event.set()
    await task
    (record,) = [r for r in caplog.records if r.getMessage() == "stacks"]
    chain = record.tasks["closing-services"]
    assert [x.rsplit(" ", 1)[1].rsplit(".", 1)[-1] for x in chain[:3]] == [
        "closing",
        "stuck_in_close",
        "wait",
    ]
    assert str(threading.main_thread().ident) in record.threads
