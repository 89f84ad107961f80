"""The report table's rows as HTML, built in Python: a report page holds up to 1,000 rows of a dozen
and more cells, and Jinja's per-cell logic took half a second of the issue's 1 s budget there
(tests/dashboard/test_report_render.py). Every value goes through markupsafe's escape; the output is
the markup _table.html writes for other tables, less the per-cell classes."""

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from markupsafe import Markup, escape

from clicktrail.reports.render import NAMED_DIMENSIONS

_NONE = '<span class="none">\N{EN DASH}</span>'


def _cell(row: Mapping[str, Any], column: str) -> str:
    value = row.get(column)
    if column in NAMED_DIMENSIONS and row.get(f"{column}_name"):
        return f"{escape(value)} \N{MIDDLE DOT} {escape(row[f'{column}_name'])}"
    if value is None:
        return _NONE
    return str(escape(value))


def report_rows(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    numeric: Collection[str],
    links: Sequence[str | None],
) -> Markup:
    """The <tr> elements of a report table; a row's first cell links to `links[n]` when there is one.
    Cells carry no class (the table's `dims-N` class right-aligns the metrics in CSS): at 1,000 rows
    that is a third less HTML for the browser to parse."""
    out = []
    for n, row in enumerate(rows):
        cells = [_cell(row, column) for column in columns]
        link = links[n] if n < len(links) else None
        if link and cells:
            cells[0] = f'<a href="{escape(link)}">{cells[0]}</a>'
        out.append("<tr><td>" + "</td><td>".join(cells) + "</td></tr>")
    return Markup("\n".join(out))  # noqa: S704 -- every value above went through escape()


def leading_dimensions(columns: Sequence[str], numeric: Collection[str]) -> int:
    """How many columns come before the first metric (the `dims-N` class of the table)."""
    return next((n for n, column in enumerate(columns) if column in numeric), len(columns))
