"""Test harness. Every test talks to the embedded store over the MongoDB wire protocol
(one server per session, a fresh database per module) and, for Redis paths, to the
real Redis server: never a mock."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as sync_redis
import uvicorn
from pymongo import monitoring

from cryptovault.app import create_app
from cryptovault.config import Settings
from cryptovault.db import EmbeddedServer
from cryptovault.market.assets import ASSETS
from cryptovault.market.ticks import Tick, quote
from cryptovault.services import Services, start_services
from cryptovault.wsprotocol import LeanWebSocketsProtocol

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
# What the apps write to DATA_DIR (the log mailer's outbox) goes here, not into the
# working tree; removed when the session ends.
TEST_DATA_DIR = Path(tempfile.mkdtemp(prefix="cryptovault-tests-"))


def redis_available() -> bool:
    try:
        return bool(sync_redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping())
    except Exception:
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if redis_available():
        return
    # Outside CI a developer without Redis may skip those tests; CI must run them
    # (.ci/run starts Redis and fails on any skip).
    marker = pytest.mark.skip(reason=f"Redis not reachable at {REDIS_URL}")
    for item in items:
        if "redis" in item.keywords:
            if os.environ.get("CI") == "true":
                raise pytest.UsageError(f"CI=true but Redis is not reachable at {REDIS_URL}")
            item.add_marker(marker)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "redis: needs the Redis server at TEST_REDIS_URL")


# DATA_DIR's default, relative to the working directory: the repository's ./data,
# where a developer's own secrets and store live. No test may write there.
WORKING_DATA_DIR = Path("data").resolve()
_WORKING_DATA_BEFORE = pytest.StashKey[set[Path]]()


def _working_data_files() -> set[Path]:
    return set(WORKING_DATA_DIR.rglob("*")) if WORKING_DATA_DIR.exists() else set()


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_WORKING_DATA_BEFORE] = _working_data_files()


def _fail_if_the_working_data_dir_was_written(session: pytest.Session) -> None:
    created = _working_data_files() - session.config.stash.get(_WORKING_DATA_BEFORE, set())
    if created and not hasattr(session.config, "workerinput"):  # xdist's controller: once
        names = ", ".join(sorted(str(p.relative_to(WORKING_DATA_DIR)) for p in created))
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line("")
            reporter.write_sep("=", f"the tests wrote under {WORKING_DATA_DIR}", red=True)
            reporter.write_line(f"{names}: pass DATA_DIR (tmp_path) to load_settings")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
async def store_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EmbeddedServer]:
    server = EmbeddedServer(Path(tmp_path_factory.mktemp("store")))
    await server.start()
    yield server
    await server.close()


LAX_AUTH_LIMITS = ",".join(
    f"{kind}=100000/minute:100000/minute"
    for kind in ("login", "register", "password_reset", "two_factor")
)


def make_settings(store_url: str, **overrides: Any) -> Settings:
    base = Settings(
        environment="test",
        mongodb_url=store_url,
        mongodb_db=f"test_{uuid.uuid4().hex[:12]}",
        data_dir=TEST_DATA_DIR,
        jwt_secret="test-secret-" + "x" * 40,
        market_feed="none",
        log_format="console",
        # A cheap Argon2 profile keeps sign-in tests fast; test_identity_config proves
        # the production default is RFC 9106's.
        argon2_time_cost=1,
        argon2_memory_kib=256,
        argon2_parallelism=1,
        # Budgets no functional test reaches; tests of the limits set their own.
        cost_budget=10_000_000,
        cost_budget_anonymous=10_000_000,
        auth_rate_limits=LAX_AUTH_LIMITS,
        # A loaded CI machine must not turn slow functional tests into timeouts;
        # the timeout's own tests set theirs.
        request_timeout_seconds=120.0,
        # Likewise for the time an order's owner has before the sweep takes over
        # (the takeover tests set theirs).
        order_lease_seconds=120.0,
        # Load tests open many sockets as one identity; the cap's own tests set it.
        ws_max_connections_per_identity=100_000,
    )
    return replace(base, **overrides)


@pytest.fixture(scope="module")
async def settings(store_server: EmbeddedServer) -> Settings:
    return make_settings(store_server.url)


@pytest.fixture(scope="module")
def commands() -> CommandCounter:
    """Counts the store commands of the module's services (call .reset() first)."""
    return CommandCounter()


@pytest.fixture(autouse=True)
def _commands_count_everything_at_first(request: pytest.FixtureRequest) -> None:
    """A test starts counting every command: a window an earlier test opened (with
    only_this_task) would otherwise hide this test's commands and pass it vacuously."""
    if "commands" in request.fixturenames:
        request.getfixturevalue("commands").count_everything()


