"""Users, passwords, API keys and dashboard sessions: creating, changing and checking them. Every
change is written to the audit log in its own transaction."""

import hashlib
import secrets
import threading
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Connection, Row
from sqlalchemy.exc import IntegrityError

from clicktrail.accounts import audit
from clicktrail.accounts.audit import Actor
from clicktrail.accounts.models import (
    ADMIN_TOKEN,
    ApiKey,
    KeyInput,
    Principal,
    User,
    UserInput,
    UserPatch,
)
from clicktrail.accounts.roles import Role
from clicktrail.errors import Conflict, NotFound, Unauthorized, ValidationFailed
from clicktrail.storage import account_store as store
from clicktrail.storage import catalog_store
from clicktrail.storage.database import Database
from clicktrail.storage.schema import offers, sources
from clicktrail.types import Clock

KEY_PREFIX = "ctk_"
KEY_MAX_DAYS = 36_500
KEY_TOUCH_SECONDS = 60
"""A key's last-used time is written at most this often: not one write per request."""


def _digest(secret: str) -> str:
    # Keys and session IDs are 256 random bits: a plain SHA-256 is enough, there is nothing to brute-force.
    return hashlib.sha256(secret.encode()).hexdigest()


def _user(row: Row[Any]) -> User:
    values = row._asdict()
    values.pop("password_hash")
    return User(**{**values, "role": Role(values["role"]), "offer_ids": list(values["offer_ids"] or [])})


def _key(row: Row[Any]) -> ApiKey:
    values = row._asdict()
    values.pop("secret_hash")
    return ApiKey(**values)


def _principal(row: Row[Any], *, key_id: int | None = None) -> Principal:
    return Principal(
        Role(row.role),
        row.username,
        user_id=row.user_id,
        key_id=key_id,
        source_id=row.source_id,
        offer_ids=tuple(row.offer_ids or ()),
    )


