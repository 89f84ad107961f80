"""Settings, read once from CLICKTRAIL_* environment variables (or built directly in tests)."""

import ipaddress
import re
from functools import cached_property
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///./data/clicktrail.db"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _parse_networks(text: str) -> tuple[Network, ...]:
    networks = []
    for item in text.split(","):
        if item.strip():
            networks.append(ipaddress.ip_network(item.strip(), strict=False))
    return tuple(networks)


_HOSTNAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,62})(\.[a-z0-9]([a-z0-9-]{0,62}))*\.?")


def _parse_allow_hosts(text: str) -> tuple[frozenset[str], tuple[Network, ...]]:
    """`CLICKTRAIL_DELIVERY_ALLOW_HOSTS`: host names and IP addresses or CIDRs, comma-separated."""
    names: set[str] = set()
    networks: list[Network] = []
    for raw in text.split(","):
        item = raw.strip().lower()
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            if not _HOSTNAME.fullmatch(item):
                raise ValueError(f"{item!r} is neither a host name nor an IP address or CIDR") from None
            names.add(item.rstrip("."))
    return frozenset(names), tuple(networks)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CLICKTRAIL_", frozen=True, extra="ignore")

    database_url: str = Field(
        DEFAULT_DATABASE_URL, description="CLICKTRAIL_DATABASE_URL: sqlite:///path or postgresql://…"
    )
    admin_token: SecretStr | None = Field(
        None, description="CLICKTRAIL_ADMIN_TOKEN: admin bearer token; generated on first start when unset"
    )
    secret_key: SecretStr | None = Field(
        None, description="CLICKTRAIL_SECRET_KEY: keys the click ID tag; generated on first start when unset"
    )
    public_url: str = Field(
        "http://127.0.0.1:8080", description="CLICKTRAIL_PUBLIC_URL: base of the tracking links"
    )
    trusted_proxies: str = Field(
        "", description="CLICKTRAIL_TRUSTED_PROXIES: comma-separated CIDRs whose X-Forwarded-For is believed"
    )
    click_batch_size: int = Field(
        2000, ge=1, le=100_000, description="CLICKTRAIL_CLICK_BATCH_SIZE: most clicks in one group commit"
    )
    click_queue_limit: int = Field(
        20_000, ge=1, description="CLICKTRAIL_CLICK_QUEUE_LIMIT: clicks waiting for a commit before 503"
    )
    postback_batch_size: int = Field(
        500, ge=1, le=10_000, description="CLICKTRAIL_POSTBACK_BATCH_SIZE: most postbacks in one transaction"
    )
    postback_queue_limit: int = Field(
        10_000, ge=1, description="CLICKTRAIL_POSTBACK_QUEUE_LIMIT: postbacks waiting for a commit before 503"
    )
    catalog_refresh_seconds: float = Field(
        1.0, gt=0, description="CLICKTRAIL_CATALOG_REFRESH_SECONDS: how often workers look for config changes"
    )
    cap_refresh_seconds: float = Field(
        5.0, gt=0, le=3600, description="CLICKTRAIL_CAP_REFRESH_SECONDS: how often capped offers are counted"
    )
    postback_body_limit: int = Field(
        16_384, ge=1024, description="CLICKTRAIL_POSTBACK_BODY_LIMIT: largest postback body in bytes"
    )

    analytics_dir: Path | None = Field(
        None,
        description="CLICKTRAIL_ANALYTICS_DIR: report segments (default: beside the SQLite file)",
    )
    analytics_lag_seconds: float = Field(
        15.0, ge=0, description="CLICKTRAIL_ANALYTICS_LAG_SECONDS: how long events settle before the feed"
    )
    analytics_interval_seconds: float = Field(
        10.0, gt=0, description="CLICKTRAIL_ANALYTICS_INTERVAL_SECONDS: how often the report feed runs"
    )
    analytics_niceness: int = Field(
        10,
        ge=0,
        le=19,
        description="CLICKTRAIL_ANALYTICS_NICENESS: how far the report feed and the report engine step "
        "back for the workers (their processes' nice value; 0 keeps the server's)",
    )
    analytics_work_share: float = Field(
        0.25,
        gt=0,
        le=1,
        description="CLICKTRAIL_ANALYTICS_WORK_SHARE: at most this share of one core the report feed "
        "uses: on PostgreSQL (Linux) serve holds it there (stopping it a few ms at a time); on SQLite, or "
        "run alone, it rests after each 20 ms of work (on SQLite after each window); 1: never held",
    )
    report_memory_limit: str = Field(
        "256MB",
        pattern=r"^[0-9]+(MB|GB)$",
        description="CLICKTRAIL_REPORT_MEMORY_LIMIT: DuckDB's memory cap (one for every report)",
    )
    report_timeout_seconds: float = Field(
        120.0,
        gt=0,
        description="CLICKTRAIL_REPORT_TIMEOUT_SECONDS: a report the report engine has not answered by then "
        "is answered 503 (reports_unavailable)",
    )
    # Outbound postbacks (docs/delivery.md)
    delivery_enabled: bool = Field(
        True, description="CLICKTRAIL_DELIVERY_ENABLED: run the outbound postback dispatcher in this process"
    )
    delivery_allow_hosts: str = Field(
        "",
        description="CLICKTRAIL_DELIVERY_ALLOW_HOSTS: comma-separated host names and IPs/CIDRs that "
        "postbacks may reach although they are not public",
    )
    delivery_ca_file: str | None = Field(
        None,
        description="CLICKTRAIL_DELIVERY_CA_FILE: PEM certificates trusted for HTTPS receivers besides the "
        "public CAs (e.g. a receiver's self-signed certificate)",
    )
    delivery_concurrency: int = Field(
        32, ge=1, le=1000, description="CLICKTRAIL_DELIVERY_CONCURRENCY: most postbacks in flight per process"
    )
    delivery_connect_timeout: float = Field(
        3.0, gt=0, le=60, description="CLICKTRAIL_DELIVERY_CONNECT_TIMEOUT: seconds to connect"
    )
    delivery_read_timeout: float = Field(
        10.0, gt=0, le=300, description="CLICKTRAIL_DELIVERY_READ_TIMEOUT: seconds to wait for the answer"
    )
    delivery_poll_seconds: float = Field(
        1.0, gt=0, le=60, description="CLICKTRAIL_DELIVERY_POLL_SECONDS: how often to look for due jobs"
    )
    delivery_lease_seconds: float = Field(
        60.0,
        gt=0,
        description="CLICKTRAIL_DELIVERY_LEASE_SECONDS: how long a claimed job is this worker's alone; "
        "longer than one attempt can take",
    )
    delivery_retry_first_seconds: float = Field(
        5.0, gt=0, description="CLICKTRAIL_DELIVERY_RETRY_FIRST_SECONDS: wait before the first retry"
    )
    delivery_retry_max_interval_seconds: float = Field(
        3600.0, gt=0, description="CLICKTRAIL_DELIVERY_RETRY_MAX_INTERVAL_SECONDS: the doubling stops here"
    )
    delivery_max_attempts: int = Field(
        35, ge=1, le=1000, description="CLICKTRAIL_DELIVERY_MAX_ATTEMPTS: attempts before a job is dead"
    )
    delivery_breaker_failures: int = Field(
        10,
        ge=1,
        description="CLICKTRAIL_DELIVERY_BREAKER_FAILURES: consecutive failures that pause a source",
    )
    delivery_breaker_cooldown_seconds: float = Field(
        60.0, gt=0, description="CLICKTRAIL_DELIVERY_BREAKER_COOLDOWN_SECONDS: pause before a probe"
    )
    # Rate limits (per worker process; 0 turns one off). SECURITY.md says what each is for.
    api_rate_per_minute: float = Field(
        600, ge=0, description="CLICKTRAIL_API_RATE_PER_MINUTE: API requests a minute per key (or token)"
    )
    api_rate_burst: int = Field(
        120, ge=1, description="CLICKTRAIL_API_RATE_BURST: API requests at once per key"
    )
    api_ip_rate_per_minute: float = Field(
        1200, ge=0, description="CLICKTRAIL_API_IP_RATE_PER_MINUTE: API requests a minute per client address"
    )
    api_ip_rate_burst: int = Field(
        240, ge=1, description="CLICKTRAIL_API_IP_RATE_BURST: API requests at once per client address"
    )
    auth_failures_per_minute: float = Field(
        10, ge=0,
        description="CLICKTRAIL_AUTH_FAILURES_PER_MINUTE: refused credentials a minute per address (API and "
        "sign-in) before that address gets 429",
    )  # fmt: skip
    auth_failures_burst: int = Field(
        20, ge=1, description="CLICKTRAIL_AUTH_FAILURES_BURST: refused credentials at once per address"
    )
    sign_in_per_minute: float = Field(
        10,
        ge=0,
        description="CLICKTRAIL_SIGN_IN_PER_MINUTE: sign-in attempts a minute per address and per account",
    )
    sign_in_burst: int = Field(10, ge=1, description="CLICKTRAIL_SIGN_IN_BURST: sign-in attempts at once")
    edge_ip_rate_per_second: float = Field(
        0, ge=0,
        description="CLICKTRAIL_EDGE_IP_RATE_PER_SECOND: cap on clicks and postbacks per second per client "
        "address; 0 (the default): no cap",
    )  # fmt: skip
    edge_ip_burst: int = Field(
        100,
        ge=1,
        description="CLICKTRAIL_EDGE_IP_BURST: clicks and postbacks at once per address under the cap",
    )
    geoip_db: str | None = Field(
        None,
        description=(
            "CLICKTRAIL_GEOIP_DB: a MaxMind-format .mmdb (country or city) for the visitor's country; "
            "unset: the bundled DB-IP Lite database; 'off': no geolocation"
        ),
    )
    bot_networks: str = Field(
        "", description="CLICKTRAIL_BOT_NETWORKS: comma-separated CIDRs whose clicks are marked as bots"
    )
    bot_user_agents: tuple[str, ...] = Field(
        (),
        description=(
            "CLICKTRAIL_BOT_USER_AGENTS: JSON list of case-insensitive regular expressions; a user agent "
            "matching one is a bot"
        ),
    )
    unique_window_hours: float = Field(
        24.0,
        gt=0,
        description="CLICKTRAIL_UNIQUE_WINDOW_HOURS: one unique click per visitor, campaign and window",
    )
    unique_cache_size: int = Field(
        250_000,
        ge=1,
        description="CLICKTRAIL_UNIQUE_CACHE_SIZE: visitors the server remembers for uniqueness (24 B each)",
    )
    shared_memory_dir: Path | None = Field(
        None,
        description=(
            "CLICKTRAIL_SHARED_MEMORY_DIR: set by `clicktrail serve --workers N` for its workers: where"
            " they share the unique-click memory and the rate limits (unset: each process its own)"
        ),
    )
    user_agent_cache_size: int = Field(
        50_000, ge=1, description="CLICKTRAIL_USER_AGENT_CACHE_SIZE: parsed user agents kept per worker"
    )

    @field_validator("database_url")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if not value.startswith(("sqlite:", "postgresql:", "postgresql+psycopg:", "postgres:")):
            raise ValueError("CLICKTRAIL_DATABASE_URL must be sqlite:///… or postgresql://…")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _valid_networks(cls, value: str) -> str:
        _parse_networks(value)
        return value

    @field_validator("delivery_allow_hosts")
    @classmethod
    def _valid_allow_hosts(cls, value: str) -> str:
        _parse_allow_hosts(value)
        return value

    @field_validator("delivery_ca_file")
    @classmethod
    def _readable_ca_file(cls, value: str | None) -> str | None:
        if value and not Path(value).is_file():
            raise ValueError(f"{value} is not a file")
        return value or None

    @model_validator(mode="after")
    def _lease_outlasts_an_attempt(self) -> "Settings":
        if self.delivery_lease_seconds <= self.delivery_connect_timeout + self.delivery_read_timeout:
            raise ValueError(
                "CLICKTRAIL_DELIVERY_LEASE_SECONDS must be longer than the connect and read timeouts together"
            )
        return self

    @field_validator("bot_networks")
    @classmethod
    def _valid_bot_networks(cls, value: str) -> str:
        _parse_networks(value)
        return value

    @field_validator("bot_user_agents")
    @classmethod
    def _valid_patterns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(
                    f"CLICKTRAIL_BOT_USER_AGENTS: {pattern!r} is not a regular expression: {exc}"
                ) from exc
        return value

    @field_validator("public_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @cached_property
    def trusted_networks(self) -> tuple[Network, ...]:
        return _parse_networks(self.trusted_proxies)

    @cached_property
    def delivery_allowed(self) -> tuple[frozenset[str], tuple[Network, ...]]:
        """The allowlist: (host names, networks)."""
        return _parse_allow_hosts(self.delivery_allow_hosts)

    @cached_property
    def bot_network_list(self) -> tuple[Network, ...]:
        return _parse_networks(self.bot_networks)

    @property
    def sqlalchemy_url(self) -> str:
        url = self.database_url
        for prefix in ("postgresql://", "postgres://"):
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url[len(prefix) :]
        return url

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite:")

    def analytics_path(self) -> Path:
        if self.analytics_dir is not None:
            return self.analytics_dir
        sqlite = self.sqlite_path()
        return (sqlite.parent if sqlite else Path("data")) / "analytics"

    def sqlite_path(self) -> Path | None:
        if not self.is_sqlite:
            return None
        path = self.database_url.split(":///", 1)[1] if ":///" in self.database_url else ""
        return Path(path) if path and path != ":memory:" else None
