"""Cleaning visitor-supplied text before it is stored."""

_FORBIDDEN = dict.fromkeys(range(0x20), None) | {0x7F: None}


def clean(value: str | None, limit: int) -> str | None:
    """Drop control characters (PostgreSQL refuses NUL; CR/LF have no place in a value) and cap length."""
    if value is None:
        return None
    # Almost every value is printable, and checking that costs a tenth of translating it.
    cleaned = (value if value.isprintable() else value.translate(_FORBIDDEN))[:limit]
    return cleaned or None