class Accounts:
    def __init__(self, database: Database, clock: Clock, hasher: PasswordHasher | None = None) -> None:
        self._db = database
        self._clock = clock
        self._hasher = hasher or PasswordHasher()
        self._decoy_hash: str | None = None
        self._decoy_lock = threading.Lock()

    def _decoy(self) -> str:
        """A hash verified against when the username is unknown, so both answers take as long.

        Made by the first sign-in, not at start: one Argon2 hash touches 64 MiB (its memory cost),
        which would otherwise be every worker's peak resident set, sign-ins or not."""
        with self._decoy_lock:
            if self._decoy_hash is None:
                self._decoy_hash = self._hasher.hash(secrets.token_urlsafe(16))
            return self._decoy_hash

    # Users
    def _check_binding(
        self, connection: Connection, role: Role, source_id: int | None, offer_ids: list[int]
    ) -> None:
        problems: dict[str, str] = {}
        if role is Role.AFFILIATE:
            if source_id is None:
                problems["source_id"] = "an affiliate is bound to one source"
            elif catalog_store.get_row(connection, sources, source_id) is None:
                problems["source_id"] = f"no source with id {source_id}"
        elif source_id is not None:
            problems["source_id"] = "only an affiliate is bound to a source"
        if role is Role.ADVERTISER:
            missing = [i for i in offer_ids if catalog_store.get_row(connection, offers, i) is None]
            if not offer_ids:
                problems["offer_ids"] = "an advertiser is bound to at least one offer"
            elif missing:
                problems["offer_ids"] = f"no offer with id {', '.join(map(str, missing))}"
        elif offer_ids:
            problems["offer_ids"] = "only an advertiser is bound to offers"
        if problems:
            raise ValidationFailed("; ".join(problems.values()), problems)

    def create_user(self, data: UserInput, actor: Actor) -> User:
        now = self._clock()
        values = {
            "username": data.username,
            "password_hash": self._hasher.hash(data.password),
            "role": data.role.value,
            "source_id": data.source_id,
            "offer_ids": data.offer_ids,
            "disabled": False,
            "created_at": now,
            "updated_at": now,
        }
        try:
            with self._db.begin() as connection:
                self._check_binding(connection, data.role, data.source_id, data.offer_ids)
                if store.find_user(connection, data.username) is not None:
                    raise Conflict(f"a user called {data.username} exists")
                row = store.insert_user(connection, values)
                audit.record(connection, now, actor, "create", "user", row.id, after=row._asdict())
        except IntegrityError as exc:  # a concurrent twin won the unique username
            raise Conflict(f"a user called {data.username} exists") from exc
        return _user(row)

    def get_user(self, user_id: int) -> User:
        with self._db.begin() as connection:
            row = store.get_user(connection, user_id)
        if row is None:
            raise NotFound(f"no user with id {user_id}")
        return _user(row)

    def find_user(self, username: str) -> User:
        with self._db.begin() as connection:
            row = store.find_user(connection, username.strip().lower())
        if row is None:
            raise NotFound(f"no user called {username}")
        return _user(row)

    def list_users(self, after_id: int = 0, limit: int = 100) -> list[User]:
        with self._db.begin() as connection:
            return [_user(row) for row in store.list_users(connection, after_id=after_id, limit=limit)]

    def patch_user(self, user_id: int, data: UserPatch, actor: Actor) -> User:
        given = data.model_dump(exclude_unset=True)
        nulls = [
            name
            for name in ("password", "role", "offer_ids", "disabled")
            if name in given and given[name] is None
        ]
        if nulls:
            raise ValidationFailed(
                f"{', '.join(nulls)} cannot be null", dict.fromkeys(nulls, "cannot be null")
            )
        now = self._clock()
        with self._db.begin() as connection:
            before = store.get_user(connection, user_id)
            if before is None:
                raise NotFound(f"no user with id {user_id}")
            values: dict[str, Any] = {k: v for k, v in given.items() if k != "password"}
            if "role" in values:
                values["role"] = Role(values["role"]).value
            role = Role(values.get("role", before.role))
            # Changing the role drops a binding the new role does not take, unless one is given.
            source_id = values.get("source_id", before.source_id if role is Role.AFFILIATE else None)
            offer_ids = values.get("offer_ids", before.offer_ids if role is Role.ADVERTISER else [])
            self._check_binding(connection, role, source_id, list(offer_ids or []))
            values |= {"source_id": source_id, "offer_ids": list(offer_ids or [])}
            if data.password is not None:
                values["password_hash"] = self._hasher.hash(data.password)
            values["updated_at"] = now
            after = store.update_user(connection, user_id, values)
            assert after is not None
            if values.get("disabled") or "password_hash" in values:
                store.delete_user_sessions(connection, user_id)
            action = "disable" if given.get("disabled") and not before.disabled else "update"
            audit.record(
                connection,
                now,
                actor,
                action,
                "user",
                user_id,
                before=before._asdict(),
                after=after._asdict(),
            )
        return _user(after)

    def disable_user(self, username: str, actor: Actor) -> User:
        return self.patch_user(self.find_user(username).id, UserPatch(disabled=True), actor)

    def sign_in(self, username: str, password: str) -> Principal | None:
        """The user's principal when the password is right and the user enabled; otherwise None."""
        name = username.strip().lower()
        decoy = self._decoy()  # before the look-up: the first sign-in pays for it, known user or not
        with self._db.begin() as connection:
            row = store.find_user(connection, name) if name else None
        stored = row.password_hash if row is not None else decoy
        try:
            self._hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return None
        if row is None or row.disabled:
            return None
        if self._hasher.check_needs_rehash(stored):
            with self._db.begin() as connection:
                store.update_user(connection, row.id, {"password_hash": self._hasher.hash(password)})
        return Principal(
            Role(row.role), row.username, user_id=row.id, source_id=row.source_id,
            offer_ids=tuple(row.offer_ids or ()),
        )  # fmt: skip

    # API keys
    def create_key(self, data: KeyInput, actor: Actor) -> tuple[ApiKey, str]:
        """A new key and its secret, which is shown this once and stored only as a hash."""
        now = self._clock()
        expires = data.expires_at
        if expires is not None:
            if expires.tzinfo is None:
                raise ValidationFailed("expires_at needs a UTC offset", {"expires_at": "add Z or +hh:mm"})
            if expires <= now:
                raise ValidationFailed("expires_at is in the past", {"expires_at": "must be in the future"})
            if expires - now > timedelta(days=KEY_MAX_DAYS):
                detail = f"at most {KEY_MAX_DAYS} days from now"
                raise ValidationFailed(f"expires_at: {detail}", {"expires_at": detail})
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        with self._db.begin() as connection:
            if store.get_user(connection, data.user_id) is None:
                raise ValidationFailed(f"no user with id {data.user_id}", {"user_id": "no such user"})
            row = store.insert_key(
                connection,
                {
                    "user_id": data.user_id,
                    "name": data.name,
                    "prefix": secret[:12],
                    "secret_hash": _digest(secret),
                    "created_at": now,
                    "expires_at": expires,
                },
            )
            audit.record(connection, now, actor, "create", "api_key", row.id, after=row._asdict())
        return _key(row), secret

    def list_keys(self, user_id: int | None = None, after_id: int = 0, limit: int = 100) -> list[ApiKey]:
        with self._db.begin() as connection:
            rows = store.list_keys(connection, user_id=user_id, after_id=after_id, limit=limit)
        return [_key(row) for row in rows]

    def revoke_key(self, key_id: int, actor: Actor) -> ApiKey:
        now = self._clock()
        with self._db.begin() as connection:
            before = store.get_key(connection, key_id)
            if before is None:
                raise NotFound(f"no API key with id {key_id}")
            store.revoke_key(connection, key_id, now)
            after = store.get_key(connection, key_id)
            assert after is not None
            if before.revoked_at is None:
                audit.record(
                    connection, now, actor, "revoke", "api_key", key_id, before=before._asdict(),
                    after=after._asdict(),
                )  # fmt: skip
        return _key(after)

    def principal_for_key(self, secret: str) -> Principal:
        """Blocking (reads, and at most once a minute writes, the database). Raises Unauthorized."""
        now = self._clock()
        with self._db.begin() as connection:
            row = store.key_with_user(connection, _digest(secret))
        if row is None or row.revoked_at is not None:
            raise Unauthorized("this API key is unknown or revoked")
        if row.expires_at is not None and row.expires_at <= now:
            raise Unauthorized("this API key has expired")
        if row.disabled:
            raise Unauthorized("this API key's user is disabled")
        stale = now - timedelta(seconds=KEY_TOUCH_SECONDS)
        if row.last_used_at is None or row.last_used_at < stale:
            with self._db.begin() as connection:
                store.touch_key(connection, row.key_id, now, stale)
        return _principal(row, key_id=row.key_id)

    # Dashboard sessions
    def open_session(self, session_id: str, principal: Principal, expires: datetime) -> None:
        now = self._clock()
        with self._db.begin() as connection:
            store.delete_expired_sessions(connection, now)
            store.insert_session(
                connection,
                {"id_hash": _digest(session_id), "user_id": principal.user_id, "created_at": now,
                 "expires_at": expires},
            )  # fmt: skip

    def session_principal(self, session_id: str) -> Principal | None:
        """Who holds this session; None when it was closed, expired, or its user disabled."""
        with self._db.begin() as connection:
            row = store.session_with_user(connection, _digest(session_id))
        if row is None or row.expires_at <= self._clock():
            return None
        if row.user_id is None:
            return ADMIN_TOKEN
        if row.disabled:
            return None
        return _principal(row)

    def close_session(self, session_id: str) -> None:
        with self._db.begin() as connection:
            store.delete_session(connection, _digest(session_id))

    def close_admin_token_sessions(self) -> None:
        """After the admin token changed: whoever signed in with the old one is signed out."""
        with self._db.begin() as connection:
            store.delete_user_sessions(connection, None)


def user_fields(user: User) -> Mapping[str, Any]:
    return {name: getattr(user, name) for name in User.__slots__}
