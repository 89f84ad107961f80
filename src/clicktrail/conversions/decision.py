"""What happened to an inbound postback: one closed set, shared by the answer, the log and the tests."""

from enum import StrEnum

from clicktrail.types import ConversionId


class Decision(StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    UPDATED = "updated"
    MALFORMED = "malformed"
    UNKNOWN_CLICK = "unknown_click"
    EXPIRED = "expired"
    BAD_TOKEN = "bad_token"  # noqa: S105 -- a decision, not a secret
    BAD_SIGNATURE = "bad_signature"
    IP_NOT_ALLOWED = "ip_not_allowed"
    TOO_LARGE = "too_large"


class ConversionStatus(StrEnum):
    APPROVED = "approved"
    PENDING = "pending"
    REJECTED = "rejected"
    CHARGEBACK = "chargeback"


class Outcome:
    """What became of a postback. (A plain class, as ClickRequest is: clicks/request.py says why.)"""

    def __init__(
        self,
        decision: Decision,
        conversion_id: ConversionId | None = None,
        error: str | None = None,
        detail: str | None = None,
    ) -> None:
        self.decision = decision
        self.conversion_id = conversion_id
        self.error = error
        self.detail = detail

    @property
    def recorded(self) -> bool:
        return self.decision in (Decision.ACCEPTED, Decision.DUPLICATE, Decision.UPDATED)
