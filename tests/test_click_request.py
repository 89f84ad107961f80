"""Reading a tracking link's query and the visitor's headers: the same answers as the standard
library's parser, and visitor text cleaned before it is stored."""

from urllib.parse import parse_qsl

from hypothesis import given
from hypothesis import strategies as st

from clicktrail.clicks.request import parse_click_request, parse_query
from clicktrail.text import clean

query_bytes = st.one_of(
    st.binary(max_size=80),
    st.lists(
        st.tuples(st.text(max_size=8), st.text(max_size=12)).map(lambda pair: "=".join(pair)),
        max_size=6,
    ).map(lambda fields: "&".join(fields).encode("utf-8", "surrogatepass")),
    st.text(alphabet="ab=&%+2F0Zz;", max_size=30).map(str.encode),
    # UTF-8 escapes, whole and cut short, beside raw non-ASCII text (parse_query's ASCII shortcut).
    st.text(alphabet="a=&%+20E2C38AFé€\x00", max_size=40).map(str.encode),
)


@given(query_bytes)
def test_each_parameter_gets_its_first_value_as_the_standard_parser_reads_it(query: bytes) -> None:
    expected: dict[str, str] = {}
    for name, value in parse_qsl(query.decode("utf-8", "replace"), keep_blank_values=True):
        expected.setdefault(name, value)
    assert parse_query(query) == expected


def test_escapes_and_plus_signs_are_decoded_and_a_bad_escape_never_fails() -> None:
    assert parse_query(b"sub1=kw%20one+two&sub2=%E2%82%AC&sub3=%ZZ&sub1=later&flag") == {
        "sub1": "kw one two",
        "sub2": "€",
        "sub3": "%ZZ",
        "flag": "",
    }
    assert parse_query(b"sub1=%ff") == {"sub1": "\ufffd"}


@given(st.text(max_size=40), st.integers(1, 50))
def test_cleaning_drops_control_characters_and_caps_the_length(value: str, limit: int) -> None:
    cleaned = clean(value, limit)
    expected = "".join(char for char in value if ord(char) >= 0x20 and ord(char) != 0x7F)[:limit]
    assert cleaned == (expected or None)


def test_a_click_carries_sub_ids_external_id_and_the_source_cost() -> None:
    request = parse_click_request(
        "abc", b"sub1=a%0d%0ab&sub10=ten&external_id=x1&cost=0.05", "1.2.3.4", "UA\x00", None, None
    )
    assert request.subs[0] == "ab"
    assert request.subs[9] == "ten"
    assert request.external_id == "x1"
    assert str(request.cost) == "0.05"
    assert request.user_agent == "UA"
