"""Outgoing mail behind one small interface. `LogMailer` (the default) writes each
message to the log, for development; `SmtpMailer` delivers through an SMTP server
configured by SMTP_* settings (smtplib, run in a worker thread)."""

from __future__ import annotations

import asyncio
import logging
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Protocol

from cryptovault.config import Settings

log = logging.getLogger("cryptovault.mail")

SMTP_TIMEOUT = 15.0


@dataclass(frozen=True, slots=True)
class Mail:
    to: str
    subject: str
    body: str


class Mailer(Protocol):
    async def send(self, mail: Mail) -> None: ...


class LogMailer:
    async def send(self, mail: Mail) -> None:
        log.info(
            "mail (log backend, not delivered)",
            extra={"mail_to": mail.to, "mail_subject": mail.subject, "mail_body": mail.body},
        )


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
    return LogMailer()
