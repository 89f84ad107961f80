"""Drilling through the report table: a value of the first grouping becomes a filter and the table
moves on to the next grouping (campaign → sub1 → country…); breadcrumbs lead back up.

Everything lives in the page's URL: the groupings still to come (`g0`…`g3`), the filters, and
`drill`, the groupings drilled through so far, in order. Going back to a crumb removes the filters
drilled after it and puts those groupings back in front."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from clicktrail.reports.dimensions import DIMENSIONS, MAX_GROUP_BY
from clicktrail.reports.render import NAMED_DIMENSIONS


@dataclass(frozen=True, slots=True)
class Crumb:
    label: str
    link: str | None
    """None for the level shown now."""


@dataclass(frozen=True, slots=True)
class Drill:
    links: list[str | None]
    """Per row: where clicking its first cell leads (None when that value cannot be a filter)."""
    next_grouping: str | None
    crumbs: list[Crumb]


def _filter_param(dimension: str) -> str | None:
    dim = DIMENSIONS.get(dimension)
    return dim.filter_param if dim else None


def _drilled(query: Mapping[str, str]) -> list[str]:
    """The drill trail of the URL, keeping only dimensions that are filtered on (a hand-edited URL
    cannot make a crumb of nothing)."""
    trail: list[str] = []
    for name in query.get("drill", "").split(","):
        param = _filter_param(name)
        if param and query.get(param) and name not in trail:
            trail.append(name)
    return trail[:MAX_GROUP_BY]


def _link(
    query: Mapping[str, str],
    group_by: Sequence[str],
    drilled: Sequence[str],
    drop: Sequence[str] = (),
    **changes: str,
) -> str:
    params = {
        k: v
        for k, v in query.items()
        if not (k.startswith("g") and k[1:].isdigit()) and k not in ("drill", "offset", *drop)
    }
    params |= changes
    sort = params.get("sort", "").lstrip("-")
    if sort in DIMENSIONS and sort not in group_by:
        params.pop("sort")  # sorting by a grouping no longer shown would be refused
    params |= {f"g{n}": name for n, name in enumerate(group_by)}
    if drilled:
        params["drill"] = ",".join(drilled)
    return "?" + urlencode(params)


def _label(dimension: str, value: str, names: Mapping[str, Mapping[int, str]]) -> str:
    if dimension in NAMED_DIMENSIONS and value.isdigit():
        name = names.get(dimension, {}).get(int(value))
        return f"{dimension} {value} · {name}" if name else f"{dimension} {value}"
    return f"{dimension} = {value}"


def drill_down(
    query: Mapping[str, str],
    group_by: Sequence[str],
    rows: Sequence[Mapping[str, Any]],
    names: Mapping[str, Mapping[int, str]],
) -> Drill:
    drilled = _drilled(query)
    first = group_by[0] if group_by else None
    param = _filter_param(first) if first else None
    rest = list(group_by[1:])
    links: list[str | None] = []
    for row in rows:
        value = row.get(first) if first else None
        if param is None or not rest or value is None or value == "":
            links.append(None)
        else:
            links.append(_link(query, rest, [*drilled, str(first)], **{param: str(value)}))

    crumbs: list[Crumb] = []
    for level in range(len(drilled) + 1):
        undone = drilled[level:]
        groups = [*undone, *group_by][:MAX_GROUP_BY]
        if level == 0:
            label = "All"
        else:
            dim = drilled[level - 1]
            label = _label(dim, query.get(str(_filter_param(dim)), ""), names)
        label += f" (by {groups[0]})" if groups else ""
        if level == len(drilled):
            crumbs.append(Crumb(label, None))
            continue
        undone_filters = [str(_filter_param(dim)) for dim in undone]
        crumbs.append(Crumb(label, _link(query, groups, drilled[:level], undone_filters)))
    next_grouping = rest[0] if rest and param else None
    return Drill(links, next_grouping, crumbs if drilled else [])
