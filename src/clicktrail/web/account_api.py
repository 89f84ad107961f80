"""The account routes of the API: who am I, users and their API keys (admin), the audit log."""

from typing import Annotated, Any

from fastapi import FastAPI, Path, Query

from clicktrail.accounts.audit import find_audit
from clicktrail.accounts.models import KeyInput, UserInput, UserPatch
from clicktrail.accounts.roles import ADMIN_ONLY, CONFIGURE, Role, Rule
from clicktrail.errors import ValidationFailed
from clicktrail.web.auth import ApiAuth, Who
from clicktrail.web.runtime import Runtime
from clicktrail.web.schemas import ApiKeyOut, AuditOut, ErrorOut, MeOut, NewApiKeyOut, Page, UserOut

MAX_ROW_ID = 2_147_483_647
IdPath = Annotated[int, Path(ge=1, le=MAX_ROW_ID)]
Limit = Annotated[int, Query(ge=1, le=1000)]
Cursor = Annotated[
    str | None, Query(pattern=r"^[0-9]{1,10}$", description="next_cursor of the previous page")
]
EVERYONE = Rule(Role.ANALYST, frozenset({Role.AFFILIATE, Role.ADVERTISER}))
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "missing, wrong, revoked or expired credentials"},
    403: {"model": ErrorOut, "description": "the caller's role may not do this"},
    404: {"model": ErrorOut, "description": "no such object"},
    409: {"model": ErrorOut, "description": "the username is taken"},
    422: {"model": ErrorOut, "description": "invalid input"},
    429: {"model": ErrorOut, "description": "rate limited; see Retry-After"},
}


def _after(cursor: str | None) -> int:
    # IDs are 32-bit integer columns: a larger cursor is not one we handed out.
    if cursor and int(cursor) > MAX_ROW_ID:
        raise ValidationFailed("cursor is the next_cursor of a previous page", {"cursor": "not a cursor"})
    return int(cursor or 0)


def add_account_routes(api: FastAPI, runtime: Runtime, auth: ApiAuth) -> None:
    v1 = "/api/v1"
    accounts = runtime.accounts

    @api.get(f"{v1}/me", responses=_ERRORS, tags=["accounts"], **auth.on(EVERYONE))
    def me(who: Who) -> MeOut:
        """The caller: role, binding, and the fields its role never receives."""
        return MeOut(
            role=who.role.value, name=who.name, user_id=who.user_id, key_id=who.key_id,
            source_id=who.source_id, offer_ids=list(who.offer_ids), hidden_fields=sorted(who.hidden),
        )  # fmt: skip

    # Users
    @api.post(f"{v1}/users", status_code=201, responses=_ERRORS, tags=["accounts"], **auth.on(ADMIN_ONLY))
    def create_user(data: UserInput, who: Who) -> UserOut:
        """A user: `affiliate` needs `source_id`, `advertiser` needs `offer_ids`. The password is kept
        only as an argon2 hash."""
        return UserOut.model_validate(accounts.create_user(data, who.actor))

    @api.get(f"{v1}/users", responses=_ERRORS, tags=["accounts"], **auth.on(ADMIN_ONLY))
    def list_users(cursor: Cursor = None, limit: Limit = 100) -> Page[UserOut]:
        users = accounts.list_users(_after(cursor), limit)
        return Page(
            items=[UserOut.model_validate(u) for u in users],
            next_cursor=str(users[-1].id) if len(users) == limit else None,
        )

    @api.get(f"{v1}/users/{{user_id}}", responses=_ERRORS, tags=["accounts"], **auth.on(ADMIN_ONLY))
    def get_user(user_id: IdPath) -> UserOut:
        return UserOut.model_validate(accounts.get_user(user_id))

    @api.patch(f"{v1}/users/{{user_id}}", responses=_ERRORS, tags=["accounts"], **auth.on(ADMIN_ONLY))
    def patch_user(user_id: IdPath, data: UserPatch, who: Who) -> UserOut:
        """Change role, binding or password, or disable (`"disabled": true`): a disabled user's
        sessions end and its keys are refused at once. A new password also ends its sessions."""
        return UserOut.model_validate(accounts.patch_user(user_id, data, who.actor))

    # API keys
    @api.post(f"{v1}/keys", status_code=201, responses=_ERRORS, tags=["accounts"], **auth.on(ADMIN_ONLY))
    def create_key(data: KeyInput, who: Who) -> NewApiKeyOut:
        """A key for a user; its scope is the user's. `secret` is in this answer only: store it now."""
        key, secret = accounts.create_key(data, who.actor)
        return NewApiKeyOut.model_validate({**ApiKeyOut.model_validate(key).model_dump(), "secret": secret})

    @api.get(f"{v1}/keys", responses=_ERRORS, tags=["accounts"], **auth.on(ADMIN_ONLY))
    def list_keys(
        user_id: Annotated[int | None, Query(ge=1, le=MAX_ROW_ID)] = None,
        cursor: Cursor = None,
        limit: Limit = 100,
    ) -> Page[ApiKeyOut]:
        keys = accounts.list_keys(user_id, _after(cursor), limit)
        return Page(
            items=[ApiKeyOut.model_validate(k) for k in keys],
            next_cursor=str(keys[-1].id) if len(keys) == limit else None,
        )

    @api.delete(f"{v1}/keys/{{key_id}}", responses=_ERRORS, tags=["accounts"], **auth.on(ADMIN_ONLY))
    def revoke_key(key_id: IdPath, who: Who) -> ApiKeyOut:
        """Revoke a key: refused from now on; it stays listed with `revoked_at`."""
        return ApiKeyOut.model_validate(accounts.revoke_key(key_id, who.actor))

    # Audit
    @api.get(f"{v1}/audit", responses=_ERRORS, tags=["accounts"], **auth.on(CONFIGURE))
    def audit_log(
        object_type: Annotated[str | None, Query(max_length=32)] = None,
        object_id: Annotated[str | None, Query(max_length=64)] = None,
        actor_user_id: Annotated[int | None, Query(ge=1, le=MAX_ROW_ID)] = None,
        cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,18}$")] = None,
        limit: Limit = 100,
    ) -> Page[AuditOut]:
        """Configuration changes, newest first: who, when, and each object before and after
        (secrets masked). Filters: object_type (offer, source, campaign, user, api_key), object_id."""
        page = find_audit(
            runtime.database, object_type=object_type, object_id=object_id, actor_user_id=actor_user_id,
            cursor=cursor, limit=limit,
        )  # fmt: skip
        return Page(items=[AuditOut.model_validate(row) for row in page.rows], next_cursor=page.next_cursor)
