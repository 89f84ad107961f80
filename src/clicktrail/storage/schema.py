"""The tables. Event tables (clicks, conversions) are append-mostly and denormalised: a conversion
carries its click's dimensions, so reports need no join and a later move to a columnar store is easy.
Changes to this file go with a migration under `migrations/versions/`."""

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
)

from clicktrail.storage.types import Money, UtcDateTime

metadata = MetaData()


def key_text(length: int) -> String:
    """Text that identifies (click and conversion IDs, event names, transaction IDs, states), compared
    byte by byte on PostgreSQL: under the database's collation (en_US.UTF-8, or even C.UTF-8 before
    PostgreSQL 17) every comparison in a B-tree goes through the C library's strcoll, which made
    inserting into a table keyed by such text a third slower (BENCHMARKS.md, "Keys compared byte by
    byte"). Nothing is sorted by these for people to read; click IDs sort by time in byte order.
    SQLite compares text byte by byte already (BINARY)."""
    return String(length).with_variant(String(length, collation="C"), "postgresql")


SUB_COLUMNS = tuple(f"sub{n}" for n in range(1, 11))
SUB_MAX = 255

meta = Table(
    "meta",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)
CATALOG_VERSION = "catalog_version"
"""The meta row every catalog change rewrites, in its own transaction: workers watch it to reload."""

