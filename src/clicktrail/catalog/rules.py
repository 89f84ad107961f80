"""Routing rules: where a campaign sends each visitor.

A campaign's routing is a list of rules evaluated in order, then a default path. A rule matches when
every condition it names holds (country, device type, OS, browser, bot flag, sub ID values, hour of
the day in UTC); its path is one or more offers with weights (an A/B split). The first matching rule
wins; when none matches, the default path (the campaign's own offer when no default is given).

Rotation is deterministic per visitor: the offer is picked by a hash of (campaign, visitor), so the
same visitor sees the same offer on repeat clicks while the weights stay the same, and across many
visitors each offer gets its weight's share.
"""

import hashlib
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from clicktrail.types import OfferId

T = TypeVar("T")
MAX_RULES = 50
MAX_OFFERS_PER_PATH = 20
SUB_NAMES = tuple(f"sub{n}" for n in range(1, 11))
DeviceTypeName = Literal["desktop", "mobile", "tablet", "tv", "console", "bot", "other"]
CountryCode = Annotated[str, Field(pattern=r"^[A-Za-z]{2}$")]
Value = Annotated[str, Field(min_length=1, max_length=255)]
Values = Annotated[list[Value], Field(min_length=1, max_length=500)]


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Split(_Input):
    offer_id: int
    weight: Annotated[int, Field(ge=1, le=10_000)] = 1


Path = Annotated[list[Split], Field(min_length=1, max_length=MAX_OFFERS_PER_PATH)]


class Conditions(_Input):
    country: Annotated[list[CountryCode], Field(min_length=1, max_length=300)] | None = None
    device_type: Annotated[list[DeviceTypeName], Field(min_length=1)] | None = None
    os: Values | None = None
    browser: Values | None = None
    is_bot: bool | None = None
    subs: dict[Literal[SUB_NAMES], Values] | None = Field(  # type: ignore[valid-type]
        None, description='sub ID values, e.g. {"sub1": ["banner-1", "banner-2"]}'
    )
    hours: tuple[Annotated[int, Field(ge=0, le=23)], Annotated[int, Field(ge=1, le=24)]] | None = Field(
        None, description="[from, to) hours of the day in UTC; from > to wraps past midnight"
    )

    @model_validator(mode="after")
    def _something(self) -> "Conditions":
        if not self.model_dump(exclude_none=True):
            raise ValueError("a rule needs at least one condition; use the default path for everyone")
        if self.hours is not None and self.hours[0] == self.hours[1]:
            raise ValueError("hours: an empty range never matches")
        return self


class Rule(_Input):
    name: Annotated[str, Field(max_length=200)] | None = None
    when: Conditions
    offers: Path
    lander_id: Annotated[int, Field(ge=1, le=2_147_483_647)] | None = Field(
        None, description="a lander shown before this rule's offers; none: straight to the offer"
    )


class RoutingInput(_Input):
    rules: Annotated[list[Rule], Field(max_length=MAX_RULES)] = []
    default: Path | None = Field(None, description="when no rule matches; the campaign's offer if omitted")

    def offer_ids(self) -> set[int]:
        paths = [rule.offers for rule in self.rules] + ([self.default] if self.default else [])
        return {split.offer_id for path in paths for split in path}

    def lander_ids(self) -> set[int]:
        return {rule.lander_id for rule in self.rules if rule.lander_id is not None}


@dataclass(frozen=True, slots=True)
class Visit:
    """What rules look at."""

    country: str | None
    device_type: str | None
    os: str | None
    browser: str | None
    is_bot: bool
    subs: Mapping[str, str | None]
    hour: int


