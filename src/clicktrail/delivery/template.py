"""The values an outbound postback's macros are filled with, and the filling itself."""

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from clicktrail.macros import SUB_IDS, fill
from clicktrail.money import format_money

MacroValues = Mapping[str, str | None]

_SAMPLE_CONVERSION: Mapping[str, Any] = {
    "click_id": "test-click-id",
    "external_id": "test-external-id",
    "conversion_id": "test-conversion-id",
    "event": "test",
    "txid": "test-txid",
    "revenue": Decimal("1.00"),
    "payout": Decimal("0.50"),
    "currency": "USD",
    "campaign_id": 0,
    "offer_id": 0,
    "country": "US",
    **{name: f"test-{name}" for name in SUB_IDS},
}


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, Decimal):
        return format_money(value)
    return str(value)


def conversion_values(conversion: Mapping[str, Any], source_id: int, status: str) -> dict[str, str | None]:
    """Macro values for one conversion as queued with `status` (the status the source is told)."""
    names = ("click_id", "external_id", "conversion_id", "event", "txid", "revenue", "payout", "currency")
    values = {name: _text(conversion[name]) for name in names}
    values.update(
        {name: _text(conversion[name]) for name in (*SUB_IDS, "campaign_id", "offer_id", "country")}
    )
    values["source_id"] = str(source_id)
    values["status"] = status
    return values


def sample_values(source_id: int) -> dict[str, str | None]:
    """Made-up values for a test postback: recognisably not a real conversion."""
    return conversion_values(_SAMPLE_CONVERSION, source_id, "approved")


def postback_url(template: str, values: MacroValues) -> str:
    return fill(template, values)
