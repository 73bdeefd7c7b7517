"""Sentry, through a capturing transport: an unexpected error becomes exactly one
event carrying the errorId the client saw and no secret; errors that are the
client's (bad input, bad syntax, unknown fields) become none."""

from __future__ import annotations

from dataclasses import replace

import httpx
import pytest
import sentry_sdk
from sentry_sdk.envelope import Envelope
from sentry_sdk.integrations.strawberry import SentrySyncExtension
from sentry_sdk.transport import Transport

from cryptovault.app import create_app
from cryptovault.observability.sentry import FILTERED, before_send, init_sentry, is_secret_key
from tests.conftest import error_codes
from tests.test_metrics import HeaderAuthenticator

SECRETS = ("SECRET-BEARER-111", "SECRET-APIKEY-222", "SECRET-COOKIE-333", "SECRET-CSRF-444")


class CapturingTransport(Transport):
    def __init__(self) -> None:
        super().__init__()
        self.envelopes: list[Envelope] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        self.envelopes.append(envelope)

    @property
    def events(self) -> list[dict]:
        return [e.get_event() for e in self.envelopes if e.get_event() is not None]  # type: ignore[misc]

    def raw(self) -> bytes:
        return b"".join(e.serialize() for e in self.envelopes)


@pytest.fixture
def sentry(settings):
    transport = CapturingTransport()
    sentry_settings = replace(
        settings,
        sentry_dsn="https://public@sentry.example.invalid/1",
        sentry_traces_sample_rate=1.0,  # transactions must be scrubbed too
        sentry_release="cryptovault@test",
    )
    assert init_sentry(sentry_settings, transport=transport)
    yield transport, sentry_settings
    sentry_sdk.get_client().close()
    sentry_sdk.get_global_scope().set_client(None)


