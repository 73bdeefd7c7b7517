"""The one place that knows the settings: read from the environment and an optional
`.env`, validated once at start-up, then passed explicitly to whoever needs them."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

ENVIRONMENTS = ("development", "test", "production")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("json", "console")
MIN_SECRET_LENGTH = 32
MIN_METRICS_TOKEN_LENGTH = 16


class ConfigError(Exception):
    """A setting is missing or invalid; the message names the variable."""


@dataclass(frozen=True, slots=True)
class Settings:
    environment: Literal["development", "test", "production"] = "development"
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("data")
    mongodb_url: str | None = None
    mongodb_db: str = "cryptovault"
    redis_url: str | None = None
    jwt_secret: str = field(default="", repr=False)
    cors_origins: tuple[str, ...] = ()
    sentry_dsn: str | None = field(default=None, repr=False)
    log_level: str = "INFO"
    log_format: Literal["json", "console"] = "json"
    market_feed: str = "simulated"
    tick_interval_ms: int = 1000
    feed_seed: int | None = None
    replay_speed: float = 1.0
    # Operations (README "Operations and observability").
    metrics_token: str | None = field(default=None, repr=False)
    sentry_environment: str | None = None
    sentry_release: str | None = None
    sentry_traces_sample_rate: float = 0.0
    sentry_profiles_sample_rate: float = 0.0
    shutdown_timeout_seconds: float = 10.0
    migrate_on_start: bool = False
    audit_retention_days: int = 365
    login_attempt_retention_days: int = 90
    retention_sweep_minutes: int = 60

    @property
    def is_production(self) -> bool:
        return self.environment == "production"


def read_env_file(path: Path) -> dict[str, str]:
    """Parse a dotenv file: KEY=VALUE lines, `#` comments, optional quotes."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip().removeprefix("export ").strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.get(name, default).strip() or default
    if name == "LOG_LEVEL":
        value = value.upper()
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is invalid: expected one of {', '.join(choices)}")
    return value


def _int(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is invalid: expected an integer") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name}={value} is invalid: expected {lo}..{hi}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, lo: float, hi: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is invalid: expected a number") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name}={value} is invalid: expected {lo:g}..{hi:g}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r} is invalid: expected true or false")


