"""The columns of the analytics segments, shared by the feed that writes them and the engine that
reads them. Money is BIGINT millionths (exact sums); times are naive UTC TIMESTAMPs."""

from clicktrail.reports.dimensions import SUB_IDS

CLICK_COLUMNS: dict[str, str] = {
    "click_id": "VARCHAR",
    "created_at": "TIMESTAMP",
    "campaign_id": "INTEGER",
    "offer_id": "INTEGER",
    "source_id": "INTEGER",
    **dict.fromkeys(SUB_IDS, "VARCHAR"),
    "external_id": "VARCHAR",
    "cost": "BIGINT",
    "country": "VARCHAR",
    "device_type": "VARCHAR",
    "os": "VARCHAR",
    "browser": "VARCHAR",
    "is_bot": "BOOLEAN",
    "os_version": "VARCHAR",
    "browser_version": "VARCHAR",
    "region": "VARCHAR",
    "city": "VARCHAR",
    "lander_id": "INTEGER",
    "is_unique": "BOOLEAN",
}

CONVERSION_COLUMNS: dict[str, str] = {
    "conversion_id": "VARCHAR",
    "created_at": "TIMESTAMP",
    "updated_at": "TIMESTAMP",
    "click_id": "VARCHAR",
    "event": "VARCHAR",
    "status": "VARCHAR",
    "revenue": "BIGINT",
    "payout": "BIGINT",
    "currency": "VARCHAR",
    "cost": "BIGINT",
    "click_time": "TIMESTAMP",
    "campaign_id": "INTEGER",
    "offer_id": "INTEGER",
    "source_id": "INTEGER",
    **dict.fromkeys(SUB_IDS, "VARCHAR"),
    "external_id": "VARCHAR",
    "country": "VARCHAR",
    "device_type": "VARCHAR",
    "os": "VARCHAR",
    "browser": "VARCHAR",
    "is_bot": "BOOLEAN",
    "os_version": "VARCHAR",
    "browser_version": "VARCHAR",
    "region": "VARCHAR",
    "city": "VARCHAR",
    "lander_id": "INTEGER",
}

LANDER_CLICK_COLUMNS: dict[str, str] = {
    "click_id": "VARCHAR",
    "created_at": "TIMESTAMP",
    "click_time": "TIMESTAMP",
    "campaign_id": "INTEGER",
    "lander_id": "INTEGER",
    "offer_id": "INTEGER",
    "source_id": "INTEGER",
    **dict.fromkeys(SUB_IDS, "VARCHAR"),
    "external_id": "VARCHAR",
    "country": "VARCHAR",
    "region": "VARCHAR",
    "city": "VARCHAR",
    "device_type": "VARCHAR",
    "os": "VARCHAR",
    "os_version": "VARCHAR",
    "browser": "VARCHAR",
    "browser_version": "VARCHAR",
    "is_bot": "BOOLEAN",
}


def struct_literal(columns: dict[str, str]) -> str:
    """DuckDB's `columns={...}` argument; names and types are ours, never user text."""
    return "{" + ", ".join(f"'{name}': '{kind}'" for name, kind in columns.items()) + "}"


def empty_table_sql(name: str, columns: dict[str, str]) -> str:
    return f"CREATE TABLE {name} (" + ", ".join(f"{col} {kind}" for col, kind in columns.items()) + ")"
