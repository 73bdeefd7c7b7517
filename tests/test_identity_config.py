"""Identity settings: validated at start-up, safe defaults, secrets kept in DATA_DIR
for development and required in production."""

from __future__ import annotations

import stat

import pytest
from cryptography.fernet import Fernet

from cryptovault.config import ConfigError, Settings, load_settings
from cryptovault.security.mailer import LogMailer, SmtpMailer, build_mailer

PRODUCTION = {
    "ENVIRONMENT": "production",
    "MONGODB_URL": "mongodb://db.example.com:27017",
    "JWT_SECRET": "p" * 40,
    "MAILER": "smtp",
    "SMTP_HOST": "smtp.example.com",
    "METRICS_TOKEN": "m" * 16,
}


def test_production_requires_a_totp_encryption_key():
    with pytest.raises(ConfigError, match="TOTP_ENCRYPTION_KEY"):
        load_settings(PRODUCTION, None)
    key = Fernet.generate_key().decode()
    assert (
        load_settings({**PRODUCTION, "TOTP_ENCRYPTION_KEY": key}, None).totp_encryption_key == key
    )


def test_an_invalid_totp_key_is_refused():
    with pytest.raises(ConfigError, match="TOTP_ENCRYPTION_KEY"):
        load_settings({"ENVIRONMENT": "test", "TOTP_ENCRYPTION_KEY": "too-short"}, None)


def test_development_keeps_a_generated_totp_key_in_the_data_dir(tmp_path):
    env = {"ENVIRONMENT": "development", "DATA_DIR": str(tmp_path)}
    first = load_settings(env, None).totp_encryption_key
    assert load_settings(env, None).totp_encryption_key == first
    path = tmp_path / "totp_key"
    assert path.read_text() == first and stat.S_IMODE(path.stat().st_mode) == 0o600
    Fernet(first.encode())


def test_identity_defaults():
    settings = Settings()
    assert settings.access_token_ttl_seconds == 900
    assert 7 <= settings.refresh_token_ttl_days <= 30
    assert (settings.argon2_time_cost, settings.argon2_memory_kib, settings.argon2_parallelism) == (
        3,
        65536,
        4,
    )
    assert isinstance(build_mailer(settings), LogMailer)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"MAILER": "smtp"}, "SMTP_HOST"),
        ({"MAILER": "pigeon"}, "MAILER"),
        ({"SMTP_SECURITY": "maybe"}, "SMTP_SECURITY"),
        ({"REFRESH_TOKEN_TTL_DAYS": "40"}, "REFRESH_TOKEN_TTL_DAYS"),
        ({"REFRESH_TOKEN_TTL_DAYS": "3"}, "REFRESH_TOKEN_TTL_DAYS"),
        ({"ACCESS_TOKEN_TTL_SECONDS": "86400"}, "ACCESS_TOKEN_TTL_SECONDS"),
        ({"ARGON2_MEMORY_KIB": "16", "ARGON2_PARALLELISM": "4"}, "ARGON2_MEMORY_KIB"),
        ({"PASSWORD_HASH_CONCURRENCY": "0"}, "PASSWORD_HASH_CONCURRENCY"),
        ({"PASSWORD_RESET_URL": "https://app.example.com/reset"}, "PASSWORD_RESET_URL"),
    ],
)
def test_invalid_identity_settings_name_the_variable(env, variable):
    with pytest.raises(ConfigError, match=variable):
        load_settings({"ENVIRONMENT": "test", **env}, None)


def test_smtp_settings_build_the_smtp_backend():
    settings = load_settings(
        {
            "ENVIRONMENT": "test",
            "MAILER": "smtp",
            "SMTP_HOST": "smtp.example.com",
            "SMTP_PORT": "465",
            "SMTP_USER": "app",
            "SMTP_PASSWORD": "pw",
            "SMTP_FROM": "CryptoVault <no-reply@example.com>",
            "SMTP_SECURITY": "ssl",
        },
        None,
    )
    mailer = build_mailer(settings)
    assert isinstance(mailer, SmtpMailer)
    assert (mailer.host, mailer.port, mailer.user, mailer.security) == (
        "smtp.example.com",
        465,
        "app",
        "ssl",
    )
    assert "pw" not in repr(settings)
