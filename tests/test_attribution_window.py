"""A conversion is accepted only within the offer's attribution window after its click."""

from datetime import timedelta

from clicktrail.config import Settings
from clicktrail.storage import inserts
from clicktrail.storage.database import Database
from clicktrail.types import utc_now
from tests.support import Tracker, codec


def _record_old_click(tracker: Tracker, campaign: dict[str, object], age: timedelta) -> str:
    """A click as the server would have stored it `age` ago (same key, same row shape)."""
    clicked_at = utc_now() - age
    click_id = codec().mint(clicked_at)
    database = Database(Settings(database_url=tracker.server.database_url).sqlalchemy_url)
    with database.begin() as connection:
        inserts.insert_clicks(
            connection,
            [
                {
                    "click_id": click_id,
                    "created_at": clicked_at,
                    "campaign_id": campaign["id"],
                    "offer_id": campaign["offer_id"],
                    "source_id": campaign["source_id"],
                    "is_bot": False,
                    "is_unique": True,
                }
            ],
        )
    database.dispose()
    return click_id


def test_a_postback_after_the_window_is_a_410_and_logged(tracker: Tracker) -> None:
    campaign = tracker.campaign(attribution_window_days=30)
    click_id = _record_old_click(tracker, campaign, timedelta(days=31))

    response = tracker.postback(click_id=click_id, event="sale", txid="late")

    assert response.status_code == 410
    assert response.json()["error"] == "expired"
    assert tracker.api("GET", "/conversions", params={"click_id": click_id}).json()["items"] == []
    log = tracker.api("GET", "/postbacks", params={"click_id": click_id}).json()["items"]
    assert [entry["decision"] for entry in log] == ["expired"]


def test_a_postback_inside_the_window_is_accepted(tracker: Tracker) -> None:
    campaign = tracker.campaign(attribution_window_days=30)
    click_id = _record_old_click(tracker, campaign, timedelta(days=29, hours=23))
    assert tracker.postback(click_id=click_id).json()["result"] == "accepted"


def test_the_window_is_per_offer(tracker: Tracker) -> None:
    campaign = tracker.campaign(attribution_window_days=1)
    click_id = _record_old_click(tracker, campaign, timedelta(days=2))
    assert tracker.postback(click_id=click_id).status_code == 410
