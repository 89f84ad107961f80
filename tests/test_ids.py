"""Click IDs: time-sortable, URL-safe, at most 32 characters, and refused when forged or mangled."""

import hashlib
import hmac
import os
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clicktrail.ids import ALPHABET, ClickIdCodec, InvalidClickId, click_id_floor, click_time, mint_event_id

KEY = b"k" * 32
codec = ClickIdCodec(KEY)
moments = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC))


@given(moments)
def test_a_minted_id_verifies_and_carries_its_time(moment: datetime) -> None:
    click_id = codec.mint(moment)
    assert codec.verify(click_id) == click_id
    assert len(click_id) == 32
    assert set(click_id) <= set(ALPHABET)
    assert abs(click_time(click_id) - moment) < timedelta(milliseconds=1)


@given(moments, st.integers(0, 31), st.sampled_from(ALPHABET))
def test_any_changed_character_is_refused(moment: datetime, position: int, replacement: str) -> None:
    click_id = codec.mint(moment)
    mangled = click_id[:position] + replacement + click_id[position + 1 :]
    if mangled == click_id:
        return
    with pytest.raises(InvalidClickId):
        codec.verify(mangled)


@given(moments, moments)
def test_ids_sort_by_time(first: datetime, second: datetime) -> None:
    if click_time(codec.mint(first)) == click_time(codec.mint(second)):
        return
    assert (codec.mint(first) < codec.mint(second)) == (first < second)


@given(st.text(max_size=40))
def test_arbitrary_text_is_refused_not_crashed_on(text: str) -> None:
    try:
        verified = codec.verify(text)
    except InvalidClickId:
        return
    assert verified == text.lower()


def test_an_id_from_another_installation_is_refused() -> None:
    other = ClickIdCodec(b"x" * 32).mint(datetime.now(UTC))
    with pytest.raises(InvalidClickId, match="tag"):
        codec.verify(other)


def test_upper_case_is_accepted_as_the_same_id() -> None:
    click_id = codec.mint(datetime.now(UTC))
    assert codec.verify(click_id.upper()) == click_id


def test_a_short_key_is_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        ClickIdCodec(b"short")


def test_event_ids_are_time_ordered_and_unique() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    ids = [mint_event_id(start + timedelta(milliseconds=n)) for n in range(100)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 100


@given(st.binary(min_size=16, max_size=100), moments, st.integers(0, 2**64 - 1))
def test_the_tag_is_hmac_sha256_of_the_id_body_so_ids_from_earlier_releases_still_verify(
    key: bytes, moment: datetime, random_bits: int
) -> None:
    click_id = ClickIdCodec(key).mint(moment, random_bits)
    value = 0
    for char in click_id:
        value = (value << 5) | ALPHABET.index(char)
    raw = value.to_bytes(20, "big")
    assert raw[14:] == hmac.new(key, raw[:14], hashlib.sha256).digest()[:6]
    assert int.from_bytes(raw[6:14], "big") == random_bits


def _decode(text: str) -> int:
    value = 0
    for char in text:
        value = (value << 5) | ALPHABET.index(char)
    return value


@given(moments)
def test_an_event_id_is_its_millisecond_time_then_80_random_bits(moment: datetime) -> None:
    event_id = mint_event_id(moment)
    assert len(event_id) == 26
    assert _decode(event_id) >> 80 == int(moment.timestamp() * 1000)


@given(moments)
def test_the_click_id_floor_sorts_at_or_before_every_id_of_that_millisecond(moment: datetime) -> None:
    ms = int(moment.timestamp() * 1000)
    floor = click_id_floor(ms)
    assert floor <= codec.mint(moment, 0)
    assert _decode(floor) == ms << 112


def test_random_bits_never_repeat_and_a_forked_child_does_not_reuse_its_parents() -> None:
    """Click IDs' random bits are read from the OS 512 words at a time (ids.py): every word is used
    once, across pool refills, and a forked worker draws its own rather than the parent's next ones."""
    moment = datetime(2026, 1, 1, tzinfo=UTC)

    def random_parts(count: int) -> set[str]:
        return {codec.mint(moment)[10:26] for _ in range(count)}  # after the time, before the tag

    codec.mint(moment)  # the pool is now part-used, as in a worker that forks after minting
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover (the child reports through the pipe)
        os.write(write, ",".join(sorted(random_parts(600))).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        childs = set(pipe.read().split(","))
    os.waitpid(child, 0)
    parents = random_parts(600)
    assert len(childs) == 600
    assert len(parents) == 600
    assert not childs & parents


@pytest.mark.parametrize("stand_in", [" ", "+", "-", "\u0660", "\uff10"])
def test_a_sign_a_space_or_another_scripts_zero_in_place_of_a_digit_is_refused(stand_in: str) -> None:
    """Every click ID so far begins with 0 (its time's top bits); a number parser that skipped a
    leading space or sign, or read Arabic-Indic or full-width digits, would take the changed text
    for the same ID."""
    click_id = codec.mint(datetime.now(UTC))
    assert click_id[0] == "0"
    for mangled in (stand_in + click_id[1:], click_id[:-1] + stand_in):
        with pytest.raises(InvalidClickId, match="only the characters"):
            codec.verify(mangled)
