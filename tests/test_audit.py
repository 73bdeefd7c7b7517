"""The audit log: admin-only `auditLog` (newest first, stable cursors, filters), the
viewer's own `securityEvents`, secret-free details, and the create-admin command."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pyotp
import pytest

from cryptovault.documents.audit import AuditEntryDocument
from cryptovault.events.bus import MemoryBus
from cryptovault.events.hub import Hub
from cryptovault.security import audit as audit_module
from cryptovault.security.audit import AuditLog, security_topic
from cryptovault.security.origin import Origin
from tests.conftest import PASSWORD, bearer, error_codes, log_in, sign_up

AUDIT = """query($first: Int, $after: String, $userId: ID, $action: String) {
  auditLog(first: $first, after: $after, userId: $userId, action: $action) {
    edges { cursor node { id at action actorId userId target ip userAgent requestId details } }
    pageInfo { hasNextPage endCursor }
  }
}"""
EVENTS = """query($first: Int, $after: String) {
  securityEvents(first: $first, after: $after) {
    edges { node { action userId ip details } } pageInfo { hasNextPage endCursor }
  }
}"""


@pytest.fixture(scope="module")
async def admin_token(app, services):
    import httpx

    from tests.conftest import GraphQLClient

    email = f"root-{uuid.uuid4().hex[:8]}@example.com"
    await services.identity.create_admin(email, PASSWORD)
    transport = httpx.ASGITransport(app=app, client=("10.0.0.1", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        body = await log_in(GraphQLClient(http), email)
    return body["data"]["login"]["accessToken"]


async def test_the_audit_log_is_admin_only(gql, admin_token):
    assert error_codes(await gql.execute(AUDIT)) == ["UNAUTHENTICATED"]
    user = await sign_up(gql)
    body = await gql.execute(AUDIT, headers=bearer(user["accessToken"]))
    assert error_codes(body) == ["FORBIDDEN"] and body["data"] is None
    assert (await gql.data(AUDIT, headers=bearer(admin_token)))["auditLog"]["edges"]


async def test_entries_record_who_what_and_where(gql, admin_token):
    email = f"where-{uuid.uuid4().hex[:8]}@example.com"
    user = await sign_up(gql, email)
    await gql.execute(
        "mutation($i: LoginInput!) { login(input: $i) { accessToken } }",
        {"i": {"email": email, "password": PASSWORD}},
        headers={"User-Agent": "Browser/1.0", "X-Request-ID": "req-audit-1"},
    )
    page = await gql.data(
        AUDIT,
        {"userId": user["user"]["id"], "action": "auth.login.succeeded"},
        headers=bearer(admin_token),
    )
    (entry,) = [e["node"] for e in page["auditLog"]["edges"]]
    assert entry["actorId"] == entry["userId"] == user["user"]["id"]
    assert entry["ip"] == "10.1.2.3" and entry["userAgent"] == "Browser/1.0"
    assert entry["requestId"] == "req-audit-1"
    assert entry["target"].startswith("session:")
    assert entry["at"].endswith("Z")


async def test_pages_are_newest_first_with_stable_cursors_on_equal_times(gql, admin_token):
    at = datetime(2026, 3, 1, 12, 0, 0, 123000, tzinfo=UTC)
    ids = []
    for _ in range(5):
        entry = AuditEntryDocument(at=at, action="test.tie")
        await entry.insert()
        ids.append(entry.id)
    older = AuditEntryDocument(at=at.replace(second=1), action="test.tie")  # later time
    await older.insert()
    seen, after = [], None
    while True:
        page = (
            await gql.data(
                AUDIT,
                {"first": 2, "after": after, "action": "test.tie"},
                headers=bearer(admin_token),
            )
        )["auditLog"]
        seen += [e["node"]["id"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == [older.id, *sorted(ids, reverse=True)]
    bad = await gql.execute(AUDIT, {"after": "nonsense"}, headers=bearer(admin_token))
    assert error_codes(bad) == ["BAD_USER_INPUT"]


async def test_the_user_filter_matches_actor_or_subject(gql, admin_token, services):
    subject = await sign_up(gql)
    sid = subject["user"]["id"]
    await services.audit.record("test.by_admin", actor="some-admin", user_id=sid, origin=Origin())
    page = await gql.data(AUDIT, {"userId": sid, "first": 50}, headers=bearer(admin_token))
    actions = [e["node"]["action"] for e in page["auditLog"]["edges"]]
    assert actions[0] == "test.by_admin" and "user.registered" in actions
    page = await gql.data(AUDIT, {"userId": "some-admin"}, headers=bearer(admin_token))
    assert [e["node"]["action"] for e in page["auditLog"]["edges"]] == ["test.by_admin"]


async def test_security_events_show_only_the_viewers_own(gql_at):
    gql = gql_at()
    email = f"mine-{uuid.uuid4().hex[:8]}@example.com"
    mine = await sign_up(gql, email)
    other = await sign_up(gql)
    await log_in(gql, email, "wrong password!")
    events = (await gql.data(EVENTS, headers=bearer(mine["accessToken"])))["securityEvents"]
    nodes = [e["node"] for e in events["edges"]]
    assert [n["action"] for n in nodes] == ["auth.login.failed", "user.registered"]
    assert {n["userId"] for n in nodes} == {mine["user"]["id"]}
    assert nodes[0]["details"] == {"email": email, "reason": "bad_credentials"}
    theirs = (await gql.data(EVENTS, headers=bearer(other["accessToken"])))["securityEvents"]
    assert [e["node"]["action"] for e in theirs["edges"]] == ["user.registered"]


async def test_details_never_keep_secrets(services):
    entry = await services.audit.record(
        "test.secrets",
        actor=None,
        user_id="u-secret",
        details={
            "password": "hunter22",
            "newPassword": "x",
            "otp": "123456",
            "refresh_token": "r",
            "api-key": "k",
            "amount": Decimal("1.50"),
            "nested": {"token": "t", "ok": 1},
        },
    )
    stored = await AuditEntryDocument.get(entry.id)
    assert stored.details == {"amount": "1.50", "nested": {"ok": 1}}


# -- create-admin ------------------------------------------------------------------------


async def run_cli(settings, tmp_path, *args: str) -> tuple[int, str, str]:
    env = {
        **os.environ,
        "ENVIRONMENT": "test",
        "MONGODB_URL": settings.mongodb_url,
        "MONGODB_DB": settings.mongodb_db,
        "ARGON2_TIME_COST": "1",
        "ARGON2_MEMORY_KIB": "256",
        "ARGON2_PARALLELISM": "1",
        "LOG_FORMAT": "console",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cryptovault",
        *args,
        cwd=tmp_path,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    return process.returncode, out.decode(), err.decode()


async def test_create_admin_creates_an_account(gql, settings, tmp_path):
    email = f"boss-{uuid.uuid4().hex[:8]}@example.com"
    code, out, _ = await run_cli(
        settings, tmp_path, "create-admin", "--email", email, "--password", "an admin password"
    )
    assert code == 0 and "created admin" in out
    login = await log_in(gql, email, "an admin password")
    assert login["data"]["login"]["user"]["role"] == "ADMIN"
    code, out, _ = await run_cli(settings, tmp_path, "create-admin", "--email", email)
    assert code == 0 and "already an admin" in out

    code, _, err = await run_cli(
        settings, tmp_path, "create-admin", "--email", "weak@example.com", "--password", "short"
    )
    assert code == 1 and "10 to 128" in err


async def test_create_admin_refuses_an_account_someone_else_registered(gql, settings, tmp_path):
    """Anyone may register ops@...: the operator's create-admin must not hand the
    registrant's password admin rights."""
    registrant = await sign_up(gql)
    email = registrant["user"]["email"]
    code, out, err = await run_cli(
        settings, tmp_path, "create-admin", "--email", email, "--password", "an admin password"
    )
    assert code == 1 and "--promote-existing" in err and out == ""
    login = await log_in(gql, email, PASSWORD)
    assert login["data"]["login"]["user"]["role"] == "USER"


