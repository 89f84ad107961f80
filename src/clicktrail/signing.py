"""Signed postbacks: an HMAC-SHA256 over the postback's parameters and a timestamp, so a postback
cannot be forged without the offer's secret nor replayed once its five-minute window has passed.

The message is every parameter except `sig`, sorted by name, each name and value percent-encoded as
RFC 3986 says (PHP's `rawurlencode`, Python's `quote(safe="-._~")`), written `name=value` and joined
with `&`. `ts` is the Unix time in seconds and is part of the message. `sig` is the lowercase hex
HMAC-SHA256 of the message under the secret (docs/postback-auth.md has PHP, Node and Python).

Standard library only: the merchants' client (clicktrail.client) signs with it too.
"""

import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import quote

SIGNATURE_PARAM = "sig"
TIMESTAMP_PARAM = "ts"
WINDOW_SECONDS = 300
_UNRESERVED = "-._~"


def canonical_message(params: Mapping[str, str]) -> bytes:
    pairs = sorted((name, value) for name, value in params.items() if name != SIGNATURE_PARAM)
    return "&".join(
        f"{quote(name, safe=_UNRESERVED)}={quote(value, safe=_UNRESERVED)}" for name, value in pairs
    ).encode()


def signature(params: Mapping[str, str], secret: str) -> str:
    return hmac.new(secret.encode(), canonical_message(params), hashlib.sha256).hexdigest()


def sign(params: Mapping[str, str], secret: str, now: float) -> dict[str, str]:
    """The parameters with `ts` (now) and `sig` added."""
    stamped = {**params, TIMESTAMP_PARAM: str(int(now))}
    return {**stamped, SIGNATURE_PARAM: signature(stamped, secret)}
