"""The snippet (/t.js) running in a real headless Chromium on a merchant page served from another
origin: it keeps the click ID, registers direct clicks, and reports leads through the JS pixel."""

import html
import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support import Tracker

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs a Chromium binary for the browser test")

# The merchant's landing page: the snippet, then a lead reported once it is ready; the answer is
# written into the page so `--dump-dom` shows it.
PAGE = """<!doctype html><html><head><meta charset="utf-8">
<script src="{tracker}/t.js" {attributes}></script></head>
<body><pre id="out">pending</pre>
<script>
window.addEventListener("load", function () {{
  clicktrail.track("lead", {{txid: "browser-1"}}).then(function (answer) {{
    return clicktrail.clickId().then(function (id) {{
      document.getElementById("out").textContent = JSON.stringify({{
        answer: answer, clickId: id, cookie: document.cookie,
        stored: window.localStorage.getItem("ct_click_id")
      }});
    }});
  }}).catch(function (error) {{ document.getElementById("out").textContent = "error " + error; }});
}});
</script></body></html>"""


@pytest.fixture
def merchant(tracker: Tracker, backend: str) -> Iterator[tuple[str, dict[str, str]]]:
    """A merchant site on its own origin; set `settings["attributes"]` to configure the snippet tag."""
    if backend != "sqlite":
        pytest.skip("the browser's part does not depend on the database: one backend is enough")
    settings = {"attributes": ""}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = PAGE.format(tracker=tracker.server.base_url, attributes=settings["attributes"]).encode()
            self.send_response(200)
            self.send_header("content-type", "text/html; charset=utf-8")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", settings
    server.shutdown()
    server.server_close()


def _visit(url: str, profile: Path) -> dict[str, object]:
    assert CHROMIUM is not None
    dom = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    start = dom.index('<pre id="out">') + len('<pre id="out">')
    text = html.unescape(dom[start : dom.index("</pre>", start)])
    assert text.startswith("{"), text
    found: dict[str, object] = json.loads(text)
    return found


def test_the_snippet_keeps_the_click_id_from_the_landing_url_and_reports_a_lead(
    tracker: Tracker, merchant: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    site, _ = merchant
    click_id = tracker.click(tracker.campaign()["key"])

    page = _visit(f"{site}/land?click_id={click_id}", tmp_path / "profile")

    assert page["clickId"] == click_id
    assert page["stored"] == click_id
    assert f"ct_click_id={click_id}" in str(page["cookie"])
    assert isinstance(page["answer"], dict)
    assert page["answer"]["result"] == "accepted"
    [conversion] = tracker.api("GET", "/conversions", params={"click_id": click_id}).json()["items"]
    assert (conversion["event"], conversion["txid"], conversion["via"]) == ("lead", "browser-1", "pixel")


def test_the_snippet_registers_a_direct_click_for_a_visitor_from_an_ad(
    tracker: Tracker, merchant: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    site, settings = merchant
    campaign = tracker.campaign()
    settings["attributes"] = f'data-campaign="{campaign["key"]}"'

    page = _visit(f"{site}/land?gclid=ad-click-77&sub1=banner", tmp_path / "profile")

    click_id = page["clickId"]
    assert isinstance(click_id, str)
    assert page["stored"] == click_id
    click = tracker.api("GET", f"/clicks/{click_id}").json()
    assert (click["campaign_id"], click["external_id"], click["sub1"]) == (
        campaign["id"],
        "ad-click-77",
        "banner",
    )
    assert click["browser"] is not None
    assert isinstance(page["answer"], dict)
    assert page["answer"]["result"] == "accepted"
