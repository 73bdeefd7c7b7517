"""Outgoing mail behind one small interface. `LogMailer` (the default, refused in
production) writes each message to a file under DATA_DIR/outbox and logs where, for
development; `SmtpMailer` delivers through an SMTP server configured by SMTP_*
settings (smtplib, run in a worker thread).

Invariant: a mail's secrets (`Mail.secrets`, e.g. a password reset token) never
reach a log line, so never Sentry's breadcrumbs either."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import smtplib
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol

from cryptovault.config import Settings

log = logging.getLogger("cryptovault.mail")

SMTP_TIMEOUT = 15.0
REDACTED = "[redacted: read the mail file]"


@dataclass(frozen=True, slots=True)
class Mail:
    to: str
    subject: str
    body: str
    # Parts of the body only the recipient may see (a reset token, a link with it).
    secrets: tuple[str, ...] = ()

    def redacted(self) -> str:
        body = self.body
        for secret in self.secrets:
            body = body.replace(secret, REDACTED)
        return body


class Mailer(Protocol):
    async def send(self, mail: Mail) -> None: ...


class LogMailer:
    """Writes each message to its own file in `outbox` (mode 0600) and logs where,
    with the body's secrets redacted."""

    def __init__(self, outbox: Path) -> None:
        self.outbox = outbox

    async def send(self, mail: Mail) -> None:
        path = await asyncio.to_thread(self._write, mail)
        log.info(
            "mail written to a file (log backend, not delivered)",
            extra={
                "mail_to": mail.to,
                "mail_subject": mail.subject,
                "mail_body": mail.redacted(),
                "mail_file": str(path),
            },
        )

    def _write(self, mail: Mail) -> Path:
        self.outbox.mkdir(mode=0o700, parents=True, exist_ok=True)
        name = f"{datetime.now(UTC):%Y%m%dT%H%M%S.%fZ}-{secrets.token_hex(4)}.txt"
        path = self.outbox / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(f"To: {mail.to}\nSubject: {mail.subject}\n\n{mail.body}\n")
        return path


class SmtpMailer:
    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        user: str | None = None,
        password: str | None = None,
        security: str = "starttls",
        timeout: float = SMTP_TIMEOUT,
    ) -> None:
        self.host = host
        self.port = port
        self.sender = sender
        self.user = user
        self._password = password
        self.security = security
        self.timeout = timeout

    async def send(self, mail: Mail) -> None:
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = mail.to
        message["Subject"] = mail.subject
        message.set_content(mail.body)
        await asyncio.to_thread(self._deliver, message)

    def _deliver(self, message: EmailMessage) -> None:
        context = ssl.create_default_context()
        smtp: smtplib.SMTP
        if self.security == "ssl":
            smtp = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=context)
        else:
            smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        with smtp:
            if self.security == "starttls":
                smtp.starttls(context=context)
            if self.user:
                smtp.login(self.user, self._password or "")
            smtp.send_message(message)


def build_mailer(settings: Settings) -> Mailer:
    if settings.mailer == "smtp":
        assert settings.smtp_host, "load_settings requires SMTP_HOST with MAILER=smtp"
        return SmtpMailer(
            settings.smtp_host,
            settings.smtp_port,
            settings.smtp_from,
            settings.smtp_user,
            settings.smtp_password,
            settings.smtp_security,
        )
    return LogMailer(settings.data_dir / "outbox")
