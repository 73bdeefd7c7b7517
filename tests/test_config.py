"""Configuration: validated at start-up, one clear line and exit code 2 when wrong."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cryptovault.config import ConfigError, load_settings

GOOD_SECRET = "s" * 32


def load(env: dict[str, str], tmp_path: Path):
    return load_settings({"DATA_DIR": str(tmp_path), **env}, env_file=None)


def test_defaults_are_development_with_embedded_store(tmp_path):
    s = load({}, tmp_path)
    assert s.environment == "development"
    assert (s.host, s.port) == ("127.0.0.1", 8000)
    assert s.mongodb_url is None and s.redis_url is None
    assert s.market_feed == "simulated" and s.tick_interval_ms == 1000
    assert s.log_format == "json"


def test_development_generates_a_secret_once_and_keeps_it(tmp_path):
    first = load({}, tmp_path).jwt_secret
    second = load({}, tmp_path).jwt_secret
    assert len(first) >= 32
    assert first == second
    assert (tmp_path / "jwt_secret").stat().st_mode & 0o077 == 0


@pytest.mark.parametrize(
    "env, variable",
    [
        ({"ENVIRONMENT": "staging"}, "ENVIRONMENT"),
        ({"PORT": "eighty"}, "PORT"),
        ({"PORT": "70000"}, "PORT"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
        ({"MARKET_FEED": "binance-maybe"}, "MARKET_FEED"),
        ({"MARKET_FEED": "replay:/nonexistent.csv"}, "MARKET_FEED"),
        ({"TICK_INTERVAL_MS": "0"}, "TICK_INTERVAL_MS"),
        ({"REPLAY_SPEED": "nan"}, "REPLAY_SPEED"),
        ({"REPLAY_SPEED": "0"}, "REPLAY_SPEED"),
        ({"MONGODB_URL": "postgres://x"}, "MONGODB_URL"),
        ({"REDIS_URL": "http://x"}, "REDIS_URL"),
        ({"JWT_SECRET": "short"}, "JWT_SECRET"),
        ({"CORS_ORIGINS": "example.com"}, "CORS_ORIGINS"),
        ({"TRUSTED_PROXIES": "10.0.0.1,proxy.local"}, "TRUSTED_PROXIES"),
        ({"EXPORT_RATE_LIMIT": "three an hour"}, "EXPORT_RATE_LIMIT"),
    ],
)
def test_invalid_values_name_the_variable(tmp_path, env, variable):
    with pytest.raises(ConfigError, match=variable):
        load(env, tmp_path)


PROD = {
    "ENVIRONMENT": "production",
    "MONGODB_URL": "mongodb://db:27017",
    "JWT_SECRET": GOOD_SECRET,
    "TOTP_ENCRYPTION_KEY": "m2V3ZC1uZXZlci11c2UtdGhpcy1rZXktaW4tcHJvZC0=",
    "MAILER": "smtp",
    "SMTP_HOST": "smtp.example.com",
    "METRICS_TOKEN": "m" * 16,
}


@pytest.mark.parametrize(
    "override, variable",
    [
        ({"MONGODB_URL": ""}, "MONGODB_URL"),
        ({"JWT_SECRET": "x" * 31}, "JWT_SECRET"),
        ({"JWT_SECRET": ""}, "JWT_SECRET"),
        ({"CORS_ORIGINS": "https://app.example.com,*"}, "CORS_ORIGINS"),
        ({"TOTP_ENCRYPTION_KEY": ""}, "TOTP_ENCRYPTION_KEY"),
        # The log mailer would write live password reset tokens where operators read.
        ({"MAILER": "log"}, "MAILER=log"),
        ({"MAILER": ""}, "MAILER=log"),  # the default
        # Metrics name operations, dependencies and traffic: a token, or an explicit choice.
        ({"METRICS_TOKEN": ""}, "METRICS_TOKEN"),
    ],
)
def test_production_refuses_unsafe_settings(tmp_path, override, variable):
    with pytest.raises(ConfigError, match=variable):
        load({**PROD, **override}, tmp_path)


def test_production_accepts_safe_settings(tmp_path):
    s = load({**PROD, "CORS_ORIGINS": "https://app.example.com"}, tmp_path)
    assert s.is_production and s.cors_origins == ("https://app.example.com",)
    # Public metrics are a deliberate choice.
    public = load({**PROD, "METRICS_TOKEN": "", "METRICS_PUBLIC": "true"}, tmp_path)
    assert public.metrics_token is None and public.metrics_public


def test_env_file_is_read_and_environment_wins(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text('# comment\nPORT=9001\nLOG_LEVEL="debug"\nexport MONGODB_DB=fromfile\n')
    s = load_settings({"DATA_DIR": str(tmp_path), "PORT": "9002"}, env_file=env_file)
    assert s.port == 9002
    assert s.log_level == "DEBUG"
    assert s.mongodb_db == "fromfile"


def _without(env: dict[str, str], name: str) -> dict[str, str]:
    return {k: v for k, v in env.items() if k != name}


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"PORT": "not-a-port"}, "PORT"),
        (_without(PROD, "MAILER"), "MAILER"),
        (_without(PROD, "METRICS_TOKEN"), "METRICS_TOKEN"),
    ],
)
def test_cli_exits_2_with_one_line_naming_the_variable(tmp_path, env, variable):
    proc = subprocess.run(
        [sys.executable, "-m", "cryptovault", "serve"],
        env={**os.environ, **env, "DATA_DIR": str(tmp_path)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and variable in lines[0]


def test_every_setting_is_documented_in_env_example():
    root = Path(__file__).parents[1]
    source = (root / "cryptovault" / "config.py").read_text()
    names = set(re.findall(r'(?:env\.get\(|env, )"([A-Z][A-Z0-9_]+)"', source))
    assert {"ENVIRONMENT", "MONGODB_URL", "TICK_INTERVAL_MS"} <= names
    example = (root / ".env.example").read_text()
    missing = sorted(n for n in names if f"{n}=" not in example)
    assert not missing, f"undocumented in .env.example: {missing}"
