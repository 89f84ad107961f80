"""Who may report a conversion for an offer: an IP allowlist, a shared token, a signed request.

Each is optional and set per offer; when several are set, all must pass. Checked in that order, so
the log names the first reason a postback was refused.
"""

import hmac
import ipaddress
from collections.abc import Mapping
from datetime import datetime

from clicktrail.catalog.routes import OfferTerms
from clicktrail.conversions.decision import Decision, Outcome
from clicktrail.signing import SIGNATURE_PARAM, TIMESTAMP_PARAM, WINDOW_SECONDS, signature


def refusal(
    offer: OfferTerms, params: Mapping[str, str], token: str | None, ip: str | None, now: datetime
) -> Outcome | None:
    """Why this postback may not report a conversion for `offer`, or None when it may."""
    if offer.postback_networks and not _allowed(ip, offer):
        return Outcome(
            Decision.IP_NOT_ALLOWED,
            error="ip_not_allowed",
            detail=f"{ip or 'an unknown address'} is not in the offer's postback IP allowlist",
        )
    if offer.postback_token is not None and not hmac.compare_digest(
        (token or "").encode(), offer.postback_token.encode()
    ):
        return Outcome(Decision.BAD_TOKEN, error="bad_token", detail="the token does not match the offer's")
    if offer.postback_secret is not None:
        return _signature_refusal(offer.postback_secret, params, now)
    return None


def _allowed(ip: str | None, offer: OfferTerms) -> bool:
    try:
        address = ipaddress.ip_address(ip or "")
    except ValueError:
        return False
    return any(address in network for network in offer.postback_networks)


def _signature_refusal(secret: str, params: Mapping[str, str], now: datetime) -> Outcome | None:
    given = params.get(SIGNATURE_PARAM)
    stamp = params.get(TIMESTAMP_PARAM)
    if not given or not stamp:
        return _bad_signature("this offer takes signed postbacks: add ts and sig (docs/postback-auth.md)")
    try:
        signed_at = int(stamp)
    except ValueError:
        return _bad_signature("ts is the Unix time in whole seconds")
    skew = now.timestamp() - signed_at
    if abs(skew) > WINDOW_SECONDS:
        return Outcome(
            Decision.BAD_SIGNATURE,
            error="signature_expired",
            detail=(
                f"ts is {abs(skew):.0f} s {'behind' if skew > 0 else 'ahead of'} the tracker's clock;"
                f" a signature is valid for {WINDOW_SECONDS} s"
            ),
        )
    if not hmac.compare_digest(given.lower().encode(), signature(params, secret).encode()):
        return _bad_signature("the signature does not match the parameters and the offer's secret")
    return None


def _bad_signature(detail: str) -> Outcome:
    return Outcome(Decision.BAD_SIGNATURE, error="bad_signature", detail=detail)
