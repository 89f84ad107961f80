"""Published user-agent corpora shipped inside packages, read as they are (never strings we wrote):

- fake-useragent's `browsers.jsonl`: ~7,000 user agents seen on real browsers, each with its device
  type (desktop, mobile, tablet): the real-world sample.
- Matomo Device Detector's fixtures (the `device_detector` package): user agents labelled by device
  type, one per device model, exotic ones included, and `bots.yml`, its crawler fixtures; both are
  independent of uap-core and of crawler-user-agents.
- crawler-user-agents' `instances`: real user agents of every crawler the list knows.
"""

import json
from functools import cache
from importlib.resources import files

import crawleruseragents
import yaml

_MATOMO = "tests/fixtures/upstream"
# Matomo labels → ours. Phablets and feature phones are phones.
_MATOMO_TYPES = {
    "desktop": "desktop",
    "smartphone": "mobile",
    "phablet": "mobile",
    "feature phone": "mobile",
    "tablet": "tablet",
}
# A fixed sample of Matomo's files: all of them take ~8 s to load; these hold ~3,500 user agents.
_MATOMO_DEVICE_FILES = (
    "desktop.yml",
    "desktop-1.yml",
    "smartphone.yml",
    "smartphone-1.yml",
    "tablet.yml",
    "tablet-1.yml",
    "phablet.yml",
    "feature_phone.yml",
)


@cache
def real_browsers() -> tuple[tuple[str, str], ...]:
    """(user agent, device type) from fake-useragent's real-world browser sample."""
    text = files("fake_useragent").joinpath("data/browsers.jsonl").read_text(encoding="utf-8")
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    return tuple((row["useragent"], row["type"]) for row in rows)


def _matomo(name: str) -> list[dict[str, object]]:
    text = files("device_detector").joinpath(_MATOMO, name).read_text(encoding="utf-8")
    loaded: list[dict[str, object]] = yaml.load(text, Loader=yaml.CSafeLoader)
    return loaded


@cache
def matomo_devices() -> tuple[tuple[str, str], ...]:
    """(user agent, device type) from Matomo's labelled device fixtures."""
    found = []
    for name in _MATOMO_DEVICE_FILES:
        for row in _matomo(name):
            device = row.get("device")
            kind = device.get("type") if isinstance(device, dict) else None
            if isinstance(kind, str) and kind in _MATOMO_TYPES:
                found.append((str(row["user_agent"]), _MATOMO_TYPES[kind]))
    return tuple(found)


@cache
def matomo_bots() -> tuple[str, ...]:
    return tuple(str(row["user_agent"]) for row in _matomo("bots.yml"))


@cache
def crawler_list() -> tuple[str, ...]:
    """Every example user agent in the crawler-user-agents list."""
    return tuple(
        instance for entry in crawleruseragents.CRAWLER_USER_AGENTS_DATA for instance in entry["instances"]
    )
