"""The few shapes the rest of clicktrail is built from."""

from collections.abc import Callable
from datetime import UTC, datetime
from typing import NewType

ClickId = NewType("ClickId", str)
ConversionId = NewType("ConversionId", str)
OfferId = NewType("OfferId", int)
SourceId = NewType("SourceId", int)
CampaignId = NewType("CampaignId", int)
LanderId = NewType("LanderId", int)

Clock = Callable[[], datetime]
"""Returns the current time, timezone-aware in UTC. Injected so tests can be exact."""


def utc_now() -> datetime:
    return datetime.now(UTC)