@pytest.fixture
async def sentry_client(sentry, services):
    _, sentry_settings = sentry
    # Built after init: the Strawberry integration hooks schema construction.
    app = create_app(
        sentry_settings, services=replace(services, authenticator=HeaderAuthenticator())
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        yield c


async def test_an_unexpected_error_is_one_event_with_the_client_error_id_and_no_secret(
    sentry, sentry_client, services, monkeypatch
):
    transport, _ = sentry

    def broken(*args, **kwargs):
        raise RuntimeError("quote table corrupted")

    monkeypatch.setattr(services.market, "quotes", broken)
    r = await sentry_client.post(
        "/graphql",
        json={
            "query": "query Prices($symbols: [String!]) { prices(symbols: $symbols) { symbol } }",
            "variables": {"symbols": ["BTC"]},
        },
        headers={
            "Authorization": f"Bearer {SECRETS[0]}",
            "X-API-Key": SECRETS[1],
            "Cookie": f"refresh_token={SECRETS[2]}",
            "X-CSRF-Token": SECRETS[3],
            "X-Request-ID": "rid-sentry-1",
        },
    )
    (error,) = r.json()["errors"]
    assert error["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    sentry_sdk.flush()
    (event,) = transport.events
    assert event["tags"]["error_id"] == error["extensions"]["errorId"]
    assert event["tags"]["request_id"] == "rid-sentry-1"
    assert "user" not in event  # anonymous: no IP address or anything else instead
    (exception,) = event["exception"]["values"]
    assert (exception["type"], exception["value"]) == ("RuntimeError", "quote table corrupted")
    assert event["environment"] == "test" and event["release"] == "cryptovault@test"
    raw = transport.raw()
    assert b'"type":"transaction"' in raw  # a transaction was sent too, and scrubbed
    for secret in SECRETS:
        assert secret.encode() not in raw


async def test_the_event_names_the_user_by_id_only(sentry, sentry_client, services, monkeypatch):
    transport, _ = sentry

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(services.market, "quotes", broken)
    await sentry_client.post(
        "/graphql",
        json={"query": "{ prices { symbol } }"},
        headers={"Authorization": "Bearer user:u-99"},
    )
    sentry_sdk.flush()
    (event,) = transport.events
    assert event["user"] == {"id": "u-99"}


async def test_client_errors_produce_no_event(sentry, sentry_client):
    transport, _ = sentry
    for query in (
        '{ prices(symbols: ["NOPE"]) { symbol } }',  # a domain error
        "{ nope }",  # validation
        "{ prices(",  # syntax
        '{ candles(symbol: "BTC", interval: ONE_MINUTE, first: 0) { edges { cursor } } }',
    ):
        body = (await sentry_client.post("/graphql", json={"query": query})).json()
        assert error_codes(body) == ["BAD_USER_INPUT"], body
    sentry_sdk.flush()
    assert transport.events == []


async def test_an_error_event_is_named_for_the_graphql_route_as_the_router_names_it(
    sentry, sentry_client, services, monkeypatch
):
    """POST /graphql is handed to the view by the edge (middleware.DirectRoute), GET
    goes through Starlette's router: Sentry names both events by the route, `/graphql`,
    not by the raw URL (which would split one route into one name per host or path
    spelling)."""
    transport, _ = sentry

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(services.market, "quotes", broken)
    query = "{ prices { symbol } }"
    await sentry_client.get("/graphql", params={"query": query}, headers={"Accept": "*/*"})
    await sentry_client.post("/graphql", json={"query": query})
    sentry_sdk.flush()
    routed, direct = transport.events
    assert routed["transaction"] == "/graphql"
    assert routed["transaction_info"] == {"source": "route"}
    assert (direct["transaction"], direct["transaction_info"]) == (
        routed["transaction"],
        routed["transaction_info"],
    )


def test_the_strawberry_integration_is_the_sync_one_without_a_per_field_hook(
    sentry, settings, services
):
    _, sentry_settings = sentry
    app = create_app(sentry_settings, services=services)
    graphql = next(r for r in app.routes if getattr(r, "path", "") == "/graphql").app
    (sentry_extension,) = [
        e
        for e in graphql.schema.extensions
        if isinstance(e, type) and issubclass(e, SentrySyncExtension)
    ]
    # Operation spans stay; wrapping every field resolver (traced or not) goes.
    assert sentry_extension.on_operation is SentrySyncExtension.on_operation
    assert not sentry_extension._implements_resolve()


def test_auth_mutations_lose_their_whole_graphql_payload():
    login = (
        'mutation { login(input: {email: "a@example.com", password: "hunter2-inline"}) '
        "{ accessToken } }"
    )
    for data in (
        {"query": login, "variables": {}},
        {
            "query": "mutation M($p: String!) { changePassword(currentPassword: $p, newPassword: $p) }",
            "variables": {"p": "hunter2-var"},
        },
        [{"query": "{ assets { symbol } }"}, {"query": login}],  # a batch
        {"query": "mutation { confirmTwoFactor(code: ", "variables": {"c": "123456"}},  # unparsable
    ):
        event = before_send({"request": {"data": data}}, {})
        assert event is not None and event["request"]["data"] == FILTERED


def test_secret_fields_headers_and_query_strings_are_scrubbed_everywhere():
    event = {
        "request": {
            "data": {
                "query": "mutation P($input: PlaceOrderInput!) { placeOrder(input: $input) { id } }",
                "variables": {"input": {"symbol": "BTC", "apiKey": "k-1", "otp": "654321"}},
            },
            "headers": {
                "Authorization": "Bearer t-1",
                "X-API-Key": "k-2",
                "Cookie": "c-3",
                "User-Agent": "curl/8",
            },
            "cookies": {"refresh_token": "c-4"},
            "query_string": "query=%7B+assets+%7B+symbol+%7D+%7D&access_token=t-5",
        },
        "breadcrumbs": {
            "values": [{"data": {"totp_code": "111111", "new_password": "p-6", "path": "/x"}}]
        },
        "contexts": {"response": {"data": {"login": {"refreshToken": "t-7"}}}},
        "extra": {"headers": [["x-api-key", "k-8"], ["accept", "json"]]},
    }
    scrubbed = before_send(event, {})
    assert scrubbed is not None
    text = repr(scrubbed)
    for secret in (
        "k-1",
        "654321",
        "t-1",
        "k-2",
        "c-3",
        "c-4",
        "t-5",
        "111111",
        "p-6",
        "t-7",
        "k-8",
    ):
        assert secret not in text, secret
    assert scrubbed["request"]["data"]["variables"]["input"]["symbol"] == "BTC"
    assert scrubbed["request"]["headers"]["User-Agent"] == "curl/8"
    assert "assets" in scrubbed["request"]["query_string"]
    assert scrubbed["breadcrumbs"]["values"][0]["data"]["path"] == "/x"
    assert "response" not in scrubbed["contexts"]


def test_each_graphql_error_of_a_response_reported_by_the_integration_is_dropped():
    event = {
        "exception": {"values": [{"type": "GraphQLError", "mechanism": {"type": "strawberry"}}]}
    }
    assert before_send(event, {}) is None


@pytest.mark.parametrize(
    "key, secret",
    [
        ("password", True),
        ("newPassword", True),
        ("refresh_token", True),
        ("X-API-Key", True),
        ("totp", True),
        ("otpCode", True),
        ("Set-Cookie", True),
        ("footprint", False),  # contains "otp", is not one
        ("symbol", False),
        ("code", False),  # error codes are not secrets; TOTP codes travel in auth mutations
    ],
)
def test_secret_keys_are_recognised(key, secret):
    assert is_secret_key(key) is secret
