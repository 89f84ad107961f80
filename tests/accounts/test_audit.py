"""The audit log: every configuration change names who made it, when, and the object before and after."""

from tests.accounts.support import account, make_user
from tests.support import Tracker


def test_catalog_changes_are_logged_with_before_and_after(tracker: Tracker) -> None:
    manager = account(tracker, "manager")
    created = manager.api(
        "POST",
        "/offers",
        json={"name": "Audited", "url": "https://m.example/", "postback_token": "s3cret-token"},
    ).json()
    manager.api("PATCH", f"/offers/{created['id']}", json={"payout": "3.50"})
    entries = tracker.api("GET", "/audit", params={"object_type": "offer", "object_id": created["id"]}).json()
    update, create = entries["items"]
    assert create["action"] == "create"
    assert create["actor"].startswith(manager.user["username"])
    assert create["actor_user_id"] == manager.user["id"]
    assert create["before"] is None
    assert create["after"]["name"] == "Audited"
    assert create["after"]["postback_token"] == "***"
    assert update["action"] == "update"
    assert update["before"]["payout"] == "0.000000"  # exact decimals, as stored
    assert update["after"]["payout"] == "3.500000"
    assert update["at"] >= create["at"]


def test_user_and_key_changes_are_logged_and_secrets_never(tracker: Tracker) -> None:
    user = make_user(tracker, "analyst")
    tracker.api("PATCH", f"/users/{user['id']}", json={"disabled": True})
    key = tracker.api("POST", "/keys", json={"user_id": user["id"], "name": "k"}).json()
    tracker.api("DELETE", f"/keys/{key['id']}")
    users = tracker.api("GET", "/audit", params={"object_type": "user", "object_id": user["id"]}).json()
    assert [e["action"] for e in users["items"]] == ["disable", "create"]
    assert users["items"][1]["actor"] == "admin token"
    assert users["items"][1]["after"]["password_hash"] == "***"
    keys = tracker.api("GET", "/audit", params={"object_type": "api_key", "object_id": key["id"]}).json()
    assert [e["action"] for e in keys["items"]] == ["revoke", "create"]
    assert key["secret"] not in str(keys)
    assert keys["items"][1]["after"]["secret_hash"] == "***"


def test_the_audit_log_is_for_managers_and_admins(tracker: Tracker) -> None:
    assert account(tracker, "analyst").api("GET", "/audit").status_code == 403
    assert account(tracker, "manager").api("GET", "/audit").status_code == 200
