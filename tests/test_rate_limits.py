"""Cost budgets per identity, their headers and the 429; login/register limits."""

from __future__ import annotations

import random
import time
import uuid

import pytest

from cryptovault.config import DEFAULT_AUTH_RATE_LIMITS
from cryptovault.errors import BadUserInput, RateLimited
from cryptovault.market.assets import ASSETS
from cryptovault.protection.limiter import Limiter
from tests.auth import bearer
from tests.conftest import REDIS_URL, make_settings
from tests.harness import codes, gql, http, running

ASSETS_QUERY = "{ assets { symbol } }"  # costs one point per asset
COST = len(ASSETS)
RATE_LIMIT = "{ rateLimit { limit remaining cost resetAt windowSeconds } }"


async def test_budget_headers_429_and_a_free_rate_limit_query(store_server):
    budget = 3 * COST + 5
    async with (
        running(store_server.url, cost_budget_anonymous=budget, max_query_cost=COST) as (app, _),
        http(app) as client,
    ):
        for spent in range(1, 4):
            response = await gql(client, ASSETS_QUERY)
            assert response.status_code == 200, response.text
            remaining = budget - spent * COST
            h = response.headers
            assert h["RateLimit-Policy"] == f'"cost";q={budget};w=60'
            assert h["RateLimit"].startswith(f'"cost";r={remaining};t=')
            assert 0 < int(h["RateLimit"].rsplit("t=", 1)[1]) <= 120
            assert h["X-RateLimit-Limit"] == str(budget)
            assert h["X-RateLimit-Remaining"] == str(remaining)
            assert time.time() < int(h["X-RateLimit-Reset"]) <= time.time() + 121
            assert "Retry-After" not in h

        refused = await gql(client, ASSETS_QUERY)
        assert refused.status_code == 429
        body = refused.json()
        assert codes(body) == ["RATE_LIMITED"]
        retry = int(refused.headers["Retry-After"])
        assert 1 <= retry <= 120
        assert body["errors"][0]["extensions"]["retryAfter"] == retry
        assert body["errors"][0]["extensions"]["cost"] == COST
        assert refused.headers["X-RateLimit-Remaining"] == "5"
        assert body["extensions"]["cost"]["throttleStatus"]["currentlyAvailable"] == 5

        # Refused operations are not charged, and reading the budget is free.
        for _ in range(2):
            status = (await gql(client, RATE_LIMIT)).json()["data"]["rateLimit"]
            assert status["limit"] == budget
            assert status["remaining"] == 5
            assert status["cost"] == 0
            assert status["windowSeconds"] == 60


async def test_rate_limit_in_a_query_reports_the_budget_after_its_charge(store_server):
    async with running(store_server.url) as (app, _), http(app) as client:
        body = (await gql(client, "{ assets { symbol } rateLimit { remaining cost } }")).json()
        assert body["data"]["rateLimit"] == {"remaining": 10_000_000 - COST, "cost": COST}


async def test_each_identity_has_its_own_budget(store_server):
    async with (
        running(
            store_server.url, cost_budget=2 * COST, cost_budget_anonymous=COST, max_query_cost=COST
        ) as (app, _),
        http(app, ip="10.0.0.1") as first_ip,
        http(app, ip="10.0.0.2") as second_ip,
    ):
        assert (await gql(first_ip, ASSETS_QUERY)).status_code == 200
        assert (await gql(first_ip, ASSETS_QUERY)).status_code == 429
        assert (await gql(second_ip, ASSETS_QUERY)).status_code == 200

        # A user spends their own (larger) budget wherever they call from; an API key
        # of the same user has a budget of its own.
        user = bearer("u1")
        for _ in range(2):
            ok = await gql(first_ip, ASSETS_QUERY, headers=user)
            assert ok.status_code == 200
            assert ok.headers["X-RateLimit-Limit"] == str(2 * COST)
        assert (await gql(second_ip, ASSETS_QUERY, headers=user)).status_code == 429
        key = bearer("u1", "market:read")
        assert (await gql(second_ip, ASSETS_QUERY, headers=key)).status_code == 200


