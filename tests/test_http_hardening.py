"""GraphQL over HTTP, security headers, CORS, request timeouts and masked errors."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from cryptovault.config import ConfigError, load_settings
from cryptovault.http.view import negotiate
from tests.harness import codes, gql, http, running

QUERY = "{ rateLimit { limit } }"
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


@pytest.fixture(scope="module")
def web_dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stand-in for web/dist, so these tests do not need the Node build."""
    dist = tmp_path_factory.mktemp("dist")
    (dist / "assets").mkdir()
    for page, entry in (("index.html", "app-Ab12"), ("graphiql.html", "graphiql-Cd34")):
        (dist / page).write_text(
            f'<!doctype html><script type="module" src="/assets/{entry}.js"></script>'
        )
        (dist / "assets" / f"{entry}.js").write_text("console.log(1)")
    return dist


@pytest.fixture(scope="module")
async def app_pair(store_server, web_dist):
    async with (
        running(
            store_server.url, cors_origins=("https://app.example.com",), web_dist_dir=web_dist
        ) as (dev, _),
        running(store_server.url, environment="production", web_dist_dir=web_dist) as (prod, _),
    ):
        yield dev, prod


@pytest.fixture
async def client(app_pair):
    async with http(app_pair[0]) as c:
        yield c


async def test_security_headers_on_every_response(app_pair):
    dev, prod = app_pair
    async with http(dev) as c, http(prod) as p:
        for response in (
            await c.get("/health"),
            await gql(c, QUERY),
            await c.post("/graphql", content=b"{", headers={"Content-Type": "application/json"}),
            await c.get("/nope"),
        ):
            for name, value in SECURITY_HEADERS.items():
                assert response.headers[name] == value, (response.url, name)
            assert "camera=()" in response.headers["permissions-policy"]
            csp = response.headers["content-security-policy"]
            assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
            assert response.headers["cache-control"] == "no-store"
            assert "strict-transport-security" not in response.headers
        production = await gql(p, QUERY)
        assert production.headers["strict-transport-security"].startswith("max-age=63072000")
        assert (await p.get("/health")).headers["strict-transport-security"]


async def test_graphiql_page_gets_the_csp_it_needs(client):
    page = await client.get("/graphql", headers={"Accept": "text/html"})
    assert page.status_code == 200
    assert "/assets/graphiql-Cd34.js" in page.text
    csp = dict(
        part.strip().split(" ", 1) for part in page.headers["content-security-policy"].split(";")
    )
    # Self-hosted: scripts only from this origin, none inline, nothing from a CDN.
    assert csp["script-src"] == "'self'"
    assert csp["default-src"] == "'none'"
    assert "https:" not in page.headers["content-security-policy"]
    assert csp["connect-src"] == "'self' ws://testserver wss://testserver"
    assert csp["worker-src"] == "'self'"
    assert csp["frame-ancestors"] == "'none'"
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store"


async def test_graphiql_is_served_in_production_too(app_pair):
    # The page itself asks anonymous callers to sign in (or for an API key with
    # schema:read); introspection stays refused to them (test_introspection.py).
    async with http(app_pair[1]) as p:
        page = await p.get("/graphql", headers={"Accept": "text/html"})
        assert page.status_code == 200
        assert "/assets/graphiql-Cd34.js" in page.text
        refused = await gql(p, "{ __schema { queryType { name } } }")
        assert codes(refused.json()) == ["FORBIDDEN"]


async def test_graphql_response_json_when_accepted(client):
    accept = {"Accept": "application/graphql-response+json, application/json;q=0.9"}
    ok = await gql(client, QUERY, headers=accept)
    assert ok.status_code == 200
    assert ok.headers["content-type"] == "application/graphql-response+json"
    # A request error (nothing executed) has no data and a 4xx status ...
    invalid = await gql(client, "{ nope }", headers=accept)
    assert invalid.status_code == 400
    assert "data" not in invalid.json()
    assert codes(invalid.json()) == ["BAD_USER_INPUT"]
    # ... while plain application/json keeps 200 for GraphQL errors.
    legacy = await gql(client, "{ nope }")
    assert legacy.status_code == 200
    assert legacy.headers["content-type"] == "application/json"
    assert codes(legacy.json()) == ["BAD_USER_INPUT"]
    # A field error during execution is still a 200 with data.
    field_error = await gql(client, '{ asset(symbol: "NOPE") { name } }', headers=accept)
    assert field_error.status_code == 200
    assert field_error.json()["data"] == {"asset": None}


def test_accept_negotiation():
    assert negotiate(None) == "application/json"
    assert negotiate("*/*") == "application/json"
    assert negotiate("application/*") == "application/json"
    assert negotiate("application/graphql-response+json") == "application/graphql-response+json"
    assert negotiate("application/graphql-response+json;q=0, application/json") == (
        "application/json"
    )
    assert negotiate("text/csv") is None


def test_accept_negotiation_is_kept_for_a_bounded_set_of_values(monkeypatch):
    from cryptovault.http import view

    monkeypatch.setattr(view, "_NEGOTIATED", {})
    monkeypatch.setattr(view, "_NEGOTIATED_MAX", 3)
    values = [
        None,
        "",
        "text/csv",
        "application/graphql-response+json;q=0, application/json",
        "application/*",
        "text/html, application/graphql-response+json;q=0.5",
        "application/json;q=0",
    ]
    expected = [view._negotiate(v) for v in values]
    # Again and again: the first three answers kept, the rest worked out each time.
    for _ in range(3):
        assert [negotiate(v) for v in values] == expected
    assert dict(zip(values[:3], expected[:3], strict=True)) == view._NEGOTIATED
    assert expected == [
        "application/json",
        "application/json",
        None,
        "application/json",
        "application/json",
        "application/graphql-response+json",
        None,
    ]


