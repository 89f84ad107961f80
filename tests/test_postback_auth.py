"""Per-offer postback authentication: an IP allowlist, a shared token and signed postbacks (HMAC-SHA256
with a timestamp), each refusal a 403 with its reason, logged, and nothing recorded."""

import contextlib
import io
import re
import shutil
import subprocess
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from clicktrail.catalog.routes import OfferTerms
from clicktrail.client import send_postback
from clicktrail.conversions import auth
from clicktrail.signing import WINDOW_SECONDS, sign
from clicktrail.types import OfferId
from tests.support import Tracker

SECRET = "merchant-secret-0123456789"
DOCS = Path(__file__).parent.parent / "docs" / "postback-auth.md"


def _signed_campaign(tracker: Tracker, **offer: Any) -> tuple[dict[str, Any], str]:
    campaign = tracker.campaign(postback_secret=SECRET, **offer)
    return campaign, tracker.click(campaign["key"])


def _decisions(tracker: Tracker, click_id: str) -> list[str]:
    log = tracker.api("GET", "/postbacks", params={"click_id": click_id}).json()["items"]
    return [entry["decision"] for entry in reversed(log)]


def _conversions(tracker: Tracker, click_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = tracker.api("GET", "/conversions", params={"click_id": click_id}).json()[
        "items"
    ]
    return items


def test_a_correctly_signed_postback_is_accepted(tracker: Tracker) -> None:
    _, click_id = _signed_campaign(tracker)
    params = sign(
        {"click_id": click_id, "event": "sale", "payout": "9.90", "txid": "o 1"}, SECRET, time.time()
    )
    answer = tracker.http.get("/postback", params=params)
    assert answer.status_code == 200, answer.text
    assert answer.json()["result"] == "accepted"


def test_unsigned_tampered_and_stale_postbacks_are_refused_and_logged(tracker: Tracker) -> None:
    _, click_id = _signed_campaign(tracker)
    base = {"click_id": click_id, "event": "sale", "payout": "9.90", "txid": "o-2"}

    unsigned = tracker.http.get("/postback", params=base)
    tampered = tracker.http.get("/postback", params={**sign(base, SECRET, time.time()), "payout": "999"})
    wrong_key = tracker.http.get("/postback", params=sign(base, "another-secret-of-16+", time.time()))
    # Well past the window: `ts` is whole seconds and the server reads its clock later, so a request
    # signed 301 s ahead can arrive exactly 300 s ahead, inside it (the boundary has its own test).
    stale = tracker.http.get("/postback", params=sign(base, SECRET, time.time() - WINDOW_SECONDS - 10))
    future = tracker.http.get("/postback", params=sign(base, SECRET, time.time() + WINDOW_SECONDS + 10))

    for answer in (unsigned, tampered, wrong_key, stale, future):
        assert answer.status_code == 403, answer.text
        assert answer.json()["decision"] == "bad_signature"
    assert unsigned.json()["error"] == "bad_signature"
    assert "ts and sig" in unsigned.json()["detail"]
    assert tampered.json()["error"] == "bad_signature"
    assert stale.json()["error"] == "signature_expired"
    assert "behind" in stale.json()["detail"]
    assert "ahead" in future.json()["detail"]
    assert _conversions(tracker, click_id) == []
    assert _decisions(tracker, click_id) == ["bad_signature"] * 5


def test_a_signature_is_valid_for_exactly_the_window_either_side_of_the_trackers_clock() -> None:
    offer = OfferTerms(
        id=OfferId(1),
        url="https://m.example/",
        revenue=Decimal(0),
        payout=Decimal(0),
        currency="USD",
        attribution_window_days=30,
        postback_token=None,
        postback_secret=SECRET,
    )
    now = datetime(2026, 12, 3, 12, 0, 0, tzinfo=UTC)
    base = {"click_id": "c", "event": "sale", "txid": "t"}

    def verdict(offset_seconds: int) -> str | None:
        params = sign(base, SECRET, now.timestamp() + offset_seconds)
        refused = auth.refusal(offer, params, None, "127.0.0.1", now)
        return None if refused is None else refused.error

    assert [verdict(s) for s in (-WINDOW_SECONDS, 0, WINDOW_SECONDS)] == [None, None, None]
    assert verdict(-WINDOW_SECONDS - 1) == "signature_expired"
    assert verdict(WINDOW_SECONDS + 1) == "signature_expired"


def test_a_replay_inside_the_window_is_only_a_duplicate(tracker: Tracker) -> None:
    _, click_id = _signed_campaign(tracker)
    params = sign({"click_id": click_id, "event": "sale", "txid": "o-3"}, SECRET, time.time())
    first = tracker.http.get("/postback", params=params).json()
    replay = tracker.http.get("/postback", params=params).json()
    assert (first["result"], replay["result"]) == ("accepted", "duplicate")
    assert len(_conversions(tracker, click_id)) == 1


def test_a_signed_post_body_is_verified_over_the_merged_parameters(tracker: Tracker) -> None:
    _, click_id = _signed_campaign(tracker)
    signed = sign({"click_id": click_id, "event": "lead", "txid": "o-4"}, SECRET, time.time())
    query = {"click_id": click_id}
    body = {name: value for name, value in signed.items() if name != "click_id"}
    answer = tracker.http.post("/postback", params=query, data=body)
    assert answer.json()["result"] == "accepted"


def test_the_python_client_signs_each_attempt(tracker: Tracker) -> None:
    _, click_id = _signed_campaign(tracker)
    answer = send_postback(tracker.server.base_url, click_id, event="sale", txid="o-5", secret=SECRET)
    assert answer.result == "accepted"
    unsigned = send_postback(tracker.server.base_url, click_id, event="sale", txid="o-6")
    assert unsigned.error == "bad_signature"
    assert unsigned.status_code == 403


def test_an_ip_allowlist_refuses_other_addresses(tracker: Tracker) -> None:
    elsewhere = tracker.campaign(postback_ips=["10.0.0.0/8", "2001:db8::/32"])
    refused_click = tracker.click(elsewhere["key"])
    refused = tracker.postback(click_id=refused_click, txid="ip-1")
    assert refused.status_code == 403
    assert refused.json()["decision"] == "ip_not_allowed"
    assert "127.0.0.1" in refused.json()["detail"]
    assert _decisions(tracker, refused_click) == ["ip_not_allowed"]

    here = tracker.campaign(postback_ips=["127.0.0.1"])
    assert tracker.postback(click_id=tracker.click(here["key"]), txid="ip-2").json()["result"] == "accepted"


def test_every_configured_check_must_pass(tracker: Tracker) -> None:
    _, click_id = _signed_campaign(tracker, postback_token="shared-token-1", postback_ips=["127.0.0.0/8"])
    no_token = sign({"click_id": click_id, "txid": "all-1"}, SECRET, time.time())
    assert tracker.http.get("/postback", params=no_token).json()["decision"] == "bad_token"
    both = sign({"click_id": click_id, "txid": "all-1", "token": "shared-token-1"}, SECRET, time.time())
    assert tracker.http.get("/postback", params=both).json()["result"] == "accepted"


def test_bad_allowlists_and_short_secrets_are_refused_when_saved(tracker: Tracker) -> None:
    offer = {"name": "Offer", "url": "https://m.example/?c={click_id}"}
    bad_ip = tracker.api("POST", "/offers", json={**offer, "postback_ips": ["10.0.0.0/33"]})
    short = tracker.api("POST", "/offers", json={**offer, "postback_secret": "short"})
    assert bad_ip.status_code == 422
    assert "10.0.0.0/33" in bad_ip.text
    assert short.status_code == 422
    saved = tracker.api("POST", "/offers", json={**offer, "postback_ips": ["10.1.2.3/8", "10.0.0.0/8"]})
    assert saved.json()["postback_ips"] == ["10.0.0.0/8"]


def _doc_block(language: str, index: int = 0) -> str:
    blocks = re.findall(rf"```{language}\n(.*?)```", DOCS.read_text(), flags=re.S)
    return str(blocks[index])


def test_the_documented_python_example_is_accepted(tracker: Tracker) -> None:
    _, click_id = _signed_campaign(tracker)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(  # noqa: S102 -- the documentation's own example, run as a merchant would
            _doc_block("python", 1),
            {"TRACKER": tracker.server.base_url, "CLICK_ID": click_id, "SECRET": SECRET},
        )
    assert '"result":"accepted"' in printed.getvalue()


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_the_documented_node_example_is_accepted(tracker: Tracker) -> None:
    _, click_id = _signed_campaign(tracker)
    prelude = (
        f"const TRACKER = {tracker.server.base_url!r}; const CLICK_ID = {click_id!r}; "
        f"const SECRET = {SECRET!r};\n"
    )
    node = subprocess.run(
        ["node", "-e", prelude + _doc_block("javascript")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert '"result":"accepted"' in node.stdout, node.stderr