@dataclass(frozen=True, slots=True)
class WeightedChoice(Generic[T]):
    options: tuple[T, ...]
    bounds: tuple[int, ...]  # cumulative weights

    @classmethod
    def of(cls, weighted: Sequence[tuple[T, int]]) -> "WeightedChoice[T]":
        bounds, total = [], 0
        for _, weight in weighted:
            total += weight
            bounds.append(total)
        return cls(tuple(option for option, _ in weighted), tuple(bounds))

    def pick(self, visitor_key: str) -> T:
        digest = hashlib.blake2b(visitor_key.encode(), digest_size=8, person=b"clicktrail-rot").digest()
        point = int.from_bytes(digest, "big") % self.bounds[-1]
        return self.options[bisect_right(self.bounds, point)]


@dataclass(frozen=True, slots=True)
class CompiledPath(Generic[T]):
    """A path's offers with their weights, and the lander shown before them (None: straight there)."""

    choice: WeightedChoice[T]
    lander_id: int | None = None

    @property
    def offers(self) -> tuple[T, ...]:
        """In the order the user listed them: `/lp/click/{n}` takes the n-th."""
        return self.choice.options


@dataclass(frozen=True, slots=True)
class _CompiledRule(Generic[T]):
    countries: frozenset[str] | None
    device_types: frozenset[str] | None
    oses: frozenset[str] | None
    browsers: frozenset[str] | None
    is_bot: bool | None
    subs: tuple[tuple[str, frozenset[str]], ...]
    hours: tuple[int, int] | None
    path: CompiledPath[T]

    def matches(self, visit: Visit) -> bool:
        if self.countries is not None and (visit.country or "").upper() not in self.countries:
            return False
        if self.device_types is not None and visit.device_type not in self.device_types:
            return False
        if self.oses is not None and (visit.os or "").lower() not in self.oses:
            return False
        if self.browsers is not None and (visit.browser or "").lower() not in self.browsers:
            return False
        if self.is_bot is not None and visit.is_bot != self.is_bot:
            return False
        if any(visit.subs.get(name) not in values for name, values in self.subs):
            return False
        if self.hours is not None:
            start, end = self.hours
            inside = start <= visit.hour < end if start < end else visit.hour >= start or visit.hour < end
            if not inside:
                return False
        return True


def _lower(values: list[str] | None) -> frozenset[str] | None:
    return frozenset(value.lower() for value in values) if values is not None else None


@dataclass(frozen=True, slots=True)
class RoutingPlan(Generic[T]):
    """A compiled routing: rules in order, then the default; `T` is what a path leads to (an offer)."""

    rules: tuple[_CompiledRule[T], ...]
    default: CompiledPath[T]

    @classmethod
    def compile(
        cls,
        routing: RoutingInput,
        offers: Mapping[OfferId, T],
        campaign_offer: T,
        campaign_lander: int | None = None,
    ) -> "RoutingPlan[T]":
        """`campaign_lander`: the default path's lander (the campaign's); a rule names its own."""

        def choice(path: list[Split] | None) -> WeightedChoice[T]:
            if not path:
                return WeightedChoice.of([(campaign_offer, 1)])
            return WeightedChoice.of([(offers[OfferId(split.offer_id)], split.weight) for split in path])

        rules = []
        for rule in routing.rules:
            when = rule.when
            rules.append(
                _CompiledRule(
                    countries=frozenset(c.upper() for c in when.country) if when.country else None,
                    device_types=frozenset(when.device_type) if when.device_type else None,
                    oses=_lower(when.os),
                    browsers=_lower(when.browser),
                    is_bot=when.is_bot,
                    subs=tuple((name, frozenset(values)) for name, values in (when.subs or {}).items()),
                    hours=when.hours,
                    path=CompiledPath(choice(rule.offers), rule.lander_id),
                )
            )
        return cls(tuple(rules), CompiledPath(choice(routing.default), campaign_lander))

    def path_for(self, visit: Visit) -> CompiledPath[T]:
        """The first matching rule's path, else the default path."""
        for rule in self.rules:
            if rule.matches(visit):
                return rule.path
        return self.default

    def choose(self, visit: Visit, visitor_key: str) -> T:
        """Exactly one destination for every visit: the first matching rule's, else the default's."""
        return self.path_for(visit).choice.pick(visitor_key)
