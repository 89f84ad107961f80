"""The hostile-input wall: what an attacker sends gets a 4xx with a JSON reason (or a 404 page), the
server keeps serving, and nothing already stored changes."""

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from clicktrail.reports.dimensions import DIMENSIONS
from clicktrail.reports.request import FILTER_PARAMS
from tests.support import ADMIN_TOKEN, ServerProcess, Tracker

NUMERIC_FILTERS = frozenset(dim.filter_param for dim in DIMENSIONS.values() if dim.numeric)
INJECTIONS = ["' OR '1'='1", "1; DROP TABLE clicks; --", '" UNION SELECT * FROM meta --', "\\x00", "%27"]


def _stored(tracker: Tracker) -> tuple[int, int]:
    report = tracker.api("GET", "/reports", params={"from": "2000-01-01", "to": "2100-01-01"})
    offers = tracker.api("GET", "/offers", params={"limit": 1000}).json()["items"]
    return len(offers), report.status_code


@pytest.mark.parametrize("param", FILTER_PARAMS)
def test_sql_injection_in_any_report_filter_matches_nothing(tracker: Tracker, param: str) -> None:
    before = _stored(tracker)
    for text in INJECTIONS:
        response = tracker.api("GET", "/reports", params={param: text, "group_by": "campaign"})
        if param in NUMERIC_FILTERS:  # campaign_id, offer_id, source_id, lander_id
            assert response.status_code == 400, (param, text)
            assert response.json()["error"] == "invalid_query"
        else:
            assert response.status_code == 200, (param, text)
            assert response.json()["totals"]["clicks"] == 0
    assert _stored(tracker) == before


def test_sql_injection_in_groupings_sorts_and_timezones_is_refused(tracker: Tracker) -> None:
    for params in (
        {"group_by": "campaign) UNION SELECT value FROM meta --"},
        {"sort": "clicks; DROP TABLE clicks"},
        {"tz": "UTC'; DROP TABLE clicks; --"},
        {"events": "lead' OR 1=1 --"},
        {"by": "click_time OR 1=1"},
    ):
        response = tracker.api("GET", "/reports", params=params)
        assert response.status_code == 400, params
        assert response.json()["detail"]


@pytest.mark.parametrize(
    "path",
    ["/c///evil.example", "/c/https://evil.example", "/c/%2F%2Fevil.example", "/c/..%2F..%2Fetc%2Fpasswd",
     "/c/%0d%0aLocation:%20https://evil.example"],
)  # fmt: skip
def test_no_tracking_path_redirects_anywhere_but_an_offer(server: ServerProcess, path: str) -> None:
    response = httpx.get(server.base_url + path, follow_redirects=False)
    assert response.status_code == 404
    assert "location" not in response.headers


@pytest.mark.parametrize(
    "path",
    [
        "/static/../../../../etc/passwd",
        "/static/%2e%2e/%2e%2e/etc/passwd",
        "/static/..%2f..%2fpyproject.toml",
    ],
)
def test_static_files_cannot_be_escaped(server: ServerProcess, path: str) -> None:
    with socket.create_connection(("127.0.0.1", int(server.base_url.rsplit(":", 1)[1]))) as raw:
        # A raw request: HTTP clients normalise the dots away before sending.
        raw.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := raw.recv(65536):
            answer += chunk
    status = int(answer.split(b" ", 2)[1])
    assert status in (400, 404), answer[:200]
    assert b"root:" not in answer
    assert b"[project]" not in answer


def test_slow_clients_do_not_stall_the_server(server: ServerProcess) -> None:
    port = int(server.base_url.rsplit(":", 1)[1])
    slow = []
    for _ in range(50):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # and never finish the headers
        slow.append(sock)
    try:
        body = b"click_id=" + b"a" * 100
        slow_body = socket.create_connection(("127.0.0.1", port))
        slow_body.sendall(b"POST /postback HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + body)
        slow.append(slow_body)
        started = time.monotonic()
        assert httpx.get(f"{server.base_url}/health", timeout=5).status_code == 200
        assert time.monotonic() - started < 2
    finally:
        for sock in slow:
            sock.close()


def test_header_injection_through_sub_ids_never_reaches_the_location(tracker: Tracker) -> None:
    key = tracker.campaign(url="https://m.example/?s={sub1}&cid={click_id}")["key"]
    raw = f"/c/{key}?sub1=%0D%0ASet-Cookie:%20owned=1%0D%0A"
    response = tracker.http.get(raw)
    assert response.status_code == 302
    assert {c.split("=", 1)[0] for c in response.headers.get_list("set-cookie")} <= {"ct_cid", "ct_vid"}
    location = response.headers["location"]
    assert "\r" not in location
    assert "\n" not in location
    assert "s=Set-Cookie%3A%20owned%3D1&" in location  # kept as text, line breaks dropped, encoded


def test_the_openapi_spec_holds_against_a_fuzzer(server: ServerProcess, tmp_path: Path) -> None:
    """Schemathesis against the live server: no 5xx, responses match the spec, and no route answers
    without the admin token."""
    binary = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert binary, "schemathesis is a dev dependency"
    result = subprocess.run(
        [binary, "run", f"{server.base_url}/api/openapi.json", "-H", f"Authorization: Bearer {ADMIN_TOKEN}",
         "--checks", "not_a_server_error,response_schema_conformance,ignored_auth", "--max-examples", "15",
         "--phases", "examples,coverage,fuzzing", "--seed", "20261123", "--no-color"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-6000:]
    assert "Traceback" not in server.log()


def test_ids_beyond_32_bits_are_refused_in_cursors_and_filters(tracker: Tracker) -> None:
    big = str(2**31)
    assert tracker.api("GET", "/offers", params={"cursor": big}).status_code == 422
    assert tracker.api("GET", "/clicks", params={"campaign_id": big}).status_code == 400
    assert tracker.api("GET", "/conversions", params={"offer_id": big}).status_code == 400


def test_control_characters_get_a_json_reason_on_every_backend_never_a_500(tracker: Tracker) -> None:
    """A NUL (`%00`) is text SQLite keeps and PostgreSQL refuses: in a name it is refused up front, in a
    log filter it matches nothing or is refused with the database's reason; never a 500."""
    before = _stored(tracker)
    for noun, fields in (
        ("offers", {"url": "https://m.example/?c={click_id}", "revenue": "1", "payout": "0.5"}),
        ("sources", {}),
    ):
        for name in ("bad\x00name", "line\nbreak"):
            response = tracker.api("POST", f"/{noun}", json={"name": name, **fields})
            assert response.status_code == 422, (noun, name, response.text)
            assert "control characters" in response.json()["fields"]["name"]
    assert tracker.api("POST", "/sources", json={"name": "Réseau\u00a0👨\u200d👩\u200d👧"}).status_code == 201
    for path, params in (
        ("/clicks", {"sub1": "a\x00b"}),
        ("/conversions", {"sub1": "a\x00b"}),
        ("/postbacks", {"txid": "t\x00"}),
    ):
        response = tracker.api("GET", path, params=params)
        assert response.status_code in (200, 422), (path, response.text)
        assert response.json().get("items") == [] or response.json()["error"] == "validation_error"
    assert _stored(tracker) == before  # the refused offers were not stored
    sources = tracker.api("GET", "/sources", params={"limit": 1000}).json()["items"]
    assert not [source["name"] for source in sources if "\x00" in source["name"] or "\n" in source["name"]]
