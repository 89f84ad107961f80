"""Money: exact decimals, parsed strictly, stored as integer millionths."""

from decimal import Decimal, InvalidOperation

SCALE = 6
_QUANTUM = Decimal(1).scaleb(-SCALE)
_CENTS = Decimal("0.01")
MAX_AMOUNT = Decimal("1000000000000")  # a trillion: anything larger is a typo or an attack
_MAX_TEXT = 40


class InvalidMoney(ValueError):
    pass


def parse_money(value: str | int | float | Decimal, *, allow_negative: bool = False) -> Decimal:
    """Parse an amount given as text or number; refuse floats' approximations, NaN and excess precision."""
    if isinstance(value, bool):
        raise InvalidMoney("an amount is a number, not true/false")
    if isinstance(value, float):
        # JSON numbers arrive as floats; repr gives the shortest text that reads back the same.
        value = repr(value)
    text = str(value).strip()
    if not text or len(text) > _MAX_TEXT:
        raise InvalidMoney("an amount must be a decimal number such as 12.50")
    try:
        amount = Decimal(text)
    except InvalidOperation as exc:
        raise InvalidMoney(f"not a decimal number: {text[:20]!r}") from exc
    if not amount.is_finite():
        raise InvalidMoney("an amount must be a finite number")
    if amount < 0 and not allow_negative:
        raise InvalidMoney("an amount cannot be negative")
    if abs(amount) >= MAX_AMOUNT:
        raise InvalidMoney("an amount must be below 1,000,000,000,000")
    if amount != amount.quantize(_QUANTUM):
        raise InvalidMoney(f"an amount has at most {SCALE} decimal places")
    return amount


def to_micros(amount: Decimal) -> int:
    return int(amount.scaleb(SCALE))


def from_micros(micros: int) -> Decimal:
    return Decimal(micros).scaleb(-SCALE)


def format_money(amount: Decimal) -> str:
    """Plain decimal text with at least two places: 12.5 -> '12.50', 0.001 -> '0.001'."""
    cents = amount.quantize(_CENTS)
    return format(cents if cents == amount else amount.normalize(), "f")


def parse_currency(value: str) -> str:
    code = value.strip().upper()
    if len(code) != 3 or not code.isascii() or not code.isalpha():
        raise InvalidMoney("a currency is a three-letter ISO 4217 code such as USD")
    return code
