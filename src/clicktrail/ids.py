"""Click IDs and event IDs.

A click ID is 32 characters of lowercase Crockford base32 (URL-safe, case-insensitive on input)
holding 160 bits: a 48-bit millisecond timestamp, 64 random bits and a 48-bit keyed tag
(HMAC-SHA256 of the first 112 bits under the installation's secret key). The timestamp comes
first so IDs sort by time (random keys make SQLite inserts five times slower); the tag lets us
refuse a forged or mistyped ID without touching the database.
"""

import hashlib
import hmac
import os
import secrets
import struct
from collections.abc import Iterator
from datetime import UTC, datetime

from clicktrail.types import ClickId, ConversionId

ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, in ASCII order so strings sort as numbers
_ALPHABET_CHARS = frozenset(ALPHABET)
# Each Crockford digit as the digit of the same value that int(..., 32) reads (0-9, a-v): the whole
# ID then decodes in C, not in 32 turns of a Python loop (2.7% of a postback's instructions:
# scripts/cpu_in_process.py --path postbacks --instructions, BENCHMARKS.md).
_TO_INT_DIGITS = str.maketrans(ALPHABET, "0123456789abcdefghijklmnopqrstuv")

CLICK_ID_LENGTH = 32
_TIME_BITS = 48
_RANDOM_BITS = 64
_TAG_BITS = 48
_BODY_BYTES = (_TIME_BITS + _RANDOM_BITS) // 8
_TAG_BYTES = _TAG_BITS // 8
_MAX_MS = (1 << _TIME_BITS) - 1


class InvalidClickId(ValueError):
    """The text is not a click ID minted by this installation."""


# Two digits (10 bits) per look-up: a click ID's 160 bits are 16 of them, an event ID's 130 bits 13.
_PAIRS = [ALPHABET[pair >> 5] + ALPHABET[pair & 31] for pair in range(1024)]


def _encode_click_id(value: int) -> str:
    return _in_pairs(value, 4)


def _in_pairs(value: int, groups: int) -> str:
    """The low 40 * `groups` bits of `value` as digit pairs, the highest first.

    A group of 40 bits fits a machine word, so its four look-ups are native integer operations once
    compiled (mypyc), where each of a click ID's sixteen shifts of its 160-bit value was an operation
    on a Python int and a look-up by a boxed index: 2.2% of a click's instructions
    (scripts/cpu_in_process.py --instructions; BENCHMARKS.md, "Session of 2026-12-07 (11:46 UTC)")."""
    pieces: list[str] = []
    for shift in range(40 * (groups - 1), -1, -40):
        group = (value >> shift) & 0xFF_FFFF_FFFF
        pieces += (
            _PAIRS[group >> 30],
            _PAIRS[(group >> 20) & 1023],
            _PAIRS[(group >> 10) & 1023],
            _PAIRS[group & 1023],
        )
    return "".join(pieces)


# A click's 64 random bits come from the operating system's CSPRNG, as secrets.randbits' do, but 512
# words per read: one getrandom call per click was 1.2 µs of its CPU, a word from the pool 0.1 µs.
# `next` on the C iterator hands each word out once, even to two threads at a time; a forked child
# drops the pool it inherited, or it would mint the parent's next random bits.
_POOL_WORDS = 512
_random_words: Iterator[tuple[int]] = iter(())


def _random_64() -> int:
    global _random_words
    try:
        return next(_random_words)[0]
    except StopIteration:
        _random_words = struct.iter_unpack("<Q", os.urandom(8 * _POOL_WORDS))
        return next(_random_words)[0]


def _forget_random_words() -> None:
    global _random_words
    _random_words = iter(())


os.register_at_fork(after_in_child=_forget_random_words)


def _millis(moment: datetime) -> int:
    ms = int(moment.timestamp() * 1000)
    if not 0 <= ms <= _MAX_MS:
        raise ValueError(f"time out of range for an ID: {moment!r}")
    return ms


class ClickIdCodec:
    """Mints and verifies click IDs under one secret key."""

    def __init__(self, secret_key: bytes) -> None:
        if len(secret_key) < 16:
            raise ValueError("the click ID key must be at least 16 bytes")
        # HMAC-SHA256 with the key's inner and outer pads hashed once: each tag then copies two hash
        # states instead of re-deriving them (a third of the cost of hmac.digest per click).
        block = secret_key if len(secret_key) <= 64 else hashlib.sha256(secret_key).digest()
        block = block.ljust(64, b"\0")
        self._inner = hashlib.sha256(bytes(byte ^ 0x36 for byte in block))
        self._outer = hashlib.sha256(bytes(byte ^ 0x5C for byte in block))

    def _tag(self, body: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(body)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()[:_TAG_BYTES]

    def mint(self, moment: datetime, random_bits: int | None = None) -> ClickId:
        rnd = _random_64() if random_bits is None else random_bits
        body = ((_millis(moment) << _RANDOM_BITS) | rnd).to_bytes(_BODY_BYTES, "big")
        return ClickId(_encode_click_id(int.from_bytes(body + self._tag(body), "big")))

    def verify(self, text: str) -> ClickId:
        """Return the canonical click ID, or raise InvalidClickId; never looks anything up."""
        if len(text) != CLICK_ID_LENGTH:
            raise InvalidClickId(f"a click ID has {CLICK_ID_LENGTH} characters, got {len(text)}")
        canonical = text.lower()
        # Checked first: int() would also take a sign, spaces and underscores, which are no digits here.
        if not _ALPHABET_CHARS.issuperset(canonical):
            raise InvalidClickId("a click ID holds only the characters 0-9 and a-z (no i, l, o, u)")
        raw = int(canonical.translate(_TO_INT_DIGITS), 32).to_bytes(_BODY_BYTES + _TAG_BYTES, "big")
        body, tag = raw[:_BODY_BYTES], raw[_BODY_BYTES:]
        if not hmac.compare_digest(tag, self._tag(body)):
            raise InvalidClickId(
                "the click ID's tag does not match: forged, mistyped or from another install"
            )
        return ClickId(canonical)


def click_time(click_id: ClickId) -> datetime:
    """The moment a (verified) click ID was minted, to the millisecond."""
    value = int(click_id[: _TIME_BITS // 5 + 1].translate(_TO_INT_DIGITS), 32)
    # 10 chars hold 50 bits; the top 48 of the 160 are the timestamp.
    ms = value >> (10 * 5 - _TIME_BITS)
    return datetime.fromtimestamp(ms / 1000, UTC)


def mint_event_id(moment: datetime) -> str:
    """A 26-character time-ordered random ID (48-bit ms time + 80 random bits), like a ULID."""
    value = (_millis(moment) << 80) | secrets.randbits(80)
    return _PAIRS[value >> 120] + _in_pairs(value, 3)  # 13 pairs: 130 bits, the top 2 zero


def mint_conversion_id(moment: datetime) -> ConversionId:
    return ConversionId(mint_event_id(moment))


def new_secret_key() -> str:
    return secrets.token_urlsafe(32)


def click_id_floor(ms: int) -> ClickId:
    """The smallest click ID minted at or after `ms` (epoch milliseconds): IDs sort by time, so a time
    window of clicks is a primary-key range."""
    return ClickId(_encode_click_id(max(0, min(ms, _MAX_MS)) << (_RANDOM_BITS + _TAG_BITS)))
