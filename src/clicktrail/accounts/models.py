"""Users and API keys as the API accepts them (validated) and as stored; the Principal a request acts as."""

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from clicktrail.accounts.audit import Actor
from clicktrail.accounts.roles import HIDDEN_FIELDS, Role

RowId = Annotated[int, Field(ge=1, le=2_147_483_647)]
_USERNAME = re.compile(r"[a-z0-9][a-z0-9._@+-]{0,253}")
PASSWORD_MIN = 12


def _username(value: str) -> str:
    name = value.strip().lower()
    if not _USERNAME.fullmatch(name):
        raise ValueError("an email address or a name: letters, digits and . _ @ + - (no spaces)")
    return name


Username = Annotated[
    str,
    Field(min_length=1, max_length=254, description="an email address or a name"),
    AfterValidator(_username),
]
Password = Annotated[
    str, Field(min_length=PASSWORD_MIN, max_length=1024, description=f"at least {PASSWORD_MIN} characters")
]
OfferIds = Annotated[
    list[RowId],
    AfterValidator(lambda ids: sorted(set(ids))),
    Field(max_length=200, description="an advertiser's offers"),
]


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class UserInput(_Input):
    username: Username
    password: Password
    role: Role
    source_id: RowId | None = Field(None, description="an affiliate's source (required for affiliates)")
    offer_ids: OfferIds = []


class UserPatch(_Input):
    password: Password | None = None
    role: Role | None = None
    source_id: RowId | None = None
    offer_ids: OfferIds | None = None
    disabled: bool | None = Field(None, description="true ends the user's sessions and refuses its keys")


class KeyInput(_Input):
    user_id: RowId
    name: Annotated[str, Field(min_length=1, max_length=100)]
    expires_at: datetime | None = Field(None, description="ISO 8601 with an offset; none: never expires")


@dataclass(frozen=True, slots=True)
class User:
    id: int
    username: str
    role: Role
    source_id: int | None
    offer_ids: list[int]
    disabled: bool
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: int
    user_id: int
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


@dataclass(frozen=True, slots=True)
class Principal:
    """Whom a request acts as: a user (through a key or a dashboard session) or the admin token."""

    role: Role
    name: str
    user_id: int | None = None
    key_id: int | None = None
    source_id: int | None = None
    offer_ids: tuple[int, ...] = ()

    @property
    def scope(self) -> tuple[str, tuple[int, ...]] | None:
        """(column, IDs) the rows this principal may see are limited to; None: every row."""
        if self.role is Role.AFFILIATE:
            return ("source_id", (self.source_id,) if self.source_id is not None else ())
        if self.role is Role.ADVERTISER:
            return ("offer_id", self.offer_ids)
        return None

    @property
    def hidden(self) -> frozenset[str]:
        return HIDDEN_FIELDS.get(self.role, frozenset())

    @property
    def actor(self) -> Actor:
        via = f" (key {self.key_id})" if self.key_id is not None else ""
        return Actor(f"{self.name}{via}", self.user_id)

    def sees(self, row: object) -> bool:
        """Whether a row (with source_id/offer_id attributes) is within this principal's scope."""
        scope = self.scope
        return scope is None or getattr(row, scope[0], None) in scope[1]


ADMIN_TOKEN = Principal(Role.ADMIN, "admin token")