@pytest.mark.redis
async def test_redis_budgets_are_shared_by_every_instance(store_server):
    shared = {"redis_url": REDIS_URL, "mongodb_db": f"test_{uuid.uuid4().hex[:12]}"}
    limits = {"cost_budget_anonymous": 2 * COST, "max_query_cost": COST}
    async with (
        running(store_server.url, **shared, **limits) as (one, _),
        running(store_server.url, **shared, **limits) as (two, _),
        http(one) as a,
        http(two) as b,
    ):
        assert (await gql(a, ASSETS_QUERY)).headers["X-RateLimit-Remaining"] == str(COST)
        assert (await gql(b, ASSETS_QUERY)).headers["X-RateLimit-Remaining"] == "0"
        assert (await gql(a, ASSETS_QUERY)).status_code == 429


@pytest.mark.parametrize("backend", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def test_auth_attempts_are_limited_per_account_and_per_ip(backend):
    settings = make_settings(
        "mongodb://unused",
        redis_url=REDIS_URL if backend == "redis" else None,
        auth_rate_limits=DEFAULT_AUTH_RATE_LIMITS,
    )
    import redis.asyncio as aioredis

    redis = aioredis.from_url(REDIS_URL) if backend == "redis" else None
    try:
        limiter = Limiter(settings, redis)
        per_ip, per_account = limiter.auth_limits["login"]
        for _ in range(per_account.amount):
            await limiter.hit_auth("login", "1.1.1.1", "Ann@Example.com")
        with pytest.raises(RateLimited) as refused:
            await limiter.hit_auth("login", "2.2.2.2", " ann@example.com")
        assert refused.value.extensions["scope"] == "account"
        assert 1 <= refused.value.extensions["retryAfter"] <= 60

        # Other accounts from the same IP count towards the IP's limit.
        for i in range(per_ip.amount - per_account.amount):
            await limiter.hit_auth("login", "1.1.1.1", f"user{i}@example.com")
        with pytest.raises(RateLimited) as refused:
            await limiter.hit_auth("login", "1.1.1.1", "new@example.com")
        assert refused.value.extensions["scope"] == "ip"
        # Registration is limited separately.
        await limiter.hit_auth("register", "1.1.1.1", "new@example.com")
        with pytest.raises(BadUserInput):
            await limiter.hit_auth("nope", "1.1.1.1")
    finally:
        if redis is not None:
            await redis.aclose()


async def test_an_unreachable_limit_store_fails_open():
    settings = make_settings(
        "mongodb://unused", redis_url="redis://127.0.0.1:1/0", cost_budget=5, max_query_cost=5
    )
    import redis.asyncio as aioredis

    redis = aioredis.from_url(settings.redis_url, socket_connect_timeout=0.2)
    try:
        limiter = Limiter(settings, redis)
        status = await limiter.spend("user:x", 5)
        assert status.allowed
        await limiter.hit_auth("login", "1.1.1.1", "a@example.com")
    finally:
        await redis.aclose()


def test_rate_limited_errors_from_resolvers_answer_429_with_retry_after():
    # e.g. a login mutation calling services.limiter.hit_auth, which raises RateLimited.
    from starlette.applications import Starlette
    from starlette.responses import Response

    from cryptovault.app import GraphQLApp

    view = GraphQLApp(Starlette(), make_settings("mongodb://unused"))
    sub_response = Response()
    sub_response.status_code = None  # type: ignore[assignment]
    sub_response.media_type = "application/json"
    error = {
        "message": "Too many login attempts",
        "extensions": {"code": "RATE_LIMITED", "retryAfter": 42},
    }
    response = view.create_response({"data": None, "errors": [error]}, sub_response)
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "42"
    ok = Response()
    ok.status_code = None  # type: ignore[assignment]
    ok.media_type = "application/json"
    assert view.create_response({"data": {"x": 1}}, ok).status_code == 200


async def test_sign_in_mutations_are_limited_per_account_and_ip(store_server):
    from tests.harness import codes, gql, http, running

    register = "mutation($i: RegisterInput!) { register(input: $i) { accessToken } }"
    login = "mutation($i: LoginInput!) { login(input: $i) { accessToken } }"
    async with running(store_server.url, auth_rate_limits=DEFAULT_AUTH_RATE_LIMITS) as (app, _):
        async with http(app, ip="10.50.0.1") as client:
            email = "limited@example.com"
            creds = {"email": email, "password": "correct horse battery"}
            first = await gql(client, register, {"i": creds})
            assert codes(first.json()) == []
            # Two more tries for the same account (taken), then the account limit.
            for _ in range(2):
                assert codes((await gql(client, register, {"i": creds})).json()) == ["CONFLICT"]
            refused = await gql(client, register, {"i": creds})
            assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
            assert codes(refused.json()) == ["RATE_LIMITED"]
            # Logins: 10 a minute per account, successful ones included, and the
            # limit is checked before the password.
            for _ in range(10):
                assert codes((await gql(client, login, {"i": creds})).json()) == []
            refused = await gql(client, login, {"i": creds})
            assert codes(refused.json()) == ["RATE_LIMITED"]
        async with http(app, ip="10.50.0.2") as other:
            # Another address is not affected by the first one's IP limit, but the
            # account limit follows the account.
            body = (await gql(other, login, {"i": creds})).json()
            assert codes(body) == ["RATE_LIMITED"]
            other_creds = {"email": "someone@example.com", "password": "correct horse battery"}
            assert codes((await gql(other, register, {"i": other_creds})).json()) == []


# 2,000 tokens of one repeated selection: validation compares every pair (~0.5 s of CPU
# here); its static cost is 0, so only its parsing and validation can be charged.
REPEATED = "{" + " rateLimit { remaining }" * 400 + "}"


async def test_parsing_and_validating_a_new_document_is_charged(store_server):
    async with (
        running(store_server.url, cost_budget_anonymous=100_000, max_query_cost=100) as (app, _),
        http(app) as client,
    ):
        body = (await gql(client, REPEATED)).json()
        assert codes(body) == []
        charged = body["extensions"]["cost"]["documentCost"]
        # At least 40 ms of CPU (10 ms free, then 0.1 ms a point); this takes ~10x that.
        assert charged >= 300
        assert body["data"]["rateLimit"]["remaining"] == 100_000 - charged
        assert body["extensions"]["cost"]["requestedQueryCost"] == 0

        # The same document again is cached: nothing more to pay.
        again = (await gql(client, REPEATED)).json()
        assert "documentCost" not in again["extensions"]["cost"]
        assert again["data"]["rateLimit"]["remaining"] == 100_000 - charged


async def test_a_new_document_is_charged_in_full_even_beyond_what_is_left(store_server):
    """No discount for a caller near the end of its budget: the parsing and validation
    it caused are charged in full, as a debt that the refill pays off."""
    async with (
        running(store_server.url, cost_budget_anonymous=100, max_query_cost=100) as (app, _),
        http(app) as client,
    ):
        body = (await gql(client, REPEATED.replace("remaining", "limit"))).json()
        assert codes(body) == []
        # At least 40 ms of CPU (10 ms free, then 0.1 ms a point); this takes ~10x that.
        assert body["extensions"]["cost"]["documentCost"] >= 300
        assert body["extensions"]["cost"]["throttleStatus"]["currentlyAvailable"] == 0


class FakeClock:
    """`time.time()` for the in-memory limits storage: the test moves time on."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


async def test_a_debt_is_paid_off_by_the_refill_not_forgiven(monkeypatch):
    clock = FakeClock(6000.0)  # the start of a 60 s window
    monkeypatch.setattr("limits.aio.storage.memory.time", clock)
    limiter = Limiter(make_settings("mongodb://unused", cost_budget=100, cost_window_seconds=60))
    await limiter.charge("user:indebted", 250)  # 150 beyond the budget
    await limiter.charge("user:spent", 100)  # exactly the budget
    for at, indebted, spent in ((6000, False, False), (6061, False, True), (6090, False, True)):
        clock.now = at
        assert (await limiter.afford("user:indebted", 1)).allowed is indebted, at
        assert (await limiter.afford("user:spent", 1)).allowed is spent, at
    # The previous window's 250 weigh 250 x 20/60 = 83 now: the debt is paid off.
    clock.now = 6100
    assert (await limiter.afford("user:indebted", 16)).allowed
    assert not (await limiter.afford("user:indebted", 18)).allowed


async def test_spending_in_memory_counts_as_the_limits_strategy_does(monkeypatch):
    """The in-memory budget is spent in one synchronous step: the same statuses, the
    same refusals and the same counters in the storage as `limits`' sliding window
    counter, across windows, for identities and addresses."""
    clock = FakeClock(6000.0)
    monkeypatch.setattr("limits.aio.storage.memory.time", clock)
    settings = make_settings(
        "mongodb://unused", cost_budget=100, cost_budget_anonymous=30, cost_window_seconds=60
    )
    fast, stock = Limiter(settings), Limiter(settings)
    stock._in_memory = False  # the `limits` strategy's hit
    assert fast._in_memory
    steps = [(0, "user:a", 40), (1, "user:a", 50), (2, "user:a", 20), (2, "user:a", 10)]
    steps += [(3, "ip:1.2.3.4", 25), (4, "ip:1.2.3.4", 10), (5, "ip:1.2.3.4", 0)]
    steps += [(59, "user:a", 1), (61, "user:a", 30), (75, "user:a", 40), (90, "user:a", 35)]
    steps += [(100, "user:a", 500), (121, "user:a", 0), (130, "user:b", 100), (130, "user:b", 1)]
    steps += [(250, "user:a", 60), (250, "ip:1.2.3.4", 30)]
    refused = 0
    for at, key, cost in steps:
        clock.now = 6000.0 + at
        got, expected = await fast.spend(key, cost), await stock.spend(key, cost)
        assert got == expected, (at, key, cost)
        refused += not got.allowed
        assert fast.storage.storage == stock.storage.storage, (at, key, cost)
        assert fast.storage.expirations == stock.storage.expirations, (at, key, cost)
    assert refused >= 4
    assert await fast.counters.last_24h("rate_limit_rejections") == refused
    assert await stock.counters.last_24h("rate_limit_rejections") == refused


async def test_a_caller_without_points_gets_no_new_document_parsed(store_server, monkeypatch):
    async with (
        running(store_server.url, cost_budget_anonymous=100, max_query_cost=100) as (app, _),
        http(app) as client,
    ):
        assert codes((await gql(client, ASSETS_QUERY)).json()) == []  # cached from now on
        body = (await gql(client, REPEATED.replace("remaining", "cost"))).json()
        assert body["extensions"]["cost"]["documentCost"] > 100 - COST  # in debt now
        parsed, validated = [], []
        monkeypatch.setattr(
            "cryptovault.extensions.parsing.parse", lambda *a, **k: parsed.append(a) or None
        )
        monkeypatch.setattr("strawberry.schema.schema.parse", lambda *a, **k: parsed.append(a))
        monkeypatch.setattr(
            "cryptovault.extensions.parsing.validate", lambda *a, **k: validated.append(a) or []
        )
        for document in ("{ rateLimit { limit } }", "{ bad", ASSETS_QUERY):
            refused = await gql(client, document)
            assert refused.status_code == 429, document
            assert codes(refused.json()) == ["RATE_LIMITED"]
            assert 1 <= int(refused.headers["Retry-After"]) <= 120
        assert parsed == [] and validated == []
        # Another caller is not affected.
        async with http(app, ip="10.9.9.9") as other:
            assert codes((await gql(other, ASSETS_QUERY)).json()) == []


def test_the_readme_states_the_default_sign_in_limits():
    """Partners and operators read the README: its table must be what the code does."""
    from pathlib import Path

    from cryptovault.config import parse_auth_limits

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    units = {"second": "s", "minute": "min", "hour": "h", "day": "d"}

    def stated(item) -> str:
        return f"{item.amount}/{units[item.GRANULARITY.name]}"

    rows = {"login": "| `login` |", "two_factor": "| two-factor", "register": "| `register` |"}
    rows["password_reset"] = "| password reset"
    for kind, (per_ip, per_account) in parse_auth_limits(DEFAULT_AUTH_RATE_LIMITS).items():
        (row,) = [line for line in readme.splitlines() if line.startswith(rows[kind])]
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[1] == stated(per_ip), (kind, row)
        assert cells[2].split(" ")[0] == stated(per_account), (kind, row)


def test_the_readme_states_the_default_budgets_query_limits_and_lockout():
    """The numbers operators and partners plan with are the code's defaults."""
    import re
    from datetime import timedelta
    from pathlib import Path

    from cryptovault.config import Settings
    from cryptovault.security import lockout

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    defaults = Settings()

    def row(start: str) -> list[str]:
        (line,) = [line for line in readme.splitlines() if line.startswith(start)]
        return [cell.strip() for cell in line.strip("|").split("|")]

    assert f"`COST_BUDGET` ({defaults.cost_budget:,})" in readme
    assert f"`COST_BUDGET_ANONYMOUS` ({defaults.cost_budget_anonymous:,})" in readme
    assert f"`COST_WINDOW_SECONDS` ({defaults.cost_window_seconds} s)" in readme
    assert f"`MAX_QUERY_COST` (default {defaults.max_query_cost:,})" in readme
    for setting, value in (
        ("MAX_QUERY_DEPTH", defaults.max_query_depth),
        ("MAX_ALIASES", defaults.max_aliases),
        ("MAX_DIRECTIVES_PER_FIELD", defaults.max_directives_per_field),
        ("MAX_ROOT_FIELDS", defaults.max_root_fields),
        ("MAX_TOKENS", defaults.max_tokens),
        ("MAX_BATCH_OPERATIONS", defaults.max_batch_operations),
    ):
        (line,) = [line for line in readme.splitlines() if f"(`{setting}`" in line]
        assert line.split("|")[2].strip() == f"{value:,}", line

    def hours(delta: timedelta) -> str:
        return f"{int(delta.total_seconds() // 3600)} h"

    for start, bucket in (
        ("| an account |", lockout.ACCOUNT),
        ("| a client IP", lockout.IP),
        ("| a device |", lockout.DEVICE),
        ("| a session |", lockout.DEVICE),
    ):
        cells = row(start)
        assert cells[2:] == [str(bucket.free), hours(bucket.lookback)], start
    text = " ".join(readme.split())
    delays = re.search(r"waits (\d+) s after the latest failure.*?at most (\d+) minutes", text)
    assert delays is not None
    assert int(delays.group(1)) == lockout.BASE_DELAY.total_seconds()
    assert int(delays.group(2)) * 60 == lockout.MAX_DELAY.total_seconds()


@pytest.mark.parametrize("seed", range(30))
async def test_spending_in_memory_counts_as_the_limits_strategy_does_at_random(monkeypatch, seed):
    """As above, over random steps: spends, refusals, debts from `charge` and reads
    (`afford`, cost 0), of identities and addresses with budgets of different sizes,
    at exact window boundaries, just before them, and windows apart."""
    rng = random.Random(seed)
    clock = FakeClock(6000.0)
    monkeypatch.setattr("limits.aio.storage.memory.time", clock)
    window = rng.choice([1, 7, 60])
    settings = make_settings(
        "mongodb://unused",
        cost_budget=rng.choice([5, 100]),
        cost_budget_anonymous=rng.choice([3, 30]),
        cost_window_seconds=window,
    )
    fast, stock = Limiter(settings), Limiter(settings)
    stock._in_memory = False  # the `limits` strategy's hit
    now = 6000.0
    moves = [0.0, 0.001, window / 3, window - 1e-9, float(window), 2.0 * window]
    for step in range(300):
        roll = rng.random()
        if roll < 0.3:
            now += rng.choice([*moves, rng.random() * window])
        elif roll < 0.35:
            now = (int(now / window) + 1) * window  # exactly where a window starts
        clock.now = now
        key = rng.choice(["user:a", "user:b", "ip:1.2.3.4", "key:x"])
        cost = rng.choice([-1, 0, 1, 2, 5, 10, 29, 30, 31, 99, 100, 101])
        kind = rng.choice(["spend"] * 6 + ["charge", "afford"])
        got = await getattr(fast, kind)(key, cost)
        expected = await getattr(stock, kind)(key, cost)
        assert got == expected, (step, now, kind, key, cost)
        assert fast.storage.storage == stock.storage.storage, (step, now, kind, key, cost)
        assert fast.storage.expirations == stock.storage.expirations, (step, now, key)
