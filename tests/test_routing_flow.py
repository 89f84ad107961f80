"""Routing rules through a real server: saved and validated by the API, hot-reloaded, applied per
visitor on `/c/`, and deterministic for a repeat visitor."""

from urllib.parse import parse_qs, urlsplit

from tests import corpora
from tests.support import Tracker


def _ua(kind: str) -> str:
    return next(ua for ua, found in corpora.real_browsers() if found == kind)


def _offer(tracker: Tracker, name: str) -> int:
    offer = tracker.create("offers", name=name, url=f"https://{name}.example/?cid={{click_id}}")
    return int(offer["id"])


def _landing(tracker: Tracker, key: str, user_agent: str) -> str:
    response = tracker.http.get(f"/c/{key}", headers={"user-agent": user_agent})
    assert response.status_code == 302, response.text
    location = urlsplit(response.headers["location"])
    click = tracker.api("GET", f"/clicks/{parse_qs(location.query)['cid'][0]}").json()
    offer = tracker.api("GET", f"/offers/{click['offer_id']}").json()
    assert urlsplit(offer["url"]).netloc == location.netloc  # the stored click names the offer it went to
    return location.netloc.split(".")[0]


def test_a_campaign_sends_phones_to_a_split_and_everyone_else_to_its_offer(tracker: Tracker) -> None:
    campaign = tracker.campaign(url="https://main.example/?cid={click_id}")
    phones_a, phones_b = _offer(tracker, "phones-a"), _offer(tracker, "phones-b")
    routing = {
        "rules": [
            {
                "name": "phones",
                "when": {"device_type": ["mobile"]},
                "offers": [{"offer_id": phones_a, "weight": 1}, {"offer_id": phones_b, "weight": 1}],
            }
        ]
    }

    saved = tracker.api("PATCH", f"/campaigns/{campaign['id']}", json={"routing": routing})

    assert saved.status_code == 200, saved.text
    assert saved.json()["routing"]["rules"][0]["when"] == {"device_type": ["mobile"]}
    assert _landing(tracker, campaign["key"], _ua("desktop")) == "main"
    first = _landing(tracker, campaign["key"], _ua("mobile"))
    assert first in ("phones-a", "phones-b")
    assert {_landing(tracker, campaign["key"], _ua("mobile")) for _ in range(5)} == {first}


def test_clearing_the_routing_sends_everyone_to_the_campaigns_offer_again(tracker: Tracker) -> None:
    campaign = tracker.campaign(url="https://main.example/?cid={click_id}")
    other = _offer(tracker, "other")
    rule = {"when": {"device_type": ["mobile", "desktop"]}, "offers": [{"offer_id": other}]}
    tracker.api("PATCH", f"/campaigns/{campaign['id']}", json={"routing": {"rules": [rule]}})
    assert _landing(tracker, campaign["key"], _ua("desktop")) == "other"

    cleared = tracker.api("PATCH", f"/campaigns/{campaign['id']}", json={"routing": None})

    assert cleared.json()["routing"] is None
    assert _landing(tracker, campaign["key"], _ua("desktop")) == "main"


def test_routing_to_an_offer_that_does_not_exist_or_without_conditions_is_refused(tracker: Tracker) -> None:
    campaign = tracker.campaign()
    unknown = {"default": [{"offer_id": 999_999}]}
    empty = {"rules": [{"when": {}, "offers": [{"offer_id": campaign["offer_id"]}]}]}

    missing = tracker.api("PATCH", f"/campaigns/{campaign['id']}", json={"routing": unknown})
    no_condition = tracker.api("PATCH", f"/campaigns/{campaign['id']}", json={"routing": empty})

    assert missing.status_code == 422, missing.text
    assert "999999" in missing.json()["detail"]
    assert no_condition.status_code == 422, no_condition.text
