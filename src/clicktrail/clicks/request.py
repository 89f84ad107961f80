"""A tracking-link visit, parsed once at the edge."""

from dataclasses import dataclass
from decimal import Decimal
from urllib.parse import parse_qsl

from clicktrail.macros import SUB_IDS
from clicktrail.money import InvalidMoney, parse_money
from clicktrail.storage.schema import SUB_MAX
from clicktrail.text import clean

USER_AGENT_MAX = 512
REFERRER_MAX = 1024


@dataclass(frozen=True, slots=True)
class ClickRequest:
    key: str
    subs: tuple[str | None, ...]
    external_id: str | None
    cost: Decimal | None
    ip: str | None
    user_agent: str | None
    referrer: str | None


def parse_query(query_string: bytes) -> dict[str, str]:
    """The first value of each parameter; malformed escapes become U+FFFD, never an error."""
    params: dict[str, str] = {}
    for name, value in parse_qsl(query_string.decode("utf-8", "replace"), keep_blank_values=True):
        params.setdefault(name, value)
    return params


def parse_click_request(
    key: str, query_string: bytes, ip: str | None, user_agent: str | None, referrer: str | None
) -> ClickRequest:
    params = parse_query(query_string)
    cost: Decimal | None = None
    if params.get("cost"):
        try:
            cost = parse_money(params["cost"])
        except InvalidMoney:
            cost = None  # a source's bad cost macro must not cost the visitor the redirect
    return ClickRequest(
        key=key,
        subs=tuple(clean(params.get(name), SUB_MAX) for name in SUB_IDS),
        external_id=clean(params.get("external_id"), SUB_MAX),
        cost=cost,
        ip=ip,
        user_agent=clean(user_agent, USER_AGENT_MAX),
        referrer=clean(referrer, REFERRER_MAX),
    )