async def test_promoting_an_existing_account_takes_away_what_its_registrant_set(
    gql, services, settings, tmp_path, monkeypatch
):
    registrant = await sign_up(gql)
    email, user_id = registrant["user"]["email"], registrant["user"]["id"]
    token = registrant["accessToken"]
    key = (
        await gql.data(
            'mutation { createApiKey(name: "bot", scopes: [MARKET_READ]) { key } }',
            headers=bearer(token),
        )
    )["createApiKey"]["key"]
    # A second factor the registrant holds would keep the mailbox's owner out.
    secret = (await gql.data("mutation { enableTwoFactor { secret } }", headers=bearer(token)))[
        "enableTwoFactor"
    ]["secret"]
    await gql.data(
        "mutation($c: String!) { confirmTwoFactor(code: $c) { twoFactorEnabled } }",
        {"c": pyotp.TOTP(secret).now()},
        headers=bearer(token),
    )
    code, _, err = await run_cli(
        settings,
        tmp_path,
        "create-admin",
        "--email",
        email,
        "--promote-existing",
        "--password",
        "an admin password",
    )
    assert code == 2 and "takes no password" in err

    code, out, _ = await run_cli(
        settings, tmp_path, "create-admin", "--email", email, "--promote-existing"
    )
    assert code == 0 and "password reset" in out.lower()
    # Without Redis the command's audit entry cannot reach this running instance: it
    # sees the change once what it keeps of these credentials is AUTH_CACHE_SECONDS
    # old (README "Authentication").
    cache = services.api_keys.cache
    aged = time.monotonic() + cache.max_age
    monkeypatch.setattr(cache, "clock", lambda: aged)
    # The registrant's password, session and key are worth nothing now.
    assert error_codes(await log_in(gql, email, PASSWORD)) == ["UNAUTHENTICATED"]
    viewer = await gql.execute("{ viewer { id } }", headers=bearer(token))
    assert viewer["errors"][0]["extensions"]["reason"] == "SESSION_REVOKED"
    by_key = await gql.execute("{ viewer { id } }", headers={"X-API-Key": key})
    assert by_key["errors"][0]["extensions"]["reason"] == "API_KEY_REVOKED"
    (entry,) = await AuditEntryDocument.find(
        {"action": "admin.promoted", "user_id": user_id}
    ).to_list()
    assert entry.details == {
        "sessions_revoked": 1,
        "api_keys_revoked": 1,
        "two_factor_removed": True,
        "password_reset_required": True,
    }

    # The mailbox's owner resets the password and signs in as the admin.
    mails = []

    class Capture:
        async def send(self, mail):
            mails.append(mail)

    monkeypatch.setattr(services.identity, "mailer", Capture())
    await services.identity._send_reset(email, Origin())
    lines = mails[0].body.splitlines()
    reset_token = lines[lines.index("Your reset token:") + 1]
    await gql.data(
        'mutation($t: String!) { resetPassword(token: $t, newPassword: "the owner\'s password") }',
        {"t": reset_token},
    )
    login = await log_in(gql, email, "the owner's password")
    assert login["data"]["login"]["user"]["role"] == "ADMIN"