@pytest.fixture(scope="module")
async def services(settings: Settings, commands) -> AsyncIterator[Services]:
    started = await start_services(settings, feed=None, event_listeners=[commands])
    yield started
    with contextlib.suppress(Exception):
        await started.store.client.drop_database(settings.mongodb_db)
    await started.close()


@pytest.fixture(scope="module")
async def app(settings: Settings, services: Services):
    return create_app(settings, services=services)


@pytest.fixture
async def client(app) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=("10.1.2.3", 5555))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


class GraphQLClient:
    """POSTs operations; `execute` returns the JSON body."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.headers: dict[str, str] = {}

    async def post(self, query: str, variables: dict | None = None, **kw: Any) -> httpx.Response:
        headers = {**self.headers, **kw.pop("headers", {})}
        return await self.http.post(
            "/graphql", json={"query": query, "variables": variables or {}}, headers=headers, **kw
        )

    async def execute(self, query: str, variables: dict | None = None, **kw: Any) -> dict:
        return (await self.post(query, variables, **kw)).json()

    async def data(self, query: str, variables: dict | None = None, **kw: Any) -> dict:
        body = await self.execute(query, variables, **kw)
        assert not body.get("errors"), body
        return body["data"]


@pytest.fixture
async def gql(client: httpx.AsyncClient) -> GraphQLClient:
    return GraphQLClient(client)


def error_codes(body: dict) -> list[str]:
    return [e.get("extensions", {}).get("code") for e in body.get("errors") or []]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.asynccontextmanager
async def serving(app, **options: Any) -> AsyncIterator[tuple[str, uvicorn.Server]]:
    """Run `app` on a real uvicorn server (uvicorn.Config `options` on top of the
    WebSocket protocol `cryptovault serve` runs, cryptovault/wsprotocol.py, without
    permessage-deflate unless asked and without uvicorn's access log, as
    `cryptovault serve` by default); yields its `host:port` and the server."""
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_config=None,
        lifespan="off",
        **{
            "ws": LeanWebSocketsProtocol,
            "ws_per_message_deflate": False,
            "access_log": False,
            **options,
        },
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"127.0.0.1:{port}", server
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def serve(app) -> AsyncIterator[str]:
    """Run the app on a real uvicorn server (for WebSocket protocol tests); yields
    the base URL."""
    async with serving(app) as (url, _):
        yield url


@pytest.fixture(scope="module")
async def live_url(app) -> AsyncIterator[str]:
    async with serve(app) as url:
        yield url


def tick(symbol: str, price: str, volume: str = "1", at: datetime | None = None) -> Tick:
    return quote(
        ASSETS[symbol], Decimal(price), Decimal(volume), "test", timestamp=at or datetime.now(UTC)
    )


# The counting window a task (and the tasks it starts) belongs to: a fresh token per
# CommandCounter.only_this_task() call.
_WINDOW: contextvars.ContextVar[object | None] = contextvars.ContextVar("window", default=None)


class CommandCounter(monitoring.CommandListener):
    """A pymongo command listener counting the store commands an operation sends."""

    IGNORED = {"ping", "hello", "isMaster", "ismaster", "endSessions", "buildInfo"}

    def __init__(self) -> None:
        self.commands: list[str] = []
        # (command name, collection) of each command, e.g. ("find", "orders").
        self.targets: list[tuple[str, str | None]] = []
        # None: count every command (a background writer's too).
        self._window: object | None = None
        # Documents the counted find/getMore commands returned, per collection.
        self.returned: dict[str | None, int] = {}
        self._reading: dict[int, str | None] = {}

    def started(self, event) -> None:
        if self._window is not None and _WINDOW.get() is not self._window:
            # A command of a task that is not the window's: a background loop, or a
            # task an earlier request started (e.g. a portfolio point after a trade)
            # finishing late. Timing decides whether those land in the window, so
            # they are never counted in it.
            return
        if event.command_name not in self.IGNORED:
            self.commands.append(event.command_name)
            target = event.command.get(event.command_name)
            self.targets.append((event.command_name, target if isinstance(target, str) else None))
            if event.command_name == "find":
                self._reading[event.request_id] = target
            elif event.command_name == "getMore":
                self._reading[event.request_id] = event.command.get("collection")

    def on(self, *collections: str) -> list[str]:
        """The names of the commands sent to these collections, in order."""
        return [name for name, target in self.targets if target in collections]

    def only_this_task(self) -> None:
        """From now on count only commands sent from the calling task and the tasks it
        starts from now on: not background loops, nor tasks started before this call
        (each call opens a new window, so a task an earlier request of the same test
        started is not counted, however late it runs)."""
        self._window = object()
        _WINDOW.set(self._window)

    def count_everything(self) -> None:
        self._window = None

    def succeeded(self, event) -> None:
        target = self._reading.pop(event.request_id, False)
        if target is not False:
            cursor = event.reply.get("cursor") or {}
            batch = cursor.get("firstBatch", cursor.get("nextBatch", []))
            self.returned[target] = self.returned.get(target, 0) + len(batch)

    def failed(self, event) -> None:
        self._reading.pop(event.request_id, None)

    def reset(self) -> None:
        self.commands.clear()
        self.targets.clear()
        self.returned.clear()
        # A read sent before the reset (a background matcher's, say) whose answer
        # arrives after it is not the window's: its documents are not counted.
        self._reading.clear()

    @property
    def count(self) -> int:
        return len(self.commands)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI a skipped test is a failure: it hides a missing service. Anywhere, a
    file the tests wrote under ./data is one."""
    shutil.rmtree(TEST_DATA_DIR, ignore_errors=True)
    _fail_if_the_working_data_dir_was_written(session)
    if os.environ.get("CI") != "true":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if skipped:
        print(f"\nCI: {skipped} test(s) skipped; failing the run")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# -- identity helpers ------------------------------------------------------------------

