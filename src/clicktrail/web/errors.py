"""Error codes and postback decisions mapped to HTTP statuses: the one table."""

from clicktrail.clicks.landing import Refusal
from clicktrail.conversions.decision import Decision

ERROR_STATUS: dict[str, int] = {
    "bad_request": 400,
    "validation_error": 422,
    "invalid_query": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "conflict": 409,
    "payload_too_large": 413,
    "unsupported_media_type": 415,
    "rate_limited": 429,
    "storage_unavailable": 503,
    "overloaded": 503,
    "reports_unavailable": 503,
    "internal_error": 500,
}

DECISION_STATUS: dict[Decision, int] = {
    Decision.ACCEPTED: 200,
    Decision.DUPLICATE: 200,
    Decision.UPDATED: 200,
    Decision.MALFORMED: 400,
    Decision.UNKNOWN_CLICK: 404,
    Decision.EXPIRED: 410,
    Decision.BAD_TOKEN: 403,
    Decision.BAD_SIGNATURE: 403,
    Decision.IP_NOT_ALLOWED: 403,
    Decision.TOO_LARGE: 413,
}

LANDER_STATUS: dict[Refusal, int] = {
    Refusal.MISSING_CLICK_ID: 400,
    Refusal.BAD_CLICK_ID: 400,
    Refusal.UNKNOWN_CLICK: 404,
    Refusal.NO_LANDER: 409,
    Refusal.NO_SUCH_OFFER: 404,
}


def status_for(code: str) -> int:
    return ERROR_STATUS.get(code, 400)
