"""The audit log of configuration changes: who, when, what (before and after). Entries are written
with the connection of the change itself, so a change and its entry commit together or not at all."""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any

from sqlalchemy import Connection

from clicktrail.errors import ValidationFailed
from clicktrail.storage import account_store as store
from clicktrail.storage.database import Database

SECRET_FIELDS = frozenset({"password_hash", "secret_hash", "postback_token", "password"})
MASK = "***"


@dataclass(frozen=True, slots=True)
class Actor:
    """Who made a change: a user's name (and ID), the admin token, or the system (CLI, first start)."""

    name: str
    user_id: int | None = None


SYSTEM = Actor("system")


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    return value


def snapshot(values: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A JSON-safe copy of a row for the log; secrets are masked (their change still shows)."""
    if values is None:
        return None
    return {
        key: (MASK if value is not None else None) if key in SECRET_FIELDS else _plain(value)
        for key, value in values.items()
    }


def record(
    connection: Connection,
    at: datetime,
    actor: Actor,
    action: str,
    object_type: str,
    object_id: object,
    *,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
) -> None:
    store.insert_audit(
        connection,
        {
            "at": at,
            "actor": actor.name[:300],
            "actor_user_id": actor.user_id,
            "action": action,
            "object_type": object_type,
            "object_id": str(object_id),
            "before": snapshot(before),
            "after": snapshot(after),
        },
    )


@dataclass(frozen=True, slots=True)
class AuditPage:
    rows: list[dict[str, Any]]
    next_cursor: str | None


def find_audit(
    database: Database,
    *,
    object_type: str | None,
    object_id: str | None,
    actor_user_id: int | None,
    cursor: str | None,
    limit: int,
) -> AuditPage:
    """Newest first."""
    before = None
    if cursor:
        if not cursor.isdigit() or len(cursor) > 18:
            raise ValidationFailed("cursor is the next_cursor of a previous page", {"cursor": "not a cursor"})
        before = int(cursor)
    with database.begin() as connection:
        rows = store.list_audit(
            connection,
            object_type=object_type,
            object_id=object_id,
            actor_user_id=actor_user_id,
            before=before,
            limit=limit + 1,
        )
    page = [row._asdict() for row in rows[:limit]]
    return AuditPage(page, str(page[-1]["id"]) if len(rows) > limit else None)
