"""A report request, parsed once from query parameters, every name checked against the whitelists."""

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from clicktrail.errors import InvalidQuery
from clicktrail.reports.dimensions import DIMENSIONS, MAX_GROUP_BY, Metric

_EVENT = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
MAX_LIMIT = 10_000
MAX_DAYS = 400
_FILTER_VALUE_MAX = 255
_MAX_ID = 2_147_483_647  # the ID columns are 32-bit integers


class TimeBasis(StrEnum):
    CLICK_TIME = "click_time"
    CONVERSION_TIME = "conversion_time"


class OutputFormat(StrEnum):
    JSON = "json"
    CSV = "csv"


@dataclass(frozen=True, slots=True)
class ReportRequest:
    group_by: tuple[str, ...]
    start: datetime
    """UTC, inclusive."""
    end: datetime
    """UTC, exclusive."""
    tz: str
    filters: tuple[tuple[str, str | int], ...]
    event: str | None
    events: tuple[str, ...]
    by: TimeBasis
    sort: str
    descending: bool
    limit: int
    offset: int
    output: OutputFormat
    within: tuple[str, tuple[int, ...]] | None = None
    """A scope from the caller's account (accounts/roles.py): only rows whose ID column holds one of
    these IDs, e.g. ("source_id", (3,)) for an affiliate. Set by the web layer, never by a parameter."""


def _fail(field: str, message: str) -> InvalidQuery:
    return InvalidQuery(f"{field}: {message}", {field: message})


def _local_bound(text: str, field: str, zone: ZoneInfo, *, end: bool) -> datetime:
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            if end:
                day += timedelta(days=1)
            return datetime.combine(day, time(), zone).astimezone(UTC)
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise _fail(field, "an ISO date (2026-11-01) or datetime (2026-11-01T12:00)") from exc
    return (moment.replace(tzinfo=zone) if moment.tzinfo is None else moment).astimezone(UTC)


def _slug(value: str, field: str) -> str:
    slug = value.strip().lower()
    if not _EVENT.fullmatch(slug):
        raise _fail(field, "an event is a slug: letters, digits, '_', '-', '.'")
    return slug


def parse_dimension_filters(params: Mapping[str, str]) -> tuple[tuple[str, str | int], ...]:
    """The dimension filters among the parameters (campaign_id=1, country=fr, sub3=x…), as
    (column, value) pairs; the columns come from the whitelist, the values are bound later."""
    filters: list[tuple[str, str | int]] = []
    for dim in DIMENSIONS.values():
        if dim.filter_param and dim.filter_param in params:
            value = params[dim.filter_param]
            if dim.numeric:
                if not value.isdigit() or int(value) > _MAX_ID:
                    raise _fail(dim.filter_param, "a numeric ID")
                filters.append((dim.column, int(value)))
            else:
                if len(value) > _FILTER_VALUE_MAX:
                    raise _fail(dim.filter_param, f"at most {_FILTER_VALUE_MAX} characters")
                filters.append((dim.column, value.upper() if dim.name == "country" else value))
    return tuple(filters)


FILTER_PARAMS = tuple(dim.filter_param for dim in DIMENSIONS.values() if dim.filter_param)


def parse_report_request(params: Mapping[str, str], *, today: date) -> ReportRequest:
    """Parse and validate; every refusal names what is allowed."""
    allowed_params = {
        "group_by", "from", "to", "tz", "event", "events", "by", "sort", "limit", "offset", "format",
        *(dim.filter_param for dim in DIMENSIONS.values() if dim.filter_param),
    }  # fmt: skip
    unknown = sorted(set(params) - allowed_params)
    if unknown:
        raise _fail(unknown[0], f"unknown parameter; allowed: {', '.join(sorted(allowed_params))}")

    group_by = tuple(name.strip() for name in params.get("group_by", "campaign").split(",") if name.strip())
    for name in group_by:
        if name not in DIMENSIONS:
            raise _fail("group_by", f"unknown dimension {name!r}; allowed: {', '.join(DIMENSIONS)}")
    if len(set(group_by)) != len(group_by):
        raise _fail("group_by", "a dimension appears twice")
    if len(group_by) > MAX_GROUP_BY:
        raise _fail("group_by", f"at most {MAX_GROUP_BY} dimensions")

    tz = params.get("tz", "UTC").strip() or "UTC"
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise _fail("tz", "an IANA timezone such as Europe/Paris or America/New_York") from exc

    start_text = params.get("from") or (today - timedelta(days=6)).isoformat()
    end_text = params.get("to") or today.isoformat()
    start = _local_bound(start_text, "from", zone, end=False)
    end = _local_bound(end_text, "to", zone, end=True)
    if end <= start:
        raise _fail("to", "must not be before from")
    if end - start > timedelta(days=MAX_DAYS):
        raise _fail("to", f"a report covers at most {MAX_DAYS} days")

    filters = parse_dimension_filters(params)

    event = _slug(params["event"], "event") if params.get("event") else None
    events = tuple(_slug(e, "events") for e in params.get("events", "").split(",") if e.strip())
    if len(events) > 10:
        raise _fail("events", "at most 10 events side by side")

    try:
        by = TimeBasis(params.get("by", TimeBasis.CLICK_TIME))
    except ValueError as exc:
        raise _fail("by", f"one of {', '.join(TimeBasis)}") from exc
    try:
        output = OutputFormat(params.get("format", OutputFormat.JSON))
    except ValueError as exc:
        raise _fail("format", f"one of {', '.join(OutputFormat)}") from exc

    sort_text = params.get("sort", "").strip()
    descending = sort_text.startswith("-")
    sort = sort_text.lstrip("-") or (group_by[0] if group_by else Metric.CLICKS.value)
    sortable = {*group_by, *(m.value for m in Metric), *(f"{e}s" for e in events)}
    if sort not in sortable:
        raise _fail("sort", f"one of {', '.join(sorted(sortable))} (prefix '-' for descending)")

    def number(field: str, default: int, high: int) -> int:
        text = params.get(field, str(default))
        if not text.isdigit() or int(text) > high:
            raise _fail(field, f"a whole number from 0 to {high}")
        return int(text)

    limit = number("limit", 1000, MAX_LIMIT)
    offset = number("offset", 0, 10_000_000)
    if limit == 0:
        raise _fail("limit", f"a whole number from 1 to {MAX_LIMIT}")

    return ReportRequest(
        group_by, start, end, tz, filters, event, events, by, sort, descending, limit, offset, output
    )
