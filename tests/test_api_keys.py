"""Partner API keys: shown once, stored as a digest, scoped, revocable, per owner;
and what a key (or a frozen account) may not do."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from cryptovault.documents.apikeys import ApiKeyDocument
from cryptovault.errors import Forbidden
from cryptovault.schema.permissions import HasScope, IsAdmin
from cryptovault.security.origin import Origin
from cryptovault.security.viewer import Viewer
from tests.conftest import PASSWORD, bearer, error_codes, log_in, sign_up

CREATE = """mutation($n: String!, $s: [ApiKeyScope!]!) {
  createApiKey(name: $n, scopes: $s) {
    key apiKey { id name prefix scopes createdAt lastUsedAt revokedAt }
  }
}"""
KEYS = "{ apiKeys { edges { node { id name prefix scopes lastUsedAt } } } }"
REVOKE_KEY = "mutation($id: ID!) { revokeApiKey(id: $id) { id revokedAt } }"
VIEWER = "{ viewer { id frozen } }"


async def create_key(gql, token: str, scopes=("MARKET_READ", "TRADE"), name="bot") -> dict:
    body = await gql.execute(CREATE, {"n": name, "s": list(scopes)}, headers=bearer(token))
    assert not body.get("errors"), body
    return body["data"]["createApiKey"]


def api_key(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


async def test_a_key_is_shown_once_and_only_its_digest_is_stored(gql):
    owner = await sign_up(gql)
    created = await create_key(gql, owner["accessToken"], name="  My trading bot ")
    key, meta = created["key"], created["apiKey"]
    assert key.startswith(f"cvk_{meta['prefix']}_") and len(key) > 50
    assert meta["name"] == "My trading bot" and meta["scopes"] == ["MARKET_READ", "TRADE"]
    stored = await ApiKeyDocument.get(meta["id"])
    assert stored.secret_hash == hashlib.sha256(key.encode()).hexdigest()
    assert key not in stored.model_dump_json()
    listed = (await gql.data(KEYS, headers=bearer(owner["accessToken"])))["apiKeys"]["edges"]
    assert [e["node"]["id"] for e in listed] == [meta["id"]]
    assert key not in str(listed)


async def test_a_key_acts_as_its_owner(gql):
    owner = await sign_up(gql)
    key = (await create_key(gql, owner["accessToken"]))["key"]
    me = await gql.data(VIEWER, headers=api_key(key))
    assert me["viewer"]["id"] == owner["user"]["id"]


@pytest.mark.parametrize(
    "key",
    ["cvk_garbage", "cvk_0123456789ab_secret", "x" * 5000, ""],
)
async def test_made_up_keys_are_refused(gql, key):
    body = await gql.execute(VIEWER, headers=api_key(key))
    if key:
        assert error_codes(body) == ["UNAUTHENTICATED"]
    else:
        assert body["data"]["viewer"] is None  # an empty header is no credential


async def test_a_right_prefix_with_a_wrong_secret_is_refused(gql):
    owner = await sign_up(gql)
    key = (await create_key(gql, owner["accessToken"]))["key"]
    forged = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    assert error_codes(await gql.execute(VIEWER, headers=api_key(forged))) == ["UNAUTHENTICATED"]


async def test_both_a_token_and_a_key_is_refused(gql):
    owner = await sign_up(gql)
    key = (await create_key(gql, owner["accessToken"]))["key"]
    body = await gql.execute(VIEWER, headers={**api_key(key), **bearer(owner["accessToken"])})
    assert error_codes(body) == ["UNAUTHENTICATED"]


async def test_a_revoked_key_stops_working(gql):
    owner = await sign_up(gql)
    created = await create_key(gql, owner["accessToken"])
    revoked = await gql.data(
        REVOKE_KEY, {"id": created["apiKey"]["id"]}, headers=bearer(owner["accessToken"])
    )
    assert revoked["revokeApiKey"]["revokedAt"]
    body = await gql.execute(VIEWER, headers=api_key(created["key"]))
    assert error_codes(body) == ["UNAUTHENTICATED"]
    assert body["errors"][0]["extensions"]["reason"] == "API_KEY_REVOKED"
    assert (await gql.data(KEYS, headers=bearer(owner["accessToken"])))["apiKeys"]["edges"] == []


async def test_another_users_key_is_not_found_and_keeps_working(gql):
    alice, bob = await sign_up(gql), await sign_up(gql)
    bobs = await create_key(gql, bob["accessToken"])
    body = await gql.execute(
        REVOKE_KEY, {"id": bobs["apiKey"]["id"]}, headers=bearer(alice["accessToken"])
    )
    assert error_codes(body) == ["NOT_FOUND"]
    assert (await gql.data(VIEWER, headers=api_key(bobs["key"])))["viewer"]["id"] == bob["user"][
        "id"
    ]
    assert (await gql.data(KEYS, headers=bearer(alice["accessToken"])))["apiKeys"]["edges"] == []


async def test_last_use_is_recorded_at_most_once_a_minute(gql, monkeypatch):
    owner = await sign_up(gql)
    created = await create_key(gql, owner["accessToken"])
    assert created["apiKey"]["lastUsedAt"] is None
    await gql.data(VIEWER, headers=api_key(created["key"]))
    first = (await ApiKeyDocument.get(created["apiKey"]["id"])).last_used_at
    assert first is not None
    await gql.data(VIEWER, headers=api_key(created["key"]))
    assert (await ApiKeyDocument.get(created["apiKey"]["id"])).last_used_at == first
    # Two minutes later (the key's state may come from the authentication cache: its
    # last use is recorded all the same).
    later = first + timedelta(minutes=2)
    monkeypatch.setattr("cryptovault.security.authenticator.now_ms", lambda: later)
    await gql.data(VIEWER, headers=api_key(created["key"]))
    assert (await ApiKeyDocument.get(created["apiKey"]["id"])).last_used_at == later


@pytest.mark.parametrize(
    ("name", "scopes"),
    [("bot", []), ("   ", ["TRADE"]), ("x" * 65, ["TRADE"]), ("bot", ["ROOT"])],
)
async def test_bad_names_and_scopes_are_bad_user_input(gql, name, scopes):
    owner = await sign_up(gql)
    body = await gql.execute(CREATE, {"n": name, "s": scopes}, headers=bearer(owner["accessToken"]))
    assert error_codes(body) == ["BAD_USER_INPUT"]


async def test_a_key_cannot_manage_the_account(gql):
    owner = await sign_up(gql)
    key = (
        await create_key(
            gql,
            owner["accessToken"],
            scopes=["MARKET_READ", "PORTFOLIO_READ", "TRADE", "SCHEMA_READ"],
        )
    )["key"]
    for operation, variables in (
        (CREATE, {"n": "wider", "s": ["TRADE"]}),
        (KEYS, {}),
        ("{ sessions { edges { cursor } } }", {}),
        ("{ securityEvents { edges { cursor } } }", {}),
        ("mutation { enableTwoFactor { secret } }", {}),
        ("mutation { logout }", {}),
        ('mutation { changePassword(currentPassword: "x", newPassword: "yyyyyyyyyyyy") }', {}),
    ):
        body = await gql.execute(operation, variables, headers=api_key(key))
        assert error_codes(body) == ["FORBIDDEN"], operation


async def test_an_admins_key_has_no_admin_rights(gql, services):
    email = f"admin-{uuid.uuid4().hex[:8]}@example.com"
    await services.identity.create_admin(email, PASSWORD)
    token = (await log_in(gql, email))["data"]["login"]["accessToken"]
    key = (await create_key(gql, token))["key"]
    audit = "{ auditLog(first: 1) { edges { cursor } } }"
    assert not (await gql.execute(audit, headers=bearer(token))).get("errors")
    assert error_codes(await gql.execute(audit, headers=api_key(key))) == ["FORBIDDEN"]


async def test_a_frozen_user_can_sign_in_and_read_but_not_create_keys(gql, services):
    email = f"frozen-{uuid.uuid4().hex[:8]}@example.com"
    owner = await sign_up(gql, email)
    existing = (await create_key(gql, owner["accessToken"]))["key"]
    await services.identity.set_frozen(owner["user"]["id"], True, "chargeback", None, Origin())
    token = (await log_in(gql, email))["data"]["login"]["accessToken"]
    assert (await gql.data(VIEWER, headers=bearer(token)))["viewer"]["frozen"] is True
    assert (await gql.data(VIEWER, headers=api_key(existing)))["viewer"]["frozen"] is True
    body = await gql.execute(CREATE, {"n": "more", "s": ["TRADE"]}, headers=bearer(token))
    assert error_codes(body) == ["FORBIDDEN"]
    await services.identity.set_frozen(owner["user"]["id"], False, None, None, Origin())
    await create_key(gql, token)


def info_for(viewer: Viewer) -> SimpleNamespace:
    from cryptovault.config import Settings

    services = SimpleNamespace(settings=Settings())
    return SimpleNamespace(
        context=SimpleNamespace(
            viewer=viewer, auth_error=None, services=services, client_address="10.0.0.1"
        )
    )


def test_has_scope_limits_keys_and_not_user_sessions():
    key_viewer = Viewer("u1", scopes=frozenset({"market:read"}), api_key_id="k1")
    with pytest.raises(Forbidden):
        HasScope("trade")().has_permission(None, info_for(key_viewer))
    assert HasScope("market:read")().has_permission(None, info_for(key_viewer))
    assert HasScope("trade")().has_permission(None, info_for(Viewer("u1", session_id="s1")))


def test_is_admin_needs_the_role_and_a_session():
    with pytest.raises(Forbidden):
        IsAdmin().has_permission(None, info_for(Viewer("u1")))
    with pytest.raises(Forbidden):
        IsAdmin().has_permission(
            None, info_for(Viewer("u1", role="ADMIN", scopes=frozenset(), api_key_id="k"))
        )
    expired = Viewer("u1", role="ADMIN", expires_at=datetime.now(UTC) - timedelta(seconds=1))
    with pytest.raises(Exception, match="expired"):
        IsAdmin().has_permission(None, info_for(expired))
    assert IsAdmin().has_permission(None, info_for(Viewer("u1", role="ADMIN", session_id="s")))
