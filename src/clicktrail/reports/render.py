"""Report rows as JSON values and as CSV (RFC 4180, safe to open in a spreadsheet)."""

import csv
import io
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from clicktrail.money import format_money
from clicktrail.reports.dimensions import MONEY_METRICS, Metric
from clicktrail.reports.result import ReportResult

NAMED_DIMENSIONS = ("campaign", "offer", "source", "lander")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _value(key: str, value: Any) -> Any:
    if isinstance(value, Decimal):
        return format_money(value) if key in MONEY_METRICS else format(value, "f")
    return value


def json_rows(result: ReportResult, names: Mapping[str, Mapping[int, str]]) -> dict[str, Any]:
    rows = []
    for row in result.rows:
        shown = {key: _value(key, value) for key, value in row.items()}
        for dim in NAMED_DIMENSIONS:
            if dim in row:
                shown[f"{dim}_name"] = names.get(dim, {}).get(row[dim])
        rows.append(shown)
    totals = {key: _value(key, value) for key, value in result.totals.items()}
    return {"columns": result.columns, "rows": rows, "totals": totals, "total_rows": result.total_rows}


def _cell(value: Any) -> str:
    if value is None:
        return ""
    text = str(value)
    # A cell a spreadsheet would run as a formula gets a leading quote (OWASP's CSV injection advice);
    # plain negative numbers stay numbers.
    if text.startswith(_FORMULA_START) and not _is_number(text):
        return "'" + text
    return text


def _is_number(text: str) -> bool:
    """Plain decimal text such as -12.50 (no exponent, NaN or infinity)."""
    return re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", text) is not None


def csv_text(result: ReportResult, names: Mapping[str, Mapping[int, str]]) -> str:
    data = json_rows(result, names)
    columns = list(result.columns)
    for dim in NAMED_DIMENSIONS:
        if dim in columns:
            columns.insert(columns.index(dim) + 1, f"{dim}_name")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    for row in data["rows"]:
        writer.writerow([_cell(row.get(column)) for column in columns])
    totals = data["totals"]
    writer.writerow(["total" if n == 0 else _cell(totals.get(column)) for n, column in enumerate(columns)])
    return out.getvalue()


TABLE_METRICS = (
    "clicks",
    "unique_clicks",
    "conversions",
    "revenue",
    "payout",
    "cost",
    "profit",
    "cr",
    "epc",
    "roi",
)


def text_table(result: ReportResult, names: Mapping[str, Mapping[int, str]]) -> str:
    """A plain-text table for the terminal: dimensions, the main metrics, then the totals line."""
    data = json_rows(result, names)
    first_metric = result.columns.index(Metric.CLICKS.value)
    dims = result.columns[:first_metric]
    per_event = result.columns[first_metric + len(Metric) :]
    columns = [*dims, *TABLE_METRICS, *per_event]

    def show(row: Mapping[str, Any], column: str) -> str:
        value = row.get(column)
        if column in NAMED_DIMENSIONS and row.get(f"{column}_name"):
            return f"{value} {row[f'{column}_name']}"
        return "" if value is None else str(value)

    body = [[show(row, column) for column in columns] for row in data["rows"]]
    totals = ["total" if n == 0 else show(data["totals"], column) for n, column in enumerate(columns)]
    widths = [
        max(len(column), *(len(line[n]) for line in [*body, totals])) for n, column in enumerate(columns)
    ]
    numeric = [column not in dims for column in columns]

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, right in zip(cells, widths, numeric, strict=True)
        ).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(columns), rule, *(line(cells) for cells in body), rule, line(totals)])