async def test_a_failed_publish_is_retried_and_pushed_to_subscribers_once(services, monkeypatch):
    """A revocation's entry must reach the other instances' sockets even if the bus
    refused the first publish; a publish that failed after it went out is pushed to
    securityEvents subscribers once, not twice."""
    monkeypatch.setattr(audit_module, "PUBLISH_RETRIES", (0.0, 0.0, 0.0))

    class FlakyBus(MemoryBus):
        def __init__(self, failures: list[bool]) -> None:
            super().__init__()
            self.failures = failures  # per publish: raise, after delivering or not

        async def publish(self, channel: str, message: dict) -> None:
            plan = self.failures.pop(0) if self.failures else None
            if plan is not True:  # None: deliver; False: deliver then fail
                await super().publish(channel, message)
            if plan is not None:
                raise ConnectionError("bus unavailable")

    for failures in ([True, True], [False]):
        hub = Hub()
        audit = AuditLog(FlakyBus(list(failures)), hub)
        user_id = f"retried-{uuid.uuid4().hex[:8]}"
        with hub.subscribe(security_topic(user_id)) as events:
            entry = await audit.record("session.revoked", actor=user_id)
            async with asyncio.timeout(10):
                received = await anext(aiter(events))
            assert received.id == entry.id
            await asyncio.gather(*audit._retries)
            assert events.queue.empty(), failures  # no second copy


