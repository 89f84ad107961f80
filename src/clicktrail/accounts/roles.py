"""Who may do what: the five roles, what each route requires, and which rows and fields a scoped role
(affiliate, advertiser) never sees. The web layer applies these; nothing else decides access."""

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Role(StrEnum):
    ADMIN = "admin"
    """Everything, users and API keys included."""
    MANAGER = "manager"
    """Everything but users and API keys."""
    ANALYST = "analyst"
    """Reads everything, changes nothing."""
    AFFILIATE = "affiliate"
    """Bound to one source: its clicks, conversions and payouts, its campaigns' tracking links."""
    ADVERTISER = "advertiser"
    """Bound to one or more offers: their conversions."""


SCOPED_ROLES = frozenset({Role.AFFILIATE, Role.ADVERTISER})

# The full-access roles that meet each requirement: admin ⊃ manager ⊃ analyst.
_AT_LEAST: dict[Role, frozenset[Role]] = {
    Role.ADMIN: frozenset({Role.ADMIN}),
    Role.MANAGER: frozenset({Role.ADMIN, Role.MANAGER}),
    Role.ANALYST: frozenset({Role.ADMIN, Role.MANAGER, Role.ANALYST}),
}

# Fields a scoped role never receives, wherever they appear (rows, totals, nested history).
# An affiliate never sees what the owner earns or spends; an advertiser never sees what the owner pays
# its affiliates nor what traffic costs.
HIDDEN_FIELDS: dict[Role, frozenset[str]] = {
    Role.AFFILIATE: frozenset(
        {
            "revenue",
            "cost",
            "profit",
            "roi",
            "epc",
            "cpc",
            "cost_model",
            "cost_value",
            "routing",
            "postback_token",
        }
    ),
    Role.ADVERTISER: frozenset(
        {
            "payout",
            "cost",
            "profit",
            "roi",
            "cpc",
            "cost_model",
            "cost_value",
            "routing",
            "source_id",
            "source",
            "source_name",
        }
    ),
}


@dataclass(frozen=True, slots=True)
class Rule:
    """What a route requires: a full-access role at least `required`, or one of the `scoped` roles,
    which then sees only its own rows and never its hidden fields."""

    required: Role
    scoped: frozenset[Role] = frozenset()

    def allows(self, role: Role) -> bool:
        return role in _AT_LEAST[self.required] or role in self.scoped

    @property
    def roles(self) -> list[Role]:
        return [role for role in Role if self.allows(role)]

    def describe(self) -> str:
        text = {
            Role.ADMIN: "admin",
            Role.MANAGER: "manager or admin",
            Role.ANALYST: "analyst, manager or admin",
        }[self.required]
        for role in sorted(self.scoped):
            hidden = ", ".join(sorted(HIDDEN_FIELDS[role]))
            own = "its source's" if role is Role.AFFILIATE else "its offers'"
            text += f"; {role} ({own} rows only, without {hidden})"
        return text


ADMIN_ONLY = Rule(Role.ADMIN)
CONFIGURE = Rule(Role.MANAGER)
READ = Rule(Role.ANALYST)


def redact(value: Any, hidden: frozenset[str]) -> Any:
    """`value` (JSON-like) without the hidden keys, at any depth."""
    if not hidden:
        return value
    if isinstance(value, Mapping):
        return {key: redact(item, hidden) for key, item in value.items() if key not in hidden}
    if isinstance(value, list):
        return [redact(item, hidden) for item in value]
    return value