def _optional(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    return value or None


def _secret_for_development(data_dir: Path) -> str:
    """Generate a JWT secret once and keep it in DATA_DIR so tokens survive restarts."""
    path = data_dir / "jwt_secret"
    if path.is_file():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    path.write_text(secret)
    path.chmod(0o600)
    return secret


def load_settings(
    environ: Mapping[str, str] | None = None, env_file: Path | None = Path(".env")
) -> Settings:
    """Build Settings from `.env` overlaid by the process environment."""
    env: dict[str, str] = read_env_file(env_file) if env_file else {}
    env.update(os.environ if environ is None else environ)

    environment = _choice(env, "ENVIRONMENT", "development", ENVIRONMENTS)
    data_dir = Path(env.get("DATA_DIR", "").strip() or "data")
    mongodb_url = _optional(env, "MONGODB_URL")
    if mongodb_url and not mongodb_url.startswith(("mongodb://", "mongodb+srv://")):
        raise ConfigError("MONGODB_URL is invalid: expected a mongodb:// or mongodb+srv:// URL")
    redis_url = _optional(env, "REDIS_URL")
    if redis_url and not redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError("REDIS_URL is invalid: expected a redis://, rediss:// or unix:// URL")

    cors = tuple(o.strip() for o in env.get("CORS_ORIGINS", "").split(",") if o.strip())
    for origin in cors:
        if origin != "*" and not origin.startswith(("http://", "https://")):
            raise ConfigError(f"CORS_ORIGINS entry {origin!r} is invalid: expected http(s)://host")

    jwt_secret = env.get("JWT_SECRET", "").strip()
    if environment == "production":
        if not mongodb_url:
            raise ConfigError("MONGODB_URL is required in production (the embedded store is not)")
        if len(jwt_secret) < MIN_SECRET_LENGTH:
            raise ConfigError(f"JWT_SECRET must be at least {MIN_SECRET_LENGTH} characters")
        if "*" in cors:
            raise ConfigError("CORS_ORIGINS must not contain '*' in production")
    elif jwt_secret and len(jwt_secret) < MIN_SECRET_LENGTH:
        raise ConfigError(f"JWT_SECRET must be at least {MIN_SECRET_LENGTH} characters")
    elif not jwt_secret:
        jwt_secret = (
            secrets.token_urlsafe(48)
            if environment == "test"
            else _secret_for_development(data_dir)
        )

    feed = env.get("MARKET_FEED", "").strip() or "simulated"
    if not (feed in ("simulated", "coinbase", "none") or feed.startswith("replay:")):
        raise ConfigError(
            f"MARKET_FEED={feed!r} is invalid: expected simulated, coinbase, none "
            "or replay:<csv path>"
        )
    if feed.startswith("replay:") and not Path(feed.removeprefix("replay:")).is_file():
        raise ConfigError(f"MARKET_FEED={feed!r} is invalid: the replay file does not exist")

    seed_raw = _optional(env, "FEED_SEED")
    replay_speed_raw = env.get("REPLAY_SPEED", "").strip() or "1"
    try:
        replay_speed = float(replay_speed_raw)
    except ValueError:
        raise ConfigError(
            f"REPLAY_SPEED={replay_speed_raw!r} is invalid: expected a number"
        ) from None
    if replay_speed <= 0:
        raise ConfigError("REPLAY_SPEED is invalid: expected a positive number")

    metrics_token = _optional(env, "METRICS_TOKEN")
    if metrics_token is not None and len(metrics_token) < MIN_METRICS_TOKEN_LENGTH:
        raise ConfigError(f"METRICS_TOKEN must be at least {MIN_METRICS_TOKEN_LENGTH} characters")

    return Settings(
        environment=environment,  # type: ignore[arg-type]
        host=env.get("HOST", "").strip() or "127.0.0.1",
        port=_int(env, "PORT", 8000, 1, 65535),
        data_dir=data_dir,
        mongodb_url=mongodb_url,
        mongodb_db=env.get("MONGODB_DB", "").strip() or "cryptovault",
        redis_url=redis_url,
        jwt_secret=jwt_secret,
        cors_origins=cors,
        sentry_dsn=_optional(env, "SENTRY_DSN"),
        log_level=_choice(env, "LOG_LEVEL", "INFO", LOG_LEVELS),
        log_format=_choice(env, "LOG_FORMAT", "json", LOG_FORMATS),  # type: ignore[arg-type]
        market_feed=feed,
        tick_interval_ms=_int(env, "TICK_INTERVAL_MS", 1000, 10, 3_600_000),
        feed_seed=_int(env, "FEED_SEED", 0, 0, 2**32 - 1) if seed_raw else None,
        replay_speed=replay_speed,
        metrics_token=metrics_token,
        sentry_environment=_optional(env, "SENTRY_ENVIRONMENT"),
        sentry_release=_optional(env, "SENTRY_RELEASE"),
        sentry_traces_sample_rate=_float(env, "SENTRY_TRACES_SAMPLE_RATE", 0.0, 0.0, 1.0),
        sentry_profiles_sample_rate=_float(env, "SENTRY_PROFILES_SAMPLE_RATE", 0.0, 0.0, 1.0),
        shutdown_timeout_seconds=_float(env, "SHUTDOWN_TIMEOUT_SECONDS", 10.0, 0.5, 600),
        # Outside production the schema follows the code by itself; production runs
        # `cryptovault migrate` as a deploy step (docker-compose.yml does).
        migrate_on_start=_bool(env, "MIGRATE_ON_START", environment != "production"),
        audit_retention_days=_int(env, "AUDIT_RETENTION_DAYS", 365, 1, 36500),
        login_attempt_retention_days=_int(env, "LOGIN_ATTEMPT_RETENTION_DAYS", 90, 1, 36500),
        retention_sweep_minutes=_int(env, "RETENTION_SWEEP_MINUTES", 60, 1, 10080),
    )