async def test_unsent_security_events_get_a_last_try_when_the_bus_closes(monkeypatch):
    """Shutdown (or the end of `create-admin`) must not drop a security event whose
    publish is waiting to be retried: `flush` tries it once more at once."""
    monkeypatch.setattr(audit_module, "PUBLISH_RETRIES", (3600.0,))

    class DownOnceBus(MemoryBus):
        def __init__(self) -> None:
            super().__init__()
            self.down = True

        async def publish(self, channel: str, message: dict) -> None:
            if self.down:
                self.down = False
                raise ConnectionError("bus unavailable")
            await super().publish(channel, message)

    hub = Hub()
    audit = AuditLog(DownOnceBus(), hub)
    user_id = f"flushed-{uuid.uuid4().hex[:8]}"
    with hub.subscribe(security_topic(user_id)) as events:
        entry = await audit.record("user.promoted", actor=user_id)
        assert events.queue.empty()  # the retry waits an hour
        assert await audit.flush() == 0
        async with asyncio.timeout(10):
            received = await anext(aiter(events))
        assert received.id == entry.id
        assert not audit._retries


async def test_flush_tries_the_unsent_events_together_not_one_timeout_after_another(
    monkeypatch,
):
    """With the bus unreachable but not refusing
    (a partitioned Redis: a publish hangs until its timeout), `flush` tries the
    unsent events one after another, each with its own `timeout`: shutdown takes
    N x timeout (2 s each by default) for N events queued during the outage, and an
    orchestrator's grace period (e.g. 30 s) kills the process before the bus and
    the store are closed. Here the bus answers only once all three publishes are
    in flight together: a flush that tries them at once ends at once; one that
    tries them in turn never gets past the first."""
    monkeypatch.setattr(audit_module, "PUBLISH_RETRIES", (3600.0,))
    unsent = 3

    class PartitionedBus(MemoryBus):
        def __init__(self) -> None:
            super().__init__()
            self.down = True
            self.in_flight = 0
            self.all_in_flight = asyncio.Event()

        async def publish(self, channel: str, message: dict) -> None:
            if self.down:
                raise ConnectionError("bus unavailable")
            self.in_flight += 1
            if self.in_flight >= unsent:
                self.all_in_flight.set()
            await self.all_in_flight.wait()
            await super().publish(channel, message)

    bus = PartitionedBus()
    audit = AuditLog(bus, Hub())
    for i in range(unsent):
        await audit.record("user.promoted", actor=f"flush-{i}-{uuid.uuid4().hex[:6]}")
    assert len(audit._retries) == unsent
    bus.down = False
    # In turn, the first publish waits out its whole (hour-long) timeout: the outer
    # budget is only a hang detector, never reached by a flush that tries them at once.
    async with asyncio.timeout(20):
        remaining = await audit.flush(timeout=3600.0)
    assert remaining == 0
