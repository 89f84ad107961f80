"""Reading a stored click back."""

from typing import Any

from sqlalchemy import Row

from clicktrail.errors import NotFound, ValidationFailed
from clicktrail.ids import ClickIdCodec, InvalidClickId
from clicktrail.storage import event_store
from clicktrail.storage.database import Database


def get_click(database: Database, codec: ClickIdCodec, text: str) -> Row[Any]:
    try:
        click_id = codec.verify(text)
    except InvalidClickId as exc:
        raise ValidationFailed(str(exc), {"click_id": str(exc)}) from exc
    with database.begin() as connection:
        row = event_store.get_click(connection, click_id)
    if row is None:
        raise NotFound(f"no click {click_id}")
    return row
