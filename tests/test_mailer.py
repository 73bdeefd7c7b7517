"""Mail: the log backend, and the SMTP backend against a real local SMTP server."""

from __future__ import annotations

import logging
import uuid
from dataclasses import replace
from email import message_from_bytes
from email.policy import default
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from cryptovault.security.mailer import REDACTED, LogMailer, Mail, SmtpMailer, build_mailer
from cryptovault.security.origin import Origin
from tests.conftest import free_port, sign_up


class Inbox:
    def __init__(self) -> None:
        self.envelopes: list = []
        self.logins: list[tuple[bytes, bytes]] = []

    async def handle_DATA(self, server, session, envelope) -> str:
        self.envelopes.append(envelope)
        return "250 Message accepted"

    def authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        self.logins.append((auth_data.login, auth_data.password))
        ok = (auth_data.login, auth_data.password) == (b"mailer", b"s3cret")
        return AuthResult(success=ok, handled=False)


@pytest.fixture
def smtp_server():
    inbox = Inbox()
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=free_port(),
        authenticator=inbox.authenticate,
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield inbox, controller.port
    finally:
        controller.stop()


async def test_the_smtp_backend_delivers_with_login(smtp_server):
    inbox, port = smtp_server
    mailer = SmtpMailer(
        "127.0.0.1", port, "CryptoVault <no-reply@example.com>", "mailer", "s3cret", security="none"
    )
    await mailer.send(Mail(to="someone@example.com", subject="Hello", body="Line one\nLine two"))
    (envelope,) = inbox.envelopes
    assert inbox.logins == [(b"mailer", b"s3cret")]
    assert envelope.mail_from == "no-reply@example.com"
    assert envelope.rcpt_tos == ["someone@example.com"]
    text = envelope.content.decode()
    assert "Subject: Hello" in text and "Line one\nLine two" in text.replace("\r\n", "\n")


async def test_a_wrong_smtp_password_fails_loudly(smtp_server):
    _, port = smtp_server
    mailer = SmtpMailer("127.0.0.1", port, "a@example.com", "mailer", "wrong", security="none")
    with pytest.raises(Exception, match="uthentication"):
        await mailer.send(Mail(to="x@example.com", subject="s", body="b"))


async def test_a_password_reset_arrives_by_smtp(gql, services, settings, smtp_server):
    inbox, port = smtp_server
    smtp_settings = replace(
        settings,
        mailer="smtp",
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_security="none",
        smtp_from="reset@example.com",
        password_reset_url="https://app.example.com/reset?token={token}",
    )
    email = f"smtp-{uuid.uuid4().hex[:8]}@example.com"
    await sign_up(gql, email)
    original_mailer, original_settings = services.identity.mailer, services.identity.settings
    services.identity.mailer = build_mailer(smtp_settings)
    services.identity.settings = smtp_settings
    try:
        await gql.data("mutation($e: String!) { requestPasswordReset(email: $e) }", {"e": email})
        await services.identity.drain()
    finally:
        services.identity.mailer, services.identity.settings = original_mailer, original_settings
    (envelope,) = inbox.envelopes
    assert envelope.rcpt_tos == [email]
    body = message_from_bytes(envelope.content, policy=default).get_content()
    link = next(line for line in body.splitlines() if line.startswith("https://app.example.com/"))
    token = link.split("token=", 1)[1]
    reset = await gql.data(
        'mutation($t: String!) { resetPassword(token: $t, newPassword: "a new password!") }',
        {"t": token},
    )
    assert reset["resetPassword"] is True


async def test_an_unreachable_smtp_server_does_not_change_the_answer(gql, services, caplog):
    email = f"down-{uuid.uuid4().hex[:8]}@example.com"
    await sign_up(gql, email)
    original = services.identity.mailer
    services.identity.mailer = SmtpMailer(
        "127.0.0.1", free_port(), "a@example.com", security="none", timeout=2
    )
    try:
        with caplog.at_level(logging.ERROR):
            body = await gql.data(
                "mutation($e: String!) { requestPasswordReset(email: $e) }", {"e": email}
            )
            await services.identity.drain()
    finally:
        services.identity.mailer = original
    assert body["requestPasswordReset"] is True
    assert any("background identity task failed" in r.getMessage() for r in caplog.records)


def _read(path: Path) -> tuple[str, int, int]:
    """A mail file's text, its mode and its folder's mode."""
    return path.read_text(), path.stat().st_mode, path.parent.stat().st_mode


async def test_the_log_backend_writes_a_file_and_logs_where_without_secrets(tmp_path, caplog):
    mail = Mail(to="a@example.com", subject="Subject", body="Token: t0k3n\nBye", secrets=("t0k3n",))
    with caplog.at_level(logging.INFO, logger="cryptovault.mail"):
        await LogMailer(tmp_path / "outbox").send(mail)
    (record,) = caplog.records
    assert (record.mail_to, record.mail_subject) == ("a@example.com", "Subject")
    assert record.mail_body == f"Token: {REDACTED}\nBye"
    written = Path(record.mail_file)
    assert written.parent == tmp_path / "outbox"
    text, mode, folder_mode = _read(written)
    assert text == "To: a@example.com\nSubject: Subject\n\nToken: t0k3n\nBye\n"
    assert mode & 0o077 == 0 and folder_mode & 0o077 == 0


@pytest.mark.parametrize("reset_url", [None, "https://app.example.com/reset?token={token}"])
async def test_reset_tokens_never_reach_a_log_line(gql, services, caplog, reset_url):
    email = f"quiet-{uuid.uuid4().hex[:8]}@example.com"
    await sign_up(gql, email)
    original = services.identity.settings
    services.identity.settings = replace(original, password_reset_url=reset_url)
    try:
        with caplog.at_level(logging.DEBUG):
            await services.identity._send_reset(email, Origin())
    finally:
        services.identity.settings = original
    (record,) = [r for r in caplog.records if getattr(r, "mail_to", None) == email]
    lines = _read(Path(record.mail_file))[0].splitlines()
    if reset_url:
        (link,) = [line for line in lines if line.startswith("https://")]
        token = link.split("token=", 1)[1]
    else:
        token = lines[lines.index("Your reset token:") + 1]
    assert len(token) >= 32 and REDACTED in record.mail_body
    for logged in caplog.records:
        assert token not in logged.getMessage()
        assert all(token not in str(value) for value in vars(logged).values())
