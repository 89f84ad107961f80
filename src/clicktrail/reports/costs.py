"""Cost updates: "campaign 7 actually cost 1,234.56 from the 1st to the 7th", entered after the fact
(traffic sources bill later than they send). Reports spread the amount over the campaign's clicks in
that period, to the millionth, so cost per sub ID, country or day adds up to exactly the amount; it
replaces whatever those clicks and their CPA conversions cost before. The newest update wins where
two overlap."""

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from pydantic import AwareDatetime, BaseModel, ConfigDict, model_validator

from clicktrail.catalog.models import MoneyField
from clicktrail.errors import NotFound
from clicktrail.storage import catalog_store
from clicktrail.storage.database import Database
from clicktrail.storage.schema import campaigns
from clicktrail.types import Clock


class CostUpdateInput(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    start: AwareDatetime
    end: AwareDatetime
    amount: MoneyField

    @model_validator(mode="after")
    def _ordered(self) -> "CostUpdateInput":
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


@dataclass(frozen=True, slots=True)
class CostUpdate:
    id: int
    campaign_id: int
    start: datetime
    end: datetime
    amount: Decimal
    created_at: datetime


def record_cost_update(
    database: Database, clock: Clock, campaign_id: int, data: CostUpdateInput
) -> CostUpdate:
    with database.begin() as connection:
        if catalog_store.get_row(connection, campaigns, campaign_id) is None:
            raise NotFound(f"no campaign with id {campaign_id}")
        row = catalog_store.insert_cost_update(
            connection,
            {"campaign_id": campaign_id, "start": data.start, "end": data.end, "amount": data.amount,
             "created_at": clock()},
        )  # fmt: skip
    return CostUpdate(**row._asdict())


def cost_updates(database: Database, campaign_id: int | None = None) -> list[CostUpdate]:
    with database.begin() as connection:
        return [
            CostUpdate(**row._asdict()) for row in catalog_store.list_cost_updates(connection, campaign_id)
        ]
