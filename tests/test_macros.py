"""URL templates: only known macros, only http(s), and filled values can never escape their place."""

import re
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clicktrail.macros import CLICK_MACROS, InvalidTemplate, fill, macros_in, validate_url_template

TEMPLATE = "https://merchant.example/path?cid={click_id}&s1={sub1}&s2={sub2}"


@given(st.text(), st.text())
def test_no_value_can_add_a_parameter_or_change_scheme_host_or_path(sub1: str, sub2: str) -> None:
    url = fill(TEMPLATE, {"click_id": "abc", "sub1": sub1, "sub2": sub2})
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path, parts.fragment) == (
        "https",
        "merchant.example",
        "/path",
        "",
    )
    query = parse_qs(parts.query, keep_blank_values=True)
    assert sorted(query) == ["cid", "s1", "s2"]
    assert query["cid"] == ["abc"]
    assert query["s1"] == [sub1]
    assert query["s2"] == [sub2]
    assert "\r" not in url
    assert "\n" not in url


def test_missing_values_fill_as_empty_and_values_are_not_rescanned() -> None:
    assert fill("https://m.example/?a={sub1}&b={sub2}", {"sub1": "{sub2}", "sub2": None}) == (
        "https://m.example/?a=%7Bsub2%7D&b="
    )


def test_unknown_macros_are_refused_by_name() -> None:
    with pytest.raises(InvalidTemplate, match=r"\{clickid\}"):
        validate_url_template("https://m.example/?c={clickid}", CLICK_MACROS)


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("javascript:alert(1)", "http"),
        ("ftp://m.example/", "http"),
        ("https:///nohost", "no host"),
        ("https://m.example/a b", "spaces"),
        ("https://m.example/\u00e9", "non-ASCII"),
        ("https://{sub1}.example/", "host"),
        ("", "empty"),
        ("https://m.example/" + "a" * 3000, "longer"),
    ],
)
def test_bad_templates_are_refused_with_a_reason(template: str, reason: str) -> None:
    with pytest.raises(InvalidTemplate, match=reason):
        validate_url_template(template, CLICK_MACROS)


def test_a_good_template_is_kept() -> None:
    assert validate_url_template(f"  {TEMPLATE} ", CLICK_MACROS) == TEMPLATE
    assert macros_in(TEMPLATE) == {"click_id", "sub1", "sub2"}


@given(
    st.lists(
        st.one_of(st.sampled_from(["{sub1}", "{sub2}", "{other}", "{", "}", "?a=", "&"]), st.text()),
        max_size=8,
    ),
    st.dictionaries(st.sampled_from(["sub1", "sub2"]), st.one_of(st.none(), st.text())),
)
def test_each_macro_is_replaced_by_exactly_its_percent_encoded_value(
    pieces: list[str], values: dict[str, str | None]
) -> None:
    template = "".join(pieces)

    def one_at_a_time(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            return match.group(0)
        value = values[name]
        return "" if value is None else quote(value, safe="")

    assert fill(template, values) == re.sub(r"\{([a-z0-9_]+)\}", one_at_a_time, template)
