"""An inbound postback, parsed once at the edge with every limit checked here."""

import re
from decimal import Decimal

from clicktrail.conversions.decision import ConversionStatus
from clicktrail.money import InvalidMoney, parse_currency, parse_money
from clicktrail.text import clean

DEFAULT_EVENT = "conversion"
TXID_MAX = 255
_EVENT = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")


class MalformedPostback(ValueError):
    def __init__(self, error: str, detail: str) -> None:
        super().__init__(detail)
        self.error = error
        self.detail = detail


class PostbackRequest:
    """A postback's parameters, checked. (A plain class, as ClickRequest is: clicks/request.py says
    why.)"""

    def __init__(
        self,
        click_id: str,
        event: str,
        revenue: Decimal | None,
        currency: str | None,
        txid: str,
        status: ConversionStatus,
        token: str | None,
    ) -> None:
        self.click_id = click_id
        self.event = event
        self.revenue = revenue
        self.currency = currency
        self.txid = txid
        self.status = status
        self.token = token


def parse_postback(params: dict[str, str]) -> PostbackRequest:
    click_id = (params.get("click_id") or "").strip()
    if not click_id:
        raise MalformedPostback("missing_click_id", "the click_id parameter is required")

    event = (params.get("event") or DEFAULT_EVENT).strip().lower()
    if not _EVENT.fullmatch(event):
        raise MalformedPostback(
            "bad_event", "event is a slug of up to 64 characters: letters, digits, '_', '-', '.'"
        )

    revenue: Decimal | None = None
    if params.get("payout", "").strip():
        try:
            revenue = parse_money(params["payout"])
        except InvalidMoney as exc:
            raise MalformedPostback("bad_amount", f"payout: {exc}") from exc

    currency: str | None = None
    if params.get("currency", "").strip():
        try:
            currency = parse_currency(params["currency"])
        except InvalidMoney as exc:
            raise MalformedPostback("bad_currency", str(exc)) from exc

    status_text = (params.get("status") or ConversionStatus.APPROVED).strip().lower()
    try:
        status = ConversionStatus(status_text)
    except ValueError as unknown:
        allowed = ", ".join(s.value for s in ConversionStatus)
        raise MalformedPostback("bad_status", f"status must be one of {allowed}") from unknown

    raw_txid = params.get("txid") or ""
    if len(raw_txid) > TXID_MAX:
        raise MalformedPostback("bad_txid", f"txid is at most {TXID_MAX} characters")
    txid = clean(raw_txid.strip(), TXID_MAX) or ""

    token = params.get("token")
    return PostbackRequest(click_id, event, revenue, currency, txid, status, token)
