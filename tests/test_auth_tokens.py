"""Access tokens, refresh tokens, the browser cookie with its CSRF rule, logout and
sessions, including the attacks: forged, expired and replayed tokens."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from cryptovault.config import Settings
from cryptovault.documents.audit import AuditEntryDocument
from cryptovault.documents.sessions import RefreshTokenDocument, RevokedTokenDocument
from cryptovault.errors import Unauthenticated
from cryptovault.security.origin import Origin
from tests.conftest import PASSWORD, bearer, error_codes, log_in, sign_up

VIEWER = "{ viewer { id email } }"
REFRESH = """mutation($r: String) {
  refreshToken(refreshToken: $r) { accessToken refreshToken expiresAt user { id } }
}"""
LOGOUT = "mutation { logout }"
SESSIONS = """query($first: Int, $after: String) {
  sessions(first: $first, after: $after) {
    edges { cursor node { id createdAt lastUsedAt expiresAt ip userAgent current } }
    pageInfo { hasNextPage endCursor }
  }
}"""
REVOKE = "mutation($id: ID!) { revokeSession(id: $id) }"
REVOKE_OTHERS = "mutation { revokeOtherSessions }"


def b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def claims_of(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def reason(body: dict) -> str | None:
    return body["errors"][0]["extensions"].get("reason")


# -- forged and expired access tokens ----------------------------------------------------


@pytest.fixture
async def signed_in(gql):
    return await sign_up(gql)


async def test_a_valid_token_identifies_the_viewer_and_anonymous_is_null(gql, signed_in):
    assert (await gql.data(VIEWER))["viewer"] is None
    me = await gql.data(VIEWER, headers=bearer(signed_in["accessToken"]))
    assert me["viewer"]["id"] == signed_in["user"]["id"]
    claims = claims_of(signed_in["accessToken"])
    assert {"sub", "jti", "iat", "exp", "type", "role"} <= set(claims)
    assert claims["exp"] - claims["iat"] == 15 * 60 and claims["type"] == "access"


async def test_a_token_with_alg_none_is_refused(gql, signed_in):
    claims = claims_of(signed_in["accessToken"])
    forged = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."
    body = await gql.execute(VIEWER, headers=bearer(forged))
    assert error_codes(body) == ["UNAUTHENTICATED"] and reason(body) == "TOKEN_INVALID"


async def test_a_token_signed_with_another_key_is_refused(gql, signed_in):
    claims = claims_of(signed_in["accessToken"])
    forged = jwt.encode(claims, "another-secret-" + "y" * 40, algorithm="HS256")
    body = await gql.execute(VIEWER, headers=bearer(forged))
    assert error_codes(body) == ["UNAUTHENTICATED"] and reason(body) == "TOKEN_INVALID"


@pytest.mark.filterwarnings("ignore:The HMAC key")
async def test_a_token_signed_with_the_right_key_but_another_algorithm_is_refused(
    gql, signed_in, settings
):
    claims = claims_of(signed_in["accessToken"])
    forged = jwt.encode(claims, settings.jwt_secret, algorithm="HS512")
    assert error_codes(await gql.execute(VIEWER, headers=bearer(forged))) == ["UNAUTHENTICATED"]


async def test_a_tampered_payload_is_refused(gql, signed_in):
    header, _, signature = signed_in["accessToken"].split(".")
    claims = claims_of(signed_in["accessToken"]) | {"role": "ADMIN"}
    tampered = f"{header}.{b64(claims)}.{signature}"
    assert error_codes(await gql.execute(VIEWER, headers=bearer(tampered))) == ["UNAUTHENTICATED"]


@pytest.mark.parametrize("missing", ["exp", "iat", "sub", "jti"])
async def test_a_token_without_a_required_claim_is_refused(gql, signed_in, settings, missing):
    claims = claims_of(signed_in["accessToken"])
    del claims[missing]
    forged = jwt.encode(claims, settings.jwt_secret, algorithm="HS256")
    assert error_codes(await gql.execute(VIEWER, headers=bearer(forged))) == ["UNAUTHENTICATED"]


async def test_a_token_of_another_type_is_refused(gql, signed_in, settings):
    claims = claims_of(signed_in["accessToken"]) | {"type": "refresh"}
    forged = jwt.encode(claims, settings.jwt_secret, algorithm="HS256")
    assert error_codes(await gql.execute(VIEWER, headers=bearer(forged))) == ["UNAUTHENTICATED"]


async def test_an_expired_token_is_refused_with_its_reason(gql, signed_in, services):
    claims = claims_of(signed_in["accessToken"])
    expired = services.identity.tokens.issue(
        claims["sub"], "USER", claims["sid"], now=datetime.now(UTC) - timedelta(minutes=16)
    )
    body = await gql.execute(VIEWER, headers=bearer(expired.token))
    assert error_codes(body) == ["UNAUTHENTICATED"] and reason(body) == "TOKEN_EXPIRED"
    body = await gql.execute(SESSIONS, headers=bearer(expired.token))
    assert error_codes(body) == ["UNAUTHENTICATED"]


async def test_public_fields_still_answer_with_a_refused_token(gql):
    body = await gql.execute("{ assets { symbol } }", headers=bearer("not.a.token"))
    assert not body.get("errors") and body["data"]["assets"]


@pytest.mark.parametrize("header", ["Basic abc", "Bearer", "Token abc"])
async def test_malformed_authorization_headers_are_refused(gql, header):
    body = await gql.execute(VIEWER, headers={"Authorization": header})
    assert error_codes(body) == ["UNAUTHENTICATED"]


# -- refresh tokens ----------------------------------------------------------------------


async def test_refresh_rotates_the_token_and_only_its_digest_is_stored(gql, signed_in):
    first = signed_in["refreshToken"]
    second = (await gql.data(REFRESH, {"r": first}))["refreshToken"]["refreshToken"]
    assert second != first
    third = (await gql.data(REFRESH, {"r": second}))["refreshToken"]["refreshToken"]
    assert third not in (first, second)
    assert await RefreshTokenDocument.get(first) is None
    stored = await RefreshTokenDocument.find({"user_id": signed_in["user"]["id"]}).to_list()
    assert len(stored) == 3 and all(len(t.id) == 64 for t in stored)


async def test_a_reused_refresh_token_revokes_the_whole_family(gql):
    email = f"reuse-{datetime.now(UTC).timestamp()}@example.com"
    device = await sign_up(gql, email)
    other_device = (await log_in(gql, email))["data"]["login"]
    stolen = device["refreshToken"]
    # The legitimate client refreshes...
    rotated = (await gql.data(REFRESH, {"r": stolen}))["refreshToken"]
    new_access = rotated["accessToken"]
    assert (await gql.data(VIEWER, headers=bearer(new_access)))["viewer"]

    replay = await gql.execute(REFRESH, {"r": stolen})  # ...then the thief replays the old one
    assert error_codes(replay) == ["UNAUTHENTICATED"] and reason(replay) == "REFRESH_TOKEN_REUSED"
    # Every token of that login is dead now...
    assert error_codes(await gql.execute(REFRESH, {"r": rotated["refreshToken"]})) == [
        "UNAUTHENTICATED"
    ]
    assert error_codes(await gql.execute(VIEWER, headers=bearer(new_access))) == ["UNAUTHENTICATED"]
    # ...other logins are not, and the reuse is audited.
    assert (await gql.data(VIEWER, headers=bearer(other_device["accessToken"])))["viewer"]
    entry = await AuditEntryDocument.find_one(
        {"action": "auth.refresh_token.reused", "user_id": device["user"]["id"]}
    )
    assert entry is not None and entry.target and entry.target.startswith("session:")


async def test_two_concurrent_refreshes_with_one_token_yield_one_new_token(gql, signed_in):
    bodies = await asyncio.gather(
        *(gql.execute(REFRESH, {"r": signed_in["refreshToken"]}) for _ in range(2))
    )
    assert sorted(bool(b.get("errors")) for b in bodies) == [False, True]


async def test_an_expired_refresh_token_is_refused_by_its_timestamp(services, signed_in):
    # Checked at a moment past its expiry, while the store (TTL) still holds it.
    later = datetime.now(UTC) + timedelta(days=services.settings.refresh_token_ttl_days, seconds=1)
    with pytest.raises(Unauthenticated) as refused:
        await services.identity.sessions.rotate(signed_in["refreshToken"], Origin(), later)
    assert refused.value.extensions["reason"] == "REFRESH_TOKEN_EXPIRED"


async def test_an_unknown_refresh_token_is_refused(gql):
    body = await gql.execute(REFRESH, {"r": "made-up"})
    assert error_codes(body) == ["UNAUTHENTICATED"] and reason(body) == "REFRESH_TOKEN_INVALID"


# -- the refresh cookie and CSRF ---------------------------------------------------------


def refresh_cookie(response) -> tuple[str, str]:
    """(value, full Set-Cookie header) of the refresh cookie."""
    for header in response.headers.get_list("set-cookie"):
        if header.startswith("cryptovault_refresh="):
            return header.split(";")[0].split("=", 1)[1], header
    raise AssertionError("no refresh cookie set")


async def test_login_sets_an_httponly_secure_samesite_strict_cookie(gql):
    email = f"cookie-{datetime.now(UTC).timestamp()}@example.com"
    await sign_up(gql, email)
    response = await gql.post(
        "mutation($i: LoginInput!) { login(input: $i) { refreshToken } }",
        {"i": {"email": email, "password": PASSWORD}},
    )
    value, header = refresh_cookie(response)
    assert value == response.json()["data"]["login"]["refreshToken"]
    attributes = {a.strip().split("=")[0].lower() for a in header.split(";")[1:]}
    assert {"httponly", "secure", "samesite", "path", "max-age"} <= attributes
    assert "samesite=strict" in header.lower() and "path=/graphql" in header.lower()
    assert Settings(environment="development").secure_cookies is False
    assert Settings(environment="production").secure_cookies is True


async def test_refresh_reads_the_cookie_when_the_csrf_header_is_present(gql, signed_in):
    cookie = {"Cookie": f"cryptovault_refresh={signed_in['refreshToken']}"}
    response = await gql.post(REFRESH, headers={**cookie, "X-CSRF-Protection": "1"})
    body = response.json()
    assert not body.get("errors"), body
    value, _ = refresh_cookie(response)
    assert value == body["data"]["refreshToken"]["refreshToken"] != signed_in["refreshToken"]


async def test_csrf_a_cookie_refresh_without_the_header_is_refused_and_spends_nothing(
    gql, signed_in
):
    cookie = {"Cookie": f"cryptovault_refresh={signed_in['refreshToken']}"}
    body = (await gql.post(REFRESH, headers=cookie)).json()
    assert error_codes(body) == ["FORBIDDEN"] and reason(body) == "CSRF_HEADER_MISSING"
    # A cross-site HTML form can only send form or text bodies: not executed at all.
    for content_type, payload in (
        (
            "application/x-www-form-urlencoded",
            "query=mutation%20%7B%20refreshToken%20%7B%20accessToken%20%7D%20%7D",
        ),
        ("text/plain", json.dumps({"query": "mutation { refreshToken { accessToken } }"})),
    ):
        response = await gql.http.post(
            "/graphql", content=payload, headers={**cookie, "Content-Type": content_type}
        )
        assert response.status_code >= 400
        assert "accessToken" not in response.text
    # Nothing was rotated by the forged requests: the token still works once.
    assert not (await gql.execute(REFRESH, {"r": signed_in["refreshToken"]})).get("errors")


async def test_logout_with_the_cookie_needs_the_csrf_header(gql, signed_in):
    cookie = {"Cookie": f"cryptovault_refresh={signed_in['refreshToken']}"}
    assert error_codes((await gql.post(LOGOUT, headers=cookie)).json()) == ["FORBIDDEN"]
    assert (await gql.data(VIEWER, headers=bearer(signed_in["accessToken"])))["viewer"]
    response = await gql.post(LOGOUT, headers={**cookie, "X-CSRF-Protection": "1"})
    assert response.json()["data"]["logout"] is True
    assert "cryptovault_refresh=" in response.headers["set-cookie"]  # cleared
    assert error_codes(await gql.execute(VIEWER, headers=bearer(signed_in["accessToken"]))) == [
        "UNAUTHENTICATED"
    ]


# -- logout and sessions -----------------------------------------------------------------


async def test_logout_blacklists_the_access_token_and_ends_the_session(gql, signed_in):
    headers = bearer(signed_in["accessToken"])
    assert (await gql.data(LOGOUT, headers=headers))["logout"] is True
    body = await gql.execute(VIEWER, headers=headers)
    assert error_codes(body) == ["UNAUTHENTICATED"] and reason(body) == "TOKEN_REVOKED"
    revoked = await RevokedTokenDocument.get(claims_of(signed_in["accessToken"])["jti"])
    assert revoked is not None
    assert int(revoked.expires_at.timestamp()) == claims_of(signed_in["accessToken"])["exp"]
    assert error_codes(await gql.execute(REFRESH, {"r": signed_in["refreshToken"]})) == [
        "UNAUTHENTICATED"
    ]
    assert error_codes(await gql.execute(LOGOUT)) == ["UNAUTHENTICATED"]


async def test_a_blacklisted_token_is_refused_while_its_session_lives(gql, signed_in, services):
    claims = claims_of(signed_in["accessToken"])
    fresh = (await gql.data(REFRESH, {"r": signed_in["refreshToken"]}))["refreshToken"]
    await services.identity.sessions.blacklist(
        claims["jti"], claims["sub"], datetime.fromtimestamp(claims["exp"], UTC)
    )
    body = await gql.execute(VIEWER, headers=bearer(signed_in["accessToken"]))
    assert reason(body) == "TOKEN_REVOKED"
    assert (await gql.data(VIEWER, headers=bearer(fresh["accessToken"])))["viewer"]


async def test_sessions_list_the_viewers_devices_newest_first(gql_at):
    laptop, phone = gql_at("198.51.100.1"), gql_at("198.51.100.2")
    email = f"devices-{datetime.now(UTC).timestamp()}@example.com"
    first = await sign_up(laptop, email)
    second = (await log_in(phone, email))["data"]["login"]
    phone.headers.update({**bearer(second["accessToken"]), "User-Agent": "PhoneApp/2.0"})
    page = (await phone.data(SESSIONS, {"first": 1}))["sessions"]
    (newest,) = [e["node"] for e in page["edges"]]
    assert newest["current"] is True and newest["ip"] == "198.51.100.2"
    assert page["pageInfo"]["hasNextPage"] is True
    rest = await phone.data(SESSIONS, {"first": 5, "after": page["pageInfo"]["endCursor"]})
    (older,) = [e["node"] for e in rest["sessions"]["edges"]]
    assert older["current"] is False and older["ip"] == "198.51.100.1"
    assert rest["sessions"]["pageInfo"]["hasNextPage"] is False
    claims = claims_of(first["accessToken"])
    assert older["id"] == claims["sid"]


async def test_another_users_session_is_not_found_and_stays_alive(gql):
    alice, bob = await sign_up(gql), await sign_up(gql)
    bobs_session = claims_of(bob["accessToken"])["sid"]
    body = await gql.execute(REVOKE, {"id": bobs_session}, headers=bearer(alice["accessToken"]))
    assert error_codes(body) == ["NOT_FOUND"]
    body = await gql.execute(REVOKE, {"id": "not-an-id"}, headers=bearer(alice["accessToken"]))
    assert error_codes(body) == ["NOT_FOUND"]
    assert (await gql.data(VIEWER, headers=bearer(bob["accessToken"])))["viewer"]
    # Bob's sessions are not in Alice's list either.
    listed = (await gql.data(SESSIONS, headers=bearer(alice["accessToken"])))["sessions"]["edges"]
    assert [e["node"]["id"] for e in listed] == [claims_of(alice["accessToken"])["sid"]]


async def test_revoking_a_session_signs_that_device_out_at_once(gql):
    email = f"revoke-{datetime.now(UTC).timestamp()}@example.com"
    mine = await sign_up(gql, email)
    lost = (await log_in(gql, email))["data"]["login"]
    lost_sid = claims_of(lost["accessToken"])["sid"]
    assert await gql.data(REVOKE, {"id": lost_sid}, headers=bearer(mine["accessToken"]))
    body = await gql.execute(VIEWER, headers=bearer(lost["accessToken"]))
    assert reason(body) == "SESSION_REVOKED"
    assert error_codes(await gql.execute(REFRESH, {"r": lost["refreshToken"]})) == [
        "UNAUTHENTICATED"
    ]


async def test_revoke_other_sessions_keeps_only_the_current_one(gql):
    email = f"others-{datetime.now(UTC).timestamp()}@example.com"
    mine = await sign_up(gql, email)
    others = [(await log_in(gql, email))["data"]["login"] for _ in range(2)]
    count = await gql.data(REVOKE_OTHERS, headers=bearer(mine["accessToken"]))
    assert count["revokeOtherSessions"] == 2
    for other in others:
        assert error_codes(await gql.execute(VIEWER, headers=bearer(other["accessToken"]))) == [
            "UNAUTHENTICATED"
        ]
    listed = (await gql.data(SESSIONS, headers=bearer(mine["accessToken"])))["sessions"]["edges"]
    assert len(listed) == 1 and listed[0]["node"]["current"] is True


async def test_account_fields_need_authentication(gql):
    for query in (SESSIONS, "{ apiKeys { edges { cursor } } }", REVOKE_OTHERS):
        assert error_codes(await gql.execute(query)) == ["UNAUTHENTICATED"]


async def test_refresh_works_while_a_stale_access_token_is_still_sent(gql, signed_in, services):
    claims = claims_of(signed_in["accessToken"])
    stale = services.identity.tokens.issue(
        claims["sub"], "USER", claims["sid"], now=datetime.now(UTC) - timedelta(hours=1)
    )
    body = await gql.execute(REFRESH, {"r": signed_in["refreshToken"]}, headers=bearer(stale.token))
    assert not body.get("errors"), body
