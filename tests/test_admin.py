"""The admin API: accounts, freezes, sessions, statistics and the audit log, each
behind the admin role (and the optional address allow-list)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from tests.conftest import PASSWORD, bearer, error_codes, log_in, sign_up

USERS = """query($first: Int, $after: String, $search: String) {
  users(first: $first, after: $after, search: $search) {
    totalCount edges { node { id email role frozen frozenReason lastLoginAt } }
    pageInfo { hasNextPage endCursor }
  }
}"""
FREEZE = (
    "mutation($id: ID!, $r: String!) { freezeUser(id: $id, reason: $r) { id frozen frozenReason } }"
)
UNFREEZE = "mutation($id: ID!) { unfreezeUser(id: $id) { id frozen frozenReason } }"
REVOKE = "mutation($id: ID!) { revokeUserSessions(id: $id) }"
STATS = """{ stats { users activeUsers24h signups24h failedLogins24h rateLimitRejections24h
  websocketConnections activeSubscriptions } }"""
CREATE_KEY = 'mutation { createApiKey(name: "k", scopes: [MARKET_READ]) { key } }'
REFRESH = "mutation($r: String) { refreshToken(refreshToken: $r) { accessToken } }"


async def admin_headers(services, gql) -> dict[str, str]:
    email = f"admin-{uuid.uuid4().hex[:8]}@example.com"
    await services.identity.create_admin(email, PASSWORD)
    body = await log_in(gql, email)
    return bearer(body["data"]["login"]["accessToken"])


async def test_users_are_listed_newest_first_with_search_and_total(gql_at, services):
    admin = gql_at()
    admin.headers.update(await admin_headers(services, admin))
    tag = uuid.uuid4().hex[:6]
    made = [await sign_up(gql_at(), f"{tag}-{i}@example.com") for i in range(3)]
    page = (await admin.data(USERS, {"first": 2, "search": tag.upper()}))["users"]
    assert page["totalCount"] == 3
    emails = [e["node"]["email"] for e in page["edges"]]
    assert emails == [f"{tag}-2@example.com", f"{tag}-1@example.com"]
    assert page["pageInfo"]["hasNextPage"] is True
    rest = (
        await admin.data(USERS, {"first": 2, "search": tag, "after": page["pageInfo"]["endCursor"]})
    )["users"]
    assert [e["node"]["email"] for e in rest["edges"]] == [f"{tag}-0@example.com"]
    assert rest["pageInfo"]["hasNextPage"] is False
    one = await admin.data(
        "query($id: ID!) { user(id: $id) { email lastLoginAt } }", {"id": made[0]["user"]["id"]}
    )
    assert one["user"]["email"] == f"{tag}-0@example.com"
    # Regex characters in a search are literal.
    assert (await admin.data(USERS, {"search": ".*"}))["users"]["totalCount"] == 0


async def test_admin_fields_refuse_users_and_anonymous_callers(gql_at, user_gql):
    for query in (USERS, STATS, '{ user(id: "x") { id } }'):
        assert error_codes(await user_gql.execute(query)) == ["FORBIDDEN"]
        assert error_codes(await gql_at().execute(query)) == ["UNAUTHENTICATED"]
    body = await user_gql.execute(FREEZE, {"id": user_gql.payload["user"]["id"], "r": "x"})
    assert error_codes(body) == ["FORBIDDEN"]


async def test_unknown_user_is_not_found(gql_at, services):
    admin = gql_at()
    admin.headers.update(await admin_headers(services, admin))
    assert error_codes(await admin.execute('{ user(id: "nope") { id } }')) == ["NOT_FOUND"]
    assert error_codes(await admin.execute(FREEZE, {"id": "nope", "r": "x"})) == ["NOT_FOUND"]


async def test_freeze_blocks_writes_keeps_reads_and_is_audited(gql_at, services, user_gql):
    admin = gql_at()
    admin.headers.update(await admin_headers(services, admin))
    target = user_gql.payload["user"]["id"]
    assert error_codes(await admin.execute(FREEZE, {"id": target, "r": " "})) == ["BAD_USER_INPUT"]
    frozen = (await admin.data(FREEZE, {"id": target, "r": "chargeback review"}))["freezeUser"]
    assert frozen == {"id": target, "frozen": True, "frozenReason": "chargeback review"}
    # The frozen user still reads, but cannot create API keys.
    assert (await user_gql.data("{ viewer { frozen } }"))["viewer"]["frozen"] is True
    assert error_codes(await user_gql.execute(CREATE_KEY)) == ["FORBIDDEN"]
    log = await admin.data(
        'query($u: ID) { auditLog(userId: $u, action: "user.frozen") '
        "{ edges { node { actorId target details } } } }",
        {"u": target},
    )
    (entry,) = [e["node"] for e in log["auditLog"]["edges"]]
    assert entry["target"] == f"user:{target}"
    assert entry["details"] == {"reason": "chargeback review"}
    admin_id = (await admin.data("{ viewer { id } }"))["viewer"]["id"]
    assert entry["actorId"] == admin_id
    unfrozen = (await admin.data(UNFREEZE, {"id": target}))["unfreezeUser"]
    assert unfrozen == {"id": target, "frozen": False, "frozenReason": None}
    assert not error_codes(await user_gql.execute(CREATE_KEY))


async def test_revoking_a_users_sessions_signs_them_out_everywhere(gql_at, services, user_gql):
    admin = gql_at()
    admin.headers.update(await admin_headers(services, admin))
    target = user_gql.payload["user"]["id"]
    assert (await admin.data(REVOKE, {"id": target}))["revokeUserSessions"] == 1
    body = await gql_at().execute(REFRESH, {"r": user_gql.payload["refreshToken"]})
    assert error_codes(body) == ["UNAUTHENTICATED"]
    log = await admin.data(
        'query($u: ID) { auditLog(userId: $u, action: "admin.sessions.revoked") '
        "{ edges { node { details } } } }",
        {"u": target},
    )
    assert [e["node"]["details"] for e in log["auditLog"]["edges"]] == [{"sessions": 1}]


async def test_stats_move_with_signups_and_failed_logins(gql_at, services):
    admin = gql_at()
    admin.headers.update(await admin_headers(services, admin))
    before = (await admin.data(STATS))["stats"]
    email = f"stats-{uuid.uuid4().hex[:6]}@example.com"
    await sign_up(gql_at(), email)
    await log_in(gql_at(), email, "wrong password!!")
    await services.limiter.counters.incr("rate_limit_rejections")
    after = (await admin.data(STATS))["stats"]
    assert after["users"] == before["users"] + 1
    assert after["signups24h"] == before["signups24h"] + 1
    assert after["failedLogins24h"] == before["failedLogins24h"] + 1
    assert after["rateLimitRejections24h"] == before["rateLimitRejections24h"] + 1
    assert after["activeUsers24h"] >= 1


async def test_audit_log_is_bounded_by_from_and_to(gql_at, services):
    admin = gql_at()
    admin.headers.update(await admin_headers(services, admin))
    query = """query($from: DateTime, $to: DateTime) {
      auditLog(first: 100, from: $from, to: $to, action: "auth.login.succeeded") { edges { node { at } } }
    }"""
    now = datetime.now(UTC)
    recent = await admin.data(query, {"from": (now - timedelta(minutes=5)).isoformat()})
    assert recent["auditLog"]["edges"]
    assert all(
        datetime.fromisoformat(e["node"]["at"]) >= now - timedelta(minutes=5)
        for e in recent["auditLog"]["edges"]
    )
    old = await admin.data(query, {"to": (now - timedelta(days=1)).isoformat()})
    assert old["auditLog"]["edges"] == []
    backwards = await admin.execute(
        query, {"from": now.isoformat(), "to": (now - timedelta(hours=1)).isoformat()}
    )
    assert error_codes(backwards) == ["BAD_USER_INPUT"]


async def test_admin_fields_only_answer_allowed_addresses(store_server):
    from ipaddress import ip_network

    from tests.harness import http, running

    async with running(store_server.url, admin_allowed_ips=(ip_network("10.60.0.0/16"),)) as (
        app,
        services,
    ):
        from cryptovault.security.authenticator import TokenAuthenticator

        services.authenticator = TokenAuthenticator(
            services.identity.tokens, services.identity.sessions, services.api_keys
        )
        email = f"admin-{uuid.uuid4().hex[:8]}@example.com"
        await services.identity.create_admin(email, PASSWORD)
        from tests.conftest import GraphQLClient

        async with http(app, ip="10.60.1.2") as inside, http(app, ip="192.0.2.7") as outside:
            token = (await log_in(GraphQLClient(inside), email))["data"]["login"]["accessToken"]
            ok = await GraphQLClient(inside).execute(STATS, headers=bearer(token))
            assert not ok.get("errors")
            refused = await GraphQLClient(outside).execute(STATS, headers=bearer(token))
            assert error_codes(refused) == ["FORBIDDEN"]
            assert "address" in refused["errors"][0]["message"]
