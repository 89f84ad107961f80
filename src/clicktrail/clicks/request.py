"""A tracking-link visit, parsed once at the edge."""

import re
import string
from decimal import Decimal
from urllib.parse import unquote

from clicktrail.macros import SUB_IDS
from clicktrail.money import InvalidMoney, parse_money
from clicktrail.storage.schema import SUB_MAX
from clicktrail.text import clean

USER_AGENT_MAX = 512
REFERRER_MAX = 1024
VISITOR_COOKIE = "ct_vid"
"""The tracker's first-party cookie naming the visitor (its visitor_id), for uniqueness across IPs."""
_VISITOR_ID = re.compile(r"[0-9a-f]{16}")


class ClickRequest:
    """A plain class rather than a dataclass: compiled with mypyc (clicktrail/compiled.py), its
    `__init__` is native, where a dataclass keeps its generated `__init__` interpreted (and a frozen
    one sets each field through `object.__setattr__`). This and Visitor as plain classes: 9.8% fewer
    instructions a click, and PostbackRequest, RawPostback and Outcome 4.3% fewer a postback
    (scripts/cpu_in_process.py --instructions --base-src <a checkout at b2bc404, compiled>/src)."""

    def __init__(
        self,
        key: str,
        subs: tuple[str | None, ...],
        external_id: str | None,
        cost: Decimal | None,
        ip: str | None,
        user_agent: str | None,
        referrer: str | None,
        visitor_cookie: str | None = None,
    ) -> None:
        self.key = key
        self.subs = subs
        self.external_id = external_id
        self.cost = cost
        self.ip = ip
        self.user_agent = user_agent
        self.referrer = referrer
        self.visitor_cookie = visitor_cookie


def parse_query(query_string: bytes) -> dict[str, str]:
    """The first value of each parameter; malformed escapes become U+FFFD, never an error.

    What `parse_qsl(..., keep_blank_values=True)` gives, at a third of its cost on a click: only the
    parts that hold an escape are unescaped."""
    params: dict[str, str] = {}
    for field in query_string.decode("utf-8", "replace").split("&"):
        if not field:
            continue
        name, _, value = field.partition("=")
        if "%" in name or "+" in name:
            name = _unescape(name)
        if name in params:
            continue
        if "%" in value or "+" in value:
            value = _unescape(value)
        params[name] = value
    return params


def _unescape(text: str) -> str:
    """`unquote_plus(text, errors="replace")`, a fraction of its cost on ASCII text: unquote splits its
    input into ASCII and non-ASCII runs with a regular expression and decodes each ASCII run as
    `unquote_to_bytes(run).decode("utf-8", "replace")`; ASCII text is one such run, and
    unquote_to_bytes's loop is done here again so that it runs compiled (3.2% of the workers' samples
    under wrk with the standard library's Python, 2.1 to 2.3% now: scripts/profile_clicks.py;
    BENCHMARKS.md, "Session of 2026-12-07 (14:41 UTC)")."""
    text = text.replace("+", " ")
    if not text.isascii():
        return unquote(text, errors="replace")
    pieces = text.split("%")
    parts = [pieces[0].encode("ascii")]
    for piece in pieces[1:]:
        byte = _ESCAPED.get(piece[:2])
        if byte is None:  # not an escape: the % stays
            parts += (b"%", piece.encode("ascii"))
        else:
            parts += (byte, piece[2:].encode("ascii"))
    return b"".join(parts).decode("utf-8", "replace")


_ESCAPED = {a + b: bytes.fromhex(a + b) for a in string.hexdigits for b in string.hexdigits}
"""Each two hex digits' byte, by their text in either case (what unquote_to_bytes looks up)."""


def visitor_cookie(cookie_header: str | None) -> str | None:
    """Our visitor cookie's value when the request carries a well-formed one."""
    if not cookie_header or VISITOR_COOKIE not in cookie_header:
        return None
    for part in cookie_header.split(";"):
        name, _, value = part.strip().partition("=")
        if name == VISITOR_COOKIE and _VISITOR_ID.fullmatch(value):
            return value
    return None


def parse_click_request(
    key: str,
    query_string: bytes,
    ip: str | None,
    user_agent: str | None,
    referrer: str | None,
    cookie_header: str | None = None,
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
        # A list: 0.4 µs < a generator. Most links fill two or three of the ten sub IDs: the absent
        # ones skip clean()'s call.
        subs=tuple(
            [None if (value := params.get(name)) is None else clean(value, SUB_MAX) for name in SUB_IDS]
        ),
        external_id=clean(params.get("external_id"), SUB_MAX),
        cost=cost,
        ip=ip,
        user_agent=clean(user_agent, USER_AGENT_MAX),
        referrer=clean(referrer, REFERRER_MAX),
        visitor_cookie=visitor_cookie(cookie_header),
    )
