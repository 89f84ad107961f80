"""SQL for users, API keys, dashboard sessions and the audit log."""

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Result, Row, delete, insert, or_, select, update

from clicktrail.storage.schema import api_keys, audit_log, sessions, users


def insert_user(connection: Connection, values: Mapping[str, Any]) -> Row[Any]:
    new_id = connection.execute(insert(users).values(**values).returning(users.c.id)).scalar_one()
    return connection.execute(select(users).where(users.c.id == new_id)).one()


def get_user(connection: Connection, user_id: int) -> Row[Any] | None:
    return connection.execute(select(users).where(users.c.id == user_id)).one_or_none()


def find_user(connection: Connection, username: str) -> Row[Any] | None:
    return connection.execute(select(users).where(users.c.username == username)).one_or_none()


def list_users(connection: Connection, *, after_id: int, limit: int) -> Sequence[Row[Any]]:
    return connection.execute(
        select(users).where(users.c.id > after_id).order_by(users.c.id).limit(limit)
    ).all()


def update_user(connection: Connection, user_id: int, values: Mapping[str, Any]) -> Row[Any] | None:
    if values:
        connection.execute(update(users).where(users.c.id == user_id).values(**values))
    return get_user(connection, user_id)


def insert_key(connection: Connection, values: Mapping[str, Any]) -> Row[Any]:
    new_id = connection.execute(insert(api_keys).values(**values).returning(api_keys.c.id)).scalar_one()
    return connection.execute(select(api_keys).where(api_keys.c.id == new_id)).one()


def get_key(connection: Connection, key_id: int) -> Row[Any] | None:
    return connection.execute(select(api_keys).where(api_keys.c.id == key_id)).one_or_none()


def list_keys(
    connection: Connection, *, user_id: int | None, after_id: int, limit: int
) -> Sequence[Row[Any]]:
    query = select(api_keys).where(api_keys.c.id > after_id)
    if user_id is not None:
        query = query.where(api_keys.c.user_id == user_id)
    return connection.execute(query.order_by(api_keys.c.id).limit(limit)).all()


def revoke_key(connection: Connection, key_id: int, now: datetime) -> None:
    connection.execute(
        update(api_keys)
        .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )


def key_with_user(connection: Connection, secret_hash: str) -> Row[Any] | None:
    """The key with this hash and its user's access, in one indexed read."""
    query = (
        select(
            api_keys.c.id.label("key_id"),
            api_keys.c.expires_at,
            api_keys.c.revoked_at,
            api_keys.c.last_used_at,
            users.c.id.label("user_id"),
            users.c.username,
            users.c.role,
            users.c.source_id,
            users.c.offer_ids,
            users.c.disabled,
        )
        .join(users, users.c.id == api_keys.c.user_id)
        .where(api_keys.c.secret_hash == secret_hash)
    )
    found: Result[Any] = connection.execute(query)
    return found.one_or_none()


def touch_key(connection: Connection, key_id: int, now: datetime, older_than: datetime) -> None:
    """Record a use; a no-op when another request recorded one since `older_than`."""
    connection.execute(
        update(api_keys)
        .where(
            api_keys.c.id == key_id,
            or_(api_keys.c.last_used_at.is_(None), api_keys.c.last_used_at < older_than),
        )
        .values(last_used_at=now)
    )


def insert_session(connection: Connection, values: Mapping[str, Any]) -> None:
    connection.execute(insert(sessions).values(**values))


def session_with_user(connection: Connection, id_hash: str) -> Row[Any] | None:
    query = (
        select(
            sessions.c.expires_at,
            sessions.c.user_id,
            users.c.username,
            users.c.role,
            users.c.source_id,
            users.c.offer_ids,
            users.c.disabled,
        )
        .outerjoin(users, users.c.id == sessions.c.user_id)
        .where(sessions.c.id_hash == id_hash)
    )
    found: Result[Any] = connection.execute(query)
    return found.one_or_none()


def delete_session(connection: Connection, id_hash: str) -> None:
    connection.execute(delete(sessions).where(sessions.c.id_hash == id_hash))


def delete_user_sessions(connection: Connection, user_id: int | None) -> None:
    """Every session of a user; of the admin token when user_id is None."""
    column = sessions.c.user_id
    connection.execute(delete(sessions).where(column.is_(None) if user_id is None else column == user_id))


def delete_expired_sessions(connection: Connection, now: datetime) -> None:
    connection.execute(delete(sessions).where(sessions.c.expires_at < now))


def insert_audit(connection: Connection, values: Mapping[str, Any]) -> None:
    connection.execute(insert(audit_log).values(**values))


def list_audit(
    connection: Connection,
    *,
    object_type: str | None,
    object_id: str | None,
    actor_user_id: int | None,
    before: int | None,
    limit: int,
) -> Sequence[Row[Any]]:
    query = select(audit_log)
    if object_type is not None:
        query = query.where(audit_log.c.object_type == object_type)
    if object_id is not None:
        query = query.where(audit_log.c.object_id == object_id)
    if actor_user_id is not None:
        query = query.where(audit_log.c.actor_user_id == actor_user_id)
    if before is not None:
        query = query.where(audit_log.c.id < before)
    return connection.execute(query.order_by(audit_log.c.id.desc()).limit(limit)).all()