async def test_unacceptable_accept_is_406(client):
    response = await gql(client, QUERY, headers={"Accept": "text/csv"})
    assert response.status_code == 406
    assert codes(response.json()) == ["BAD_USER_INPUT"]


async def test_only_queries_over_get(client):
    ok = await client.get("/graphql", params={"query": QUERY})
    assert ok.status_code == 200
    assert ok.json()["data"]["rateLimit"]["limit"] == 10_000_000
    refused = await client.get(
        "/graphql", params={"query": 'subscription { prices(symbols: ["BTC"]) { price } }'}
    )
    assert refused.status_code == 405
    assert refused.headers["allow"] == "POST"
    assert codes(refused.json()) == ["BAD_USER_INPUT"]
    over_post = await gql(client, 'subscription { prices(symbols: ["BTC"]) { price } }')
    assert over_post.status_code == 400
    assert "WebSocket" in over_post.json()["errors"][0]["message"]


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/x-www-form-urlencoded", b"query=%7B+rateLimit+%7B+limit+%7D+%7D"),
        ("text/plain", b'{"query": "{ rateLimit { limit } }"}'),
        ("multipart/form-data; boundary=x", b"--x--"),
        ("application/graphql", b"{ rateLimit { limit } }"),
        (None, b'{"query": "{ rateLimit { limit } }"}'),
    ],
)
async def test_post_requires_a_json_content_type(client, content_type, body):
    headers = {"Content-Type": content_type} if content_type else {}
    response = await client.post("/graphql", content=body, headers=headers)
    assert response.status_code == 415
    assert codes(response.json()) == ["BAD_USER_INPUT"]


@pytest.mark.parametrize(
    "body", [b"{", b"42", b'"query"', b"null", b'{"query": 5}', b'{"variables": [1]}', b"\xff"]
)
async def test_malformed_bodies_are_400_with_a_code(client, body):
    response = await client.post(
        "/graphql", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert codes(response.json()) == ["BAD_USER_INPUT"]


async def test_cors_only_for_allowed_origins(client):
    allowed = await gql(client, QUERY, headers={"Origin": "https://app.example.com"})
    assert allowed.headers["access-control-allow-origin"] == "https://app.example.com"
    exposed = allowed.headers["access-control-expose-headers"].lower()
    assert "retry-after" in exposed and "x-ratelimit-remaining" in exposed
    other = await gql(client, QUERY, headers={"Origin": "https://evil.example.com"})
    assert "access-control-allow-origin" not in other.headers
    preflight = await client.options(
        "/graphql",
        headers={
            "Origin": "https://evil.example.com",
            "Access-Control-Request-Method": "POST",
        },
    )
    assert preflight.status_code == 400


async def test_slow_operations_end_with_an_error(store_server, monkeypatch):
    async with (
        running(store_server.url, request_timeout_seconds=0.2) as (app, services),
        http(app) as client,
    ):

        async def stuck(*args):
            await asyncio.sleep(30)

        monkeypatch.setattr(services.market, "candle_page", stuck)
        response = await gql(
            client, '{ candles(symbol: "BTC", interval: ONE_MINUTE) { pageInfo { hasNextPage } } }'
        )
        assert response.status_code == 504
        error = response.json()["errors"][0]
        assert error["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
        assert re.fullmatch(r"[0-9a-f]{32}", error["extensions"]["errorId"])


async def test_unexpected_errors_are_masked_with_an_error_id(client, app_pair, monkeypatch, caplog):
    services = app_pair[0].state.services

    async def broken(*args):
        raise RuntimeError("mongodb://admin:secret@db/ at /srv/cryptovault/market/service.py")

    monkeypatch.setattr(services.market, "candle_page", broken)
    body = (
        await gql(
            client, '{ candles(symbol: "BTC", interval: ONE_MINUTE) { pageInfo { hasNextPage } } }'
        )
    ).json()
    error = body["errors"][0]
    assert error["message"] == "Internal server error"
    assert error["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    assert "secret" not in str(body) and "Traceback" not in str(body) and ".py" not in str(body)
    logged = [r for r in caplog.records if getattr(r, "error_id", None)]
    assert logged and logged[-1].error_id == error["extensions"]["errorId"]


def test_protection_settings_are_validated(tmp_path):
    base = {"DATA_DIR": str(tmp_path)}
    with pytest.raises(ConfigError, match="MAX_QUERY_COST"):
        load_settings({**base, "MAX_QUERY_COST": "5000", "COST_BUDGET_ANONYMOUS": "100"}, None)
    with pytest.raises(ConfigError, match="REQUEST_TIMEOUT_SECONDS"):
        load_settings({**base, "REQUEST_TIMEOUT_SECONDS": "soon"}, None)
    with pytest.raises(ConfigError, match="MAX_QUERY_DEPTH"):
        load_settings({**base, "MAX_QUERY_DEPTH": "0"}, None)
    settings = load_settings(
        {**base, "COST_BUDGET": "500", "MAX_QUERY_COST": "400", "WS_PING_INTERVAL_SECONDS": "2.5"},
        None,
    )
    assert (settings.cost_budget, settings.max_query_cost) == (500, 400)
    assert settings.ws_ping_interval_seconds == 2.5