PASSWORD = "correct horse battery staple"

REGISTER = """mutation($input: RegisterInput!) {
  register(input: $input) { accessToken refreshToken expiresAt refreshTokenExpiresAt deviceToken
    user { id email role twoFactorEnabled frozen createdAt } }
}"""


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def sign_up(gql: GraphQLClient, email: str | None = None, password: str = PASSWORD) -> dict:
    """Register a new account over GraphQL; returns the AuthPayload."""
    email = email or f"user-{uuid.uuid4().hex[:10]}@example.com"
    body = await gql.execute(REGISTER, {"input": {"email": email, "password": password}})
    assert not body.get("errors"), body
    return body["data"]["register"]


@pytest.fixture
async def user_gql(app) -> AsyncIterator[GraphQLClient]:
    """A GraphQLClient signed in as a fresh user (`.headers` carries the bearer token;
    `.payload` is the register AuthPayload)."""
    transport = httpx.ASGITransport(app=app, client=("10.9.8.7", 5555))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        signed_in = GraphQLClient(http)
        signed_in.payload = await sign_up(signed_in)  # type: ignore[attr-defined]
        signed_in.headers.update(bearer(signed_in.payload["accessToken"]))  # type: ignore[attr-defined]
        yield signed_in


@pytest.fixture
def verify_calls(services, monkeypatch) -> list[str]:
    """Every Argon2 verification the service runs (the stored hash it checked)."""
    calls: list[str] = []
    hasher = services.identity.hasher
    real = hasher._verify

    def counting(stored: str, password: str) -> bool:
        calls.append(stored)
        return real(stored, password)

    monkeypatch.setattr(hasher, "_verify", counting)
    return calls


LOGIN = """mutation($input: LoginInput!) {
  login(input: $input) { accessToken refreshToken expiresAt deviceToken user { id email role } }
}"""


async def log_in(
    gql: GraphQLClient,
    email: str,
    password: str = PASSWORD,
    otp: str | None = None,
    device_token: str | None = None,
) -> dict:
    """The raw login response body (errors included)."""
    variables = {"email": email, "password": password, "otp": otp, "deviceToken": device_token}
    return await gql.execute(LOGIN, {"input": variables})


@pytest.fixture
async def gql_at(app) -> AsyncIterator[Any]:
    """Factory: a GraphQLClient whose requests come from the given (or a fresh) IP."""
    opened: list[httpx.AsyncClient] = []

    def make(ip: str | None = None) -> GraphQLClient:
        if ip is None:
            raw = uuid.uuid4().bytes
            ip = f"10.{raw[0]}.{raw[1]}.{raw[2] or 1}"
        transport = httpx.ASGITransport(app=app, client=(ip, 5555))
        http = httpx.AsyncClient(transport=transport, base_url="http://testserver")
        opened.append(http)
        return GraphQLClient(http)

    yield make
    for http in opened:
        await http.aclose()


@pytest.fixture
def at_once(monkeypatch) -> list[str]:
    """The frames LeanWebSocketsProtocol.write_text wrote."""
    written: list[str] = []
    write_text = LeanWebSocketsProtocol.write_text

    def recorded(self: LeanWebSocketsProtocol, text: str) -> bool:
        done = write_text(self, text)
        if done:
            written.append(text)
        return done

    monkeypatch.setattr(LeanWebSocketsProtocol, "write_text", recorded)
    return written