offers = Table(
    "offers",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("url", Text, nullable=False),
    Column("revenue", Money, nullable=False),
    Column("payout", Money, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("attribution_window_days", Integer, nullable=False),
    Column("postback_token", String(200), nullable=True),
    # Added by migration 0010 (docs/postback-auth.md): CIDRs allowed to post back; the HMAC secret.
    Column("postback_ips", JSON, nullable=False, server_default=text("'[]'")),
    Column("postback_secret", String(200), nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    # Daily conversion cap (migration 0007): once reached in the cap's day, new clicks go to the
    # fallback offer (catalog/caps.py). NULL: no cap.
    Column("daily_cap", Integer, nullable=True),
    Column("cap_timezone", String(64), nullable=False, server_default="UTC"),
    Column("fallback_offer_id", Integer, ForeignKey("offers.id"), nullable=True),
)

# Landing pages shown before the offer (migration 0007); `/lp/click` continues the click to the offer.
landers = Table(
    "landers",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("url", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

sources = Table(
    "sources",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("postback_url", Text, nullable=True),
    # Which conversions the source is sent: event slugs ([] = every event) and statuses.
    Column("postback_events", JSON, nullable=False, server_default=text("'[]'")),
    Column("postback_statuses", JSON, nullable=False, server_default=text("'[\"approved\"]'")),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

campaigns = Table(
    "campaigns",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key", String(32), nullable=False, unique=True),
    Column("name", String(200), nullable=False),
    Column("source_id", Integer, ForeignKey("sources.id"), nullable=False),
    Column("offer_id", Integer, ForeignKey("offers.id"), nullable=False),
    # How traffic is paid for when the source does not pass `cost=` on the click.
    Column("cost_model", String(8), nullable=False, server_default="none"),
    Column("cost_value", Money, nullable=False, server_default="0"),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    # Routing rules as JSON (catalog/rules.py RoutingInput); NULL: every visitor goes to offer_id.
    Column("routing", Text, nullable=True),
    # The lander of the default path (migration 0007); NULL: straight to the offer.
    Column("lander_id", Integer, ForeignKey("landers.id"), nullable=True),
)

# A campaign's actual cost for a past period, spread over that period's clicks by the reports.
cost_updates = Table(
    "cost_updates",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("campaign_id", Integer, ForeignKey("campaigns.id"), nullable=False, index=True),
    Column("start", UtcDateTime, nullable=False),
    Column("end", UtcDateTime, nullable=False),
    Column("amount", Money, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)

clicks = Table(
    "clicks",
    metadata,
    Column("click_id", key_text(32), primary_key=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("campaign_id", Integer, nullable=False),
    Column("offer_id", Integer, nullable=False),
    Column("source_id", Integer, nullable=False),
    *(Column(name, String(SUB_MAX), nullable=True) for name in SUB_COLUMNS),
    Column("external_id", String(SUB_MAX), nullable=True),
    Column("cost", Money, nullable=True),
    Column("ip", String(45), nullable=True),
    Column("user_agent", String(512), nullable=True),
    Column("referrer", String(1024), nullable=True),
    Column("country", String(2), nullable=True),
    Column("device_type", String(16), nullable=True),
    Column("os", String(64), nullable=True),
    Column("browser", String(64), nullable=True),
    Column("is_bot", Boolean, nullable=False, default=False),
    Column("is_unique", Boolean, nullable=False, default=True),
    # Added by migration 0002 (docs/visitors.md).
    Column("visitor_id", String(16), nullable=True),
    Column("region", String(64), nullable=True),
    Column("city", String(128), nullable=True),
    Column("os_version", String(32), nullable=True),
    Column("browser_version", String(32), nullable=True),
    # The lander shown before the offer (migration 0007); NULL: the visitor went straight to the offer.
    Column("lander_id", Integer, nullable=True),
)
Index("ix_clicks_campaign_time", clicks.c.campaign_id, clicks.c.created_at)

# One row per click whose visitor went on from its lander (`/lp/click`), with the offer chosen there
# and the click's dimensions, so reports count lander click-through without a join (migration 0007).
lander_clicks = Table(
    "lander_clicks",
    metadata,
    Column("click_id", key_text(32), primary_key=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("click_time", UtcDateTime, nullable=False),
    Column("campaign_id", Integer, nullable=False),
    Column("lander_id", Integer, nullable=False),
    Column("offer_id", Integer, nullable=False),
    Column("source_id", Integer, nullable=False),
    *(Column(name, String(SUB_MAX), nullable=True) for name in SUB_COLUMNS),
    Column("external_id", String(SUB_MAX), nullable=True),
    Column("country", String(2), nullable=True),
    Column("region", String(64), nullable=True),
    Column("city", String(128), nullable=True),
    Column("device_type", String(16), nullable=True),
    Column("os", String(64), nullable=True),
    Column("os_version", String(32), nullable=True),
    Column("browser", String(64), nullable=True),
    Column("browser_version", String(32), nullable=True),
    Column("is_bot", Boolean, nullable=False, default=False),
)
# The analytics feed reads lander click-throughs by time.
Index("ix_lander_clicks_created_at", lander_clicks.c.created_at)

conversions = Table(
    "conversions",
    metadata,
    Column("conversion_id", key_text(26), primary_key=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("click_id", key_text(32), nullable=False),
    Column("event", key_text(64), nullable=False),
    Column("txid", key_text(255), nullable=False),
    Column("status", String(16), nullable=False),
    Column("revenue", Money, nullable=False),
    Column("payout", Money, nullable=False),
    Column("currency", String(3), nullable=False),
    # What the conversion cost under a CPA cost model (counted while approved).
    Column("cost", Money, nullable=False, server_default="0"),
    # The click's dimensions, copied so reports need no join.
    Column("click_time", UtcDateTime, nullable=False),
    Column("campaign_id", Integer, nullable=False),
    Column("offer_id", Integer, nullable=False),
    Column("source_id", Integer, nullable=False),
    *(Column(name, String(SUB_MAX), nullable=True) for name in SUB_COLUMNS),
    Column("external_id", String(SUB_MAX), nullable=True),
    Column("country", String(2), nullable=True),
    Column("device_type", String(16), nullable=True),
    Column("os", String(64), nullable=True),
    Column("browser", String(64), nullable=True),
    Column("is_bot", Boolean, nullable=False, default=False, server_default=false()),
    # Migration 0007: the rest of the click's visitor dimensions, and its lander.
    Column("os_version", String(32), nullable=True),
    Column("browser_version", String(32), nullable=True),
    Column("region", String(64), nullable=True),
    Column("city", String(128), nullable=True),
    Column("lander_id", Integer, nullable=True),
    # How the conversion arrived: "postback" (server to server) or "pixel" (the visitor's browser).
    Column("via", String(8), nullable=False, default="postback", server_default="postback"),
    UniqueConstraint("click_id", "event", "txid", name="uq_conversions_click_event_txid"),
)
Index("ix_conversions_campaign_time", conversions.c.campaign_id, conversions.c.created_at)
# The analytics feed reads conversions by the time they last changed.
Index("ix_conversions_updated_at", conversions.c.updated_at)

conversion_status_history = Table(
    "conversion_status_history",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column(
        "conversion_id", key_text(26), ForeignKey("conversions.conversion_id"), nullable=False, index=True
    ),
    Column("changed_at", UtcDateTime, nullable=False),
    Column("old_status", String(16), nullable=True),
    Column("new_status", String(16), nullable=False),
    Column("revenue", Money, nullable=False),
)

postback_log = Table(
    "postback_log",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("received_at", UtcDateTime, nullable=False),
    Column("method", String(8), nullable=False),
    Column("query", Text, nullable=False),
    Column("ip", String(45), nullable=True),
    Column("click_id", key_text(64), nullable=True, index=True),
    Column("event", String(64), nullable=True),
    Column("txid", String(255), nullable=True),
    Column("decision", key_text(32), nullable=False, index=True),
    Column("error", String(64), nullable=True),
    Column("detail", Text, nullable=True),
    Column("conversion_id", String(26), nullable=True),
    Column("via", String(8), nullable=False, default="postback", server_default="postback"),
)

# Outbound postbacks to send, written in the conversion's transaction (the outbox).
deliveries = Table(
    "deliveries",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("conversion_id", key_text(26), nullable=False, index=True),
    # Not indexed (migration 0013): a click's deliveries are found through its conversions.
    Column("click_id", key_text(32), nullable=False),
    Column("source_id", Integer, nullable=False),
    Column("status", key_text(16), nullable=False),
    Column("conversion_status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UtcDateTime, nullable=True),
    Column("locked_until", UtcDateTime, nullable=True),
    Column("last_error", Text, nullable=True),
    # Who holds the lease (`locked_until`): a worker records its result only while it still holds it.
    Column("lease_token", String(32), nullable=True),
    Column("updated_at", UtcDateTime, nullable=True),
    Column("delivered_at", UtcDateTime, nullable=True),
)
Index("ix_deliveries_due", deliveries.c.status, deliveries.c.next_attempt_at)
# A paused source's waiting jobs, by due time: deferred to its probe in one range update
# (delivery_store.defer_source) instead of being skipped by every claim.
Index("ix_deliveries_source_due", deliveries.c.source_id, deliveries.c.status, deliveries.c.next_attempt_at)
# The jobs under a lease (a few in flight), for the dispatcher's next wake-up.
Index(
    "ix_deliveries_leased",
    deliveries.c.locked_until,
    postgresql_where=text("locked_until IS NOT NULL"),
    sqlite_where=text("locked_until IS NOT NULL"),
)
# The claim's in-order check ("is an older job for this conversion and source still pending?") in one
# look-up per candidate, whatever the planner's statistics say; small, as it holds pending jobs only.
Index(
    "ix_deliveries_pending_order",
    deliveries.c.conversion_id,
    deliveries.c.source_id,
    deliveries.c.id,
    postgresql_where=text("status = 'pending'"),
    sqlite_where=text("status = 'pending'"),
)

# Every call made for a delivery: what was called and what came back.
delivery_attempts = Table(
    "delivery_attempts",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column(
        "delivery_id",
        BigInteger().with_variant(Integer, "sqlite"),
        ForeignKey("deliveries.id"),
        nullable=False,
        index=True,
    ),
    Column("attempted_at", UtcDateTime, nullable=False),
    Column("url", Text, nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("latency_ms", Integer, nullable=True),
    Column("error", Text, nullable=True),
)

# One circuit breaker per source that has ever failed: closed (delivering), open (paused) or half_open.
delivery_breakers = Table(
    "delivery_breakers",
    metadata,
    Column("source_id", Integer, ForeignKey("sources.id"), primary_key=True, autoincrement=False),
    Column("state", String(16), nullable=False),
    Column("failures", Integer, nullable=False),
    Column("reason", Text, nullable=True),
    Column("opened_at", UtcDateTime, nullable=True),
    Column("probe_at", UtcDateTime, nullable=True),
    Column("updated_at", UtcDateTime, nullable=False),
)

# Accounts (migration 0006, docs/accounts.md). A user signs in with a password (argon2) or calls the API
# with one of its keys; `role` is one of accounts/roles.py Role. An affiliate is bound to one source, an
# advertiser to the offers listed in `offer_ids`.
users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("username", String(254), nullable=False, unique=True),
    Column("password_hash", Text, nullable=False),
    Column("role", String(16), nullable=False),
    Column("source_id", Integer, ForeignKey("sources.id"), nullable=True),
    Column("offer_ids", JSON, nullable=False, server_default=text("'[]'")),
    Column("disabled", Boolean, nullable=False, server_default=false()),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

# API keys: only a SHA-256 of the secret is kept (the secret is 256 random bits: nothing to brute-force).
api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False, index=True),
    Column("name", String(100), nullable=False),
    Column("prefix", String(16), nullable=False),
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=True),
    Column("revoked_at", UtcDateTime, nullable=True),
    Column("last_used_at", UtcDateTime, nullable=True),
)

# Dashboard sessions held server-side, so signing out or disabling a user ends them everywhere. The
# cookie carries the session ID; only its SHA-256 is stored. user_id NULL: signed in with the admin token.
sessions = Table(
    "sessions",
    metadata,
    Column("id_hash", String(64), primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id"), nullable=True, index=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
)

# Who changed the configuration, when, and what (before/after), written in the change's transaction.
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("at", UtcDateTime, nullable=False, index=True),
    Column("actor", String(300), nullable=False),
    Column("actor_user_id", Integer, nullable=True),
    Column("action", String(32), nullable=False),
    Column("object_type", String(32), nullable=False),
    Column("object_id", String(64), nullable=False),
    Column("before", JSON, nullable=True),
    Column("after", JSON, nullable=True),
)
Index("ix_audit_log_object", audit_log.c.object_type, audit_log.c.object_id)
