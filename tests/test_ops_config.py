"""Settings of the operations features: validated at start-up like every other."""

from __future__ import annotations

from pathlib import Path

import pytest

from cryptovault.config import ConfigError, load_settings


def load(env: dict[str, str], tmp_path: Path):
    return load_settings({"DATA_DIR": str(tmp_path), **env}, env_file=None)


def test_operations_defaults(tmp_path):
    s = load({}, tmp_path)
    assert s.metrics_token is None and s.metrics_public is False
    assert (s.sentry_traces_sample_rate, s.sentry_profiles_sample_rate) == (0.0, 0.0)
    assert s.shutdown_timeout_seconds == 10.0
    assert (s.audit_retention_days, s.login_attempt_retention_days) == (365, 1)
    assert s.migrate_on_start is True
    prod = load(
        {
            "ENVIRONMENT": "production",
            "MONGODB_URL": "mongodb://db",
            "JWT_SECRET": "s" * 32,
            "TOTP_ENCRYPTION_KEY": "m2V3ZC1uZXZlci11c2UtdGhpcy1rZXktaW4tcHJvZC0=",
            "MAILER": "smtp",
            "SMTP_HOST": "smtp.example.com",
            "METRICS_PUBLIC": "true",
        },
        tmp_path,
    )
    assert prod.migrate_on_start is False  # a deploy step there


def test_operations_settings_are_read(tmp_path):
    s = load(
        {
            "METRICS_TOKEN": "m" * 20,
            "SENTRY_TRACES_SAMPLE_RATE": "0.25",
            "SENTRY_PROFILES_SAMPLE_RATE": "0.1",
            "SENTRY_ENVIRONMENT": "staging",
            "SHUTDOWN_TIMEOUT_SECONDS": "30",
            "MIGRATE_ON_START": "false",
            "AUDIT_RETENTION_DAYS": "730",
            "LOGIN_ATTEMPT_RETENTION_DAYS": "30",
            "RETENTION_SWEEP_MINUTES": "15",
        },
        tmp_path,
    )
    assert s.metrics_token == "m" * 20 and "m" * 20 not in repr(s)
    assert (s.sentry_traces_sample_rate, s.sentry_profiles_sample_rate) == (0.25, 0.1)
    assert s.sentry_environment == "staging" and s.shutdown_timeout_seconds == 30
    assert s.migrate_on_start is False
    assert (s.audit_retention_days, s.login_attempt_retention_days) == (730, 30)
    assert s.retention_sweep_minutes == 15


@pytest.mark.parametrize(
    "env, variable",
    [
        ({"METRICS_TOKEN": "short"}, "METRICS_TOKEN"),
        ({"METRICS_PUBLIC": "perhaps"}, "METRICS_PUBLIC"),
        ({"SENTRY_TRACES_SAMPLE_RATE": "1.5"}, "SENTRY_TRACES_SAMPLE_RATE"),
        ({"SENTRY_PROFILES_SAMPLE_RATE": "often"}, "SENTRY_PROFILES_SAMPLE_RATE"),
        ({"SHUTDOWN_TIMEOUT_SECONDS": "0"}, "SHUTDOWN_TIMEOUT_SECONDS"),
        ({"MIGRATE_ON_START": "maybe"}, "MIGRATE_ON_START"),
        ({"AUDIT_RETENTION_DAYS": "0"}, "AUDIT_RETENTION_DAYS"),
        ({"LOGIN_ATTEMPT_RETENTION_DAYS": "-3"}, "LOGIN_ATTEMPT_RETENTION_DAYS"),
        ({"RETENTION_SWEEP_MINUTES": "x"}, "RETENTION_SWEEP_MINUTES"),
    ],
)
def test_invalid_operations_settings_name_the_variable(tmp_path, env, variable):
    with pytest.raises(ConfigError, match=variable):
        load(env, tmp_path)
