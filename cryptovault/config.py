"""The one place that knows the settings: read from the environment and an optional
`.env`, validated once at start-up, then passed explicitly to whoever needs them."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network
from pathlib import Path
from typing import Literal

from limits import RateLimitItem, parse

ENVIRONMENTS = ("development", "test", "production")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("json", "console")
MAILERS = ("log", "smtp")
SMTP_SECURITY = ("starttls", "ssl", "none")
PERSISTED_QUERY_MODES = ("apq", "only", "off")
SUBSCRIPTION_MODES = ("grouped", "naive")
MIN_SECRET_LENGTH = 32
DEFAULT_AUTH_RATE_LIMITS = (
    "login=20/minute:10/minute,register=10/hour:3/hour,"
    "password_reset=10/hour:3/hour,two_factor=20/minute:5/minute"
)

DEFAULT_EXPORT_RATE_LIMIT = "3/hour"


def _new_fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


MIN_METRICS_TOKEN_LENGTH = 16


class ConfigError(Exception):
    """A setting is missing or invalid; the message names the variable."""


WEB_DIST_DEFAULT = Path(__file__).resolve().parent.parent / "web" / "dist"


AUTH_KINDS = ("login", "register", "password_reset", "two_factor")


def parse_auth_limits(spec: str) -> dict[str, tuple[RateLimitItem, RateLimitItem]]:
    """`kind=<per IP>:<per account>,...` with `limits` notation, e.g.
    `login=20/minute:10/minute`. Raises ValueError naming what is wrong."""
    result: dict[str, tuple[RateLimitItem, RateLimitItem]] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        kind, sep, pair = part.partition("=")
        per_ip, sep2, per_account = pair.partition(":")
        if not sep or not sep2 or kind.strip() not in AUTH_KINDS:
            raise ValueError(f"expected kind=<per ip>:<per account> with kind in {AUTH_KINDS}")
        items = []
        for text in (per_ip, per_account):
            item = parse(text.strip())
            items.append(type(item)(item.amount, item.multiples, namespace="auth"))
        result[kind.strip()] = (items[0], items[1])
    missing = set(AUTH_KINDS) - set(result)
    if missing:
        raise ValueError(f"missing limits for {sorted(missing)}")
    return result


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
    # Password hashing: Argon2id, RFC 9106 "second recommended" (low-memory) profile:
    # t=3 passes, m=64 MiB, p=4 lanes. Each hash holds m of memory, so at most
    # `password_hash_concurrency` run at once.
    argon2_time_cost: int = 3
    argon2_memory_kib: int = 65536
    argon2_parallelism: int = 4
    password_hash_concurrency: int = 2
    access_token_ttl_seconds: int = 900
    refresh_token_ttl_days: int = 14
    # Fernet key encrypting TOTP secrets at rest (a fresh one unless configured).
    totp_encryption_key: str = field(default_factory=_new_fernet_key, repr=False)
    mailer: Literal["log", "smtp"] = "log"
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_user: str | None = None
    smtp_password: str | None = field(default=None, repr=False)
    smtp_from: str = "CryptoVault <no-reply@localhost>"
    smtp_security: Literal["starttls", "ssl", "none"] = "starttls"
    # Link put in password reset mails; "{token}" is replaced by the reset token.
    password_reset_url: str | None = None
    # Protecting the API (README "Protecting the API"): query cost and budgets.
    max_query_cost: int = 1000
    cost_budget: int = 10_000
    cost_budget_anonymous: int = 2000
    cost_window_seconds: int = 60
    # Shape limits, checked before any resolver runs.
    max_query_depth: int = 10
    max_aliases: int = 30
    max_tokens: int = 2000
    max_directives_per_field: int = 4
    max_root_fields: int = 20
    max_batch_operations: int = 10
    max_body_bytes: int = 100_000
    request_timeout_seconds: float = 10.0
    # Persisted queries: "apq" (automatic, any query may register), "only" (trusted
    # documents from the manifest only) or "off".
    persisted_queries: Literal["apq", "only", "off"] = "apq"
    persisted_queries_manifest: Path | None = None
    apq_cache_size: int = 10_000
    apq_cache_bytes: int = 8_000_000
    # WebSocket limits.
    ws_init_timeout_seconds: float = 10.0
    ws_ping_interval_seconds: float = 15.0
    ws_ping_timeout_seconds: float = 10.0
    ws_max_message_bytes: int = 65_536
    ws_max_subscriptions: int = 20
    ws_max_connections_per_identity: int = 10
    # Sockets from one address still waiting for their connection_init (not yet
    # counted against any identity).
    ws_max_pending_per_ip: int = 20
    # Open sockets' credentials are re-read at least this often, even if a revocation
    # message was lost (it normally arrives through the bus at once).
    ws_credential_recheck_seconds: float = 30.0
    # How long an accepted credential's state is used without reading the store again
    # (changes normally reach every instance through the bus at once); 0: read on
    # every request.
    auth_cache_seconds: float = 30.0
    # Sensitive auth calls: attempts per client IP and per account (limits notation).
    auth_rate_limits: str = DEFAULT_AUTH_RATE_LIMITS
    # exportMyData reads everything a user has: calls per user (limits notation).
    export_rate_limit: str = DEFAULT_EXPORT_RATE_LIMIT
    # Paper trading.
    starting_balance_usd: Decimal = Decimal("10000")
    maker_fee_rate: Decimal = Decimal("0.001")
    taker_fee_rate: Decimal = Decimal("0.002")
    # A market buy holds ask x (1 + this) per unit, so a moving price still fills.
    market_slippage: Decimal = Decimal("0.01")
    # Simulated liquidity at the best bid/ask per tick, in USD.
    top_of_book_usd: Decimal = Decimal("250000")
    # How long an order's owner (a placement, a fill) may work on it before the
    # recovery sweep may take it over. Safety never depends on it (fencing does);
    # it bounds how long an order cut off by a crash or a stall waits.
    order_lease_seconds: float = 30.0
    # When set, admin fields answer only requests from these addresses/networks.
    admin_allowed_ips: tuple[IPv4Network | IPv6Network, ...] = ()
    # Reverse proxies whose X-Forwarded-For / X-Forwarded-Proto are believed; none by
    # default: the client is the peer of the connection.
    trusted_proxies: tuple[IPv4Network | IPv6Network, ...] = ()
    # Operations (README "Operations and observability").
    metrics_token: str | None = field(default=None, repr=False)
    # Serve /metrics without a token (production requires one or this, explicitly).
    metrics_public: bool = False
    sentry_environment: str | None = None
    sentry_release: str | None = None
    sentry_traces_sample_rate: float = 0.0
    sentry_profiles_sample_rate: float = 0.0
    shutdown_timeout_seconds: float = 10.0
    migrate_on_start: bool = False
    audit_retention_days: int = 365
    login_attempt_retention_days: int = 1
    retention_sweep_minutes: int = 60
    # Subscriptions (README "Subscriptions at scale"): "grouped" executes each distinct
    # subscription once per event for all its subscribers; "naive" is Strawberry's
    # per-subscriber execution, kept for comparison (bench/).
    subscription_mode: Literal["grouped", "naive"] = "grouped"
    # Frames that may wait in one socket's send queue (latest-value streams such as
    # prices are coalesced and never count); beyond it the socket is closed with 1013.
    subscription_send_queue: int = 1000
    # permessage-deflate for WebSocket clients that offer it (browsers do). Off: each
    # socket would compress every frame itself (+80% CPU per frame, 2x memory).
    ws_per_message_deflate: bool = False
    # Portfolio: active price alerts per user, symbols per watchlist.
    alerts_max_active: int = 100
    watchlist_max_symbols: int = 50
    # Portfolio history: a snapshot of every account this often (and after each trade).
    snapshot_interval_minutes: int = 60
    # The web app and GraphiQL as built by `web/` (npm run build): served at / and
    # /graphql. Without it the API still runs and / says how to build them.
    web_dist_dir: Path = WEB_DIST_DEFAULT

    @property
    def is_production(self) -> bool:
        return self.environment == "production"

    def admin_ip_allowed(self, ip: str | None) -> bool:
        if not self.admin_allowed_ips:
            return True
        if ip is None:
            return False
        try:
            address = ip_address(ip)
        except ValueError:
            return False
        return any(address in network for network in self.admin_allowed_ips)

    @property
    def secure_cookies(self) -> bool:
        """Cookies carry `Secure` everywhere but local development over plain HTTP."""
        return self.environment != "development"


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


def _decimal(env: Mapping[str, str], name: str, default: str, lo: str, hi: str) -> Decimal:
    raw = env.get(name, "").strip() or default
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise ConfigError(f"{name}={raw!r} is invalid: expected a decimal number") from None
    if not value.is_finite() or not Decimal(lo) <= value <= Decimal(hi):
        raise ConfigError(f"{name}={raw} is invalid: expected {lo}..{hi}")
    return value


def _networks(env: Mapping[str, str], name: str) -> tuple[IPv4Network | IPv6Network, ...]:
    """Comma-separated IP addresses or CIDR networks."""
    networks = []
    for entry in filter(None, (e.strip() for e in env.get(name, "").split(","))):
        try:
            networks.append(ip_network(entry, strict=False))
        except ValueError:
            raise ConfigError(
                f"{name} entry {entry!r} is invalid: expected an IP or CIDR"
            ) from None
    return tuple(networks)


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


def _fernet_key_for_development(data_dir: Path) -> str:
    """Like the JWT secret: generated once, kept in DATA_DIR (losing it would make
    every enrolled TOTP secret unreadable)."""
    path = data_dir / "totp_key"
    if path.is_file():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    key = _new_fernet_key()
    path.write_text(key)
    path.chmod(0o600)
    return key


def _valid_fernet_key(value: str) -> bool:
    from cryptography.fernet import Fernet

    try:
        Fernet(value.encode())
    except (ValueError, TypeError):
        return False
    return True


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
    # Finite and positive: nan or inf would pass a "> 0" check and stall the replay.
    replay_speed = _float(env, "REPLAY_SPEED", 1.0, 0.001, 1_000_000)

    totp_key = env.get("TOTP_ENCRYPTION_KEY", "").strip()
    if totp_key and not _valid_fernet_key(totp_key):
        raise ConfigError(
            "TOTP_ENCRYPTION_KEY is invalid: expected a Fernet key (32 url-safe base64 bytes)"
        )
    if not totp_key:
        if environment == "production":
            raise ConfigError("TOTP_ENCRYPTION_KEY is required in production")
        totp_key = (
            _new_fernet_key() if environment == "test" else _fernet_key_for_development(data_dir)
        )

    argon2_parallelism = _int(env, "ARGON2_PARALLELISM", 4, 1, 64)
    argon2_memory = _int(env, "ARGON2_MEMORY_KIB", 65536, 8, 4 * 1024 * 1024)
    if argon2_memory < 8 * argon2_parallelism:
        raise ConfigError("ARGON2_MEMORY_KIB is invalid: expected at least 8 x ARGON2_PARALLELISM")

    mailer = _choice(env, "MAILER", "log", MAILERS)
    if environment == "production" and mailer == "log":
        # The log backend is for development: in production the mail would never
        # arrive, and its file would hold live reset tokens.
        raise ConfigError("MAILER=log is not allowed in production: set MAILER=smtp and SMTP_*")
    smtp_host = _optional(env, "SMTP_HOST")
    if mailer == "smtp" and not smtp_host:
        raise ConfigError("SMTP_HOST is required when MAILER=smtp")
    reset_url = _optional(env, "PASSWORD_RESET_URL")
    if reset_url and (
        "{token}" not in reset_url or not reset_url.startswith(("http://", "https://"))
    ):
        raise ConfigError(
            "PASSWORD_RESET_URL is invalid: expected an http(s) URL containing {token}"
        )
    max_query_cost = _int(env, "MAX_QUERY_COST", 1000, 1, 1_000_000)
    cost_budget = _int(env, "COST_BUDGET", 10_000, 1, 100_000_000)
    cost_budget_anonymous = _int(env, "COST_BUDGET_ANONYMOUS", 2000, 1, 100_000_000)
    if max_query_cost > min(cost_budget, cost_budget_anonymous):
        # A query the budget can never pay for would be refused forever.
        raise ConfigError(
            "MAX_QUERY_COST is invalid: it must not exceed COST_BUDGET and COST_BUDGET_ANONYMOUS"
        )
    persisted = _choice(env, "PERSISTED_QUERIES", "apq", PERSISTED_QUERY_MODES)
    manifest_raw = _optional(env, "PERSISTED_QUERIES_MANIFEST")
    manifest = Path(manifest_raw) if manifest_raw else None
    if manifest is not None and not manifest.is_file():
        raise ConfigError("PERSISTED_QUERIES_MANIFEST is invalid: the file does not exist")
    if persisted == "only" and manifest is None:
        raise ConfigError("PERSISTED_QUERIES=only requires PERSISTED_QUERIES_MANIFEST")
    trading = {
        name: _decimal(env, name, default, lo, hi)
        for name, default, lo, hi in (
            ("STARTING_BALANCE_USD", "10000", "0", "1000000000"),
            ("MAKER_FEE_RATE", "0.001", "0", "0.1"),
            ("TAKER_FEE_RATE", "0.002", "0", "0.1"),
            ("MARKET_SLIPPAGE", "0.01", "0", "0.5"),
            ("TOP_OF_BOOK_USD", "250000", "1", "1000000000000"),
        )
    }
    auth_limits = env.get("AUTH_RATE_LIMITS", "").strip() or DEFAULT_AUTH_RATE_LIMITS
    try:
        parse_auth_limits(auth_limits)
    except ValueError as exc:
        raise ConfigError(f"AUTH_RATE_LIMITS is invalid: {exc}") from None
    export_limit = env.get("EXPORT_RATE_LIMIT", "").strip() or DEFAULT_EXPORT_RATE_LIMIT
    try:
        from limits import parse as parse_limit

        parse_limit(export_limit)
    except ValueError as exc:
        raise ConfigError(f"EXPORT_RATE_LIMIT is invalid: {exc}") from None
    metrics_token = _optional(env, "METRICS_TOKEN")
    if metrics_token is not None and len(metrics_token) < MIN_METRICS_TOKEN_LENGTH:
        raise ConfigError(f"METRICS_TOKEN must be at least {MIN_METRICS_TOKEN_LENGTH} characters")
    metrics_public = _bool(env, "METRICS_PUBLIC", False)
    if environment == "production" and metrics_token is None and not metrics_public:
        # /metrics names operations, dependencies and traffic: not for anyone to read.
        raise ConfigError(
            "METRICS_TOKEN is required in production (or METRICS_PUBLIC=true to serve "
            "/metrics without authentication)"
        )

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
        web_dist_dir=Path(env.get("WEB_DIST_DIR", "").strip() or WEB_DIST_DEFAULT),
        feed_seed=_int(env, "FEED_SEED", 0, 0, 2**32 - 1) if seed_raw else None,
        replay_speed=replay_speed,
        argon2_time_cost=_int(env, "ARGON2_TIME_COST", 3, 1, 100),
        argon2_memory_kib=argon2_memory,
        argon2_parallelism=argon2_parallelism,
        password_hash_concurrency=_int(env, "PASSWORD_HASH_CONCURRENCY", 2, 1, 64),
        access_token_ttl_seconds=_int(env, "ACCESS_TOKEN_TTL_SECONDS", 900, 60, 3600),
        refresh_token_ttl_days=_int(env, "REFRESH_TOKEN_TTL_DAYS", 14, 7, 30),
        totp_encryption_key=totp_key,
        mailer=mailer,  # type: ignore[arg-type]
        smtp_host=smtp_host,
        smtp_port=_int(env, "SMTP_PORT", 587, 1, 65535),
        smtp_user=_optional(env, "SMTP_USER"),
        smtp_password=_optional(env, "SMTP_PASSWORD"),
        smtp_from=env.get("SMTP_FROM", "").strip() or "CryptoVault <no-reply@localhost>",
        smtp_security=_choice(env, "SMTP_SECURITY", "starttls", SMTP_SECURITY),  # type: ignore[arg-type]
        password_reset_url=reset_url,
        max_query_cost=max_query_cost,
        cost_budget=cost_budget,
        cost_budget_anonymous=cost_budget_anonymous,
        cost_window_seconds=_int(env, "COST_WINDOW_SECONDS", 60, 1, 86_400),
        max_query_depth=_int(env, "MAX_QUERY_DEPTH", 10, 1, 100),
        max_aliases=_int(env, "MAX_ALIASES", 30, 0, 10_000),
        max_tokens=_int(env, "MAX_TOKENS", 2000, 100, 1_000_000),
        max_directives_per_field=_int(env, "MAX_DIRECTIVES_PER_FIELD", 4, 0, 100),
        max_root_fields=_int(env, "MAX_ROOT_FIELDS", 20, 1, 1000),
        max_batch_operations=_int(env, "MAX_BATCH_OPERATIONS", 10, 0, 1000),
        max_body_bytes=_int(env, "MAX_BODY_BYTES", 100_000, 1024, 100_000_000),
        request_timeout_seconds=_float(env, "REQUEST_TIMEOUT_SECONDS", 10.0, 0.1, 3600),
        persisted_queries=persisted,  # type: ignore[arg-type]
        persisted_queries_manifest=manifest,
        apq_cache_size=_int(env, "APQ_CACHE_SIZE", 10_000, 1, 10_000_000),
        apq_cache_bytes=_int(env, "APQ_CACHE_BYTES", 8_000_000, 10_000, 10_000_000_000),
        ws_init_timeout_seconds=_float(env, "WS_INIT_TIMEOUT_SECONDS", 10.0, 0.1, 3600),
        ws_ping_interval_seconds=_float(env, "WS_PING_INTERVAL_SECONDS", 15.0, 0.1, 3600),
        ws_ping_timeout_seconds=_float(env, "WS_PING_TIMEOUT_SECONDS", 10.0, 0.1, 3600),
        ws_max_message_bytes=_int(env, "WS_MAX_MESSAGE_BYTES", 65_536, 1024, 100_000_000),
        ws_max_subscriptions=_int(env, "WS_MAX_SUBSCRIPTIONS", 20, 1, 10_000),
        ws_max_connections_per_identity=_int(
            env, "WS_MAX_CONNECTIONS_PER_IDENTITY", 10, 1, 100_000
        ),
        ws_max_pending_per_ip=_int(env, "WS_MAX_PENDING_PER_IP", 20, 1, 100_000),
        ws_credential_recheck_seconds=_float(env, "WS_CREDENTIAL_RECHECK_SECONDS", 30.0, 0.1, 3600),
        auth_cache_seconds=_float(env, "AUTH_CACHE_SECONDS", 30.0, 0, 3600),
        auth_rate_limits=auth_limits,
        export_rate_limit=export_limit,
        admin_allowed_ips=_networks(env, "ADMIN_ALLOWED_IPS"),
        trusted_proxies=_networks(env, "TRUSTED_PROXIES"),
        starting_balance_usd=trading["STARTING_BALANCE_USD"],
        maker_fee_rate=trading["MAKER_FEE_RATE"],
        taker_fee_rate=trading["TAKER_FEE_RATE"],
        market_slippage=trading["MARKET_SLIPPAGE"],
        top_of_book_usd=trading["TOP_OF_BOOK_USD"],
        order_lease_seconds=_float(env, "ORDER_LEASE_SECONDS", 30.0, 0.5, 3600),
        metrics_token=metrics_token,
        metrics_public=metrics_public,
        sentry_environment=_optional(env, "SENTRY_ENVIRONMENT"),
        sentry_release=_optional(env, "SENTRY_RELEASE"),
        sentry_traces_sample_rate=_float(env, "SENTRY_TRACES_SAMPLE_RATE", 0.0, 0.0, 1.0),
        sentry_profiles_sample_rate=_float(env, "SENTRY_PROFILES_SAMPLE_RATE", 0.0, 0.0, 1.0),
        shutdown_timeout_seconds=_float(env, "SHUTDOWN_TIMEOUT_SECONDS", 10.0, 0.5, 600),
        # Outside production the schema follows the code by itself; production runs
        # `cryptovault migrate` as a deploy step (docker-compose.yml does).
        migrate_on_start=_bool(env, "MIGRATE_ON_START", environment != "production"),
        audit_retention_days=_int(env, "AUDIT_RETENTION_DAYS", 365, 1, 36500),
        login_attempt_retention_days=_int(env, "LOGIN_ATTEMPT_RETENTION_DAYS", 1, 1, 36500),
        retention_sweep_minutes=_int(env, "RETENTION_SWEEP_MINUTES", 60, 1, 10080),
        subscription_mode=_choice(  # type: ignore[arg-type]
            env, "SUBSCRIPTION_MODE", "grouped", SUBSCRIPTION_MODES
        ),
        subscription_send_queue=_int(env, "SUBSCRIPTION_SEND_QUEUE", 1000, 1, 1_000_000),
        ws_per_message_deflate=_bool(env, "WS_PER_MESSAGE_DEFLATE", False),
        alerts_max_active=_int(env, "ALERTS_MAX_ACTIVE", 100, 1, 100_000),
        watchlist_max_symbols=_int(env, "WATCHLIST_MAX_SYMBOLS", 50, 1, 1000),
        snapshot_interval_minutes=_int(env, "SNAPSHOT_INTERVAL_MINUTES", 60, 1, 1440),
    )
