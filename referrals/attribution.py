"""Attribution models and exact rounding. Pure functions: no database, no clock, no floats.

Every model turns an ordered sequence of touchpoints into raw weights; ``exact_shares`` turns those
into shares with ``SHARE_PLACES`` decimals that sum to exactly 1 (largest-remainder rounding: each
share is floored, and the leftover millionths go one each to the touchpoints with the largest
remainders, ties to the later touchpoint). A participant's share is the sum of its touchpoints'
rounded shares, so participants' shares sum to exactly 1 as well. Amounts are split the same way in
minor units, so they sum to exactly the event's amount.
"""

from __future__ import annotations

import decimal
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from fractions import Fraction

from programs.models import AttributionModel

SHARE_PLACES = 6
SHARE_UNITS = 10**SHARE_PLACES  # one share unit is 0.000001
POSITION_FIRST = Fraction(2, 5)
POSITION_LAST = Fraction(2, 5)
POSITION_MIDDLE = Fraction(1, 5)
# Time decay uses Decimal powers of 2 at this precision, then exact fractions.
_DECAY_CONTEXT = decimal.Context(prec=34, rounding=decimal.ROUND_HALF_EVEN)


@dataclass(frozen=True)
class Touch:
    """One touchpoint as the models see it; ``ref`` identifies it ("click:12", "touchpoint:7")."""

    ref: str
    participant_id: int
    occurred_at: datetime


@dataclass(frozen=True)
class Credit:
    """The outcome for one event: per touch (same order as given) and per participant."""

    model: str
    touch_shares: list[Decimal]
    participant_shares: dict[int, Decimal]
    participant_amounts: dict[int, int] = field(default_factory=dict)


def touch_weights(
    model: str, touches: Sequence[Touch], *, conversion_at: datetime, half_life_days: int
) -> list[Fraction]:
    """Raw, not yet normalised weights of ``touches`` (ordered oldest first) under ``model``."""
    count = len(touches)
    if count == 0:
        return []
    if model == AttributionModel.FIRST_TOUCH:
        return [Fraction(1)] + [Fraction(0)] * (count - 1)
    if model == AttributionModel.LAST_TOUCH:
        return [Fraction(0)] * (count - 1) + [Fraction(1)]
    if model == AttributionModel.LINEAR:
        return [Fraction(1)] * count
    if model == AttributionModel.POSITION_BASED:
        if count == 1:
            return [Fraction(1)]
        if count == 2:
            return [Fraction(1, 2), Fraction(1, 2)]
        middle = POSITION_MIDDLE / (count - 2)
        return [POSITION_FIRST] + [middle] * (count - 2) + [POSITION_LAST]
    if model == AttributionModel.TIME_DECAY:
        return [decay_weight(conversion_at - touch.occurred_at, half_life_days) for touch in touches]
    raise ValueError(f"unknown attribution model {model!r}")


def decay_weight(age: timedelta, half_life_days: int) -> Fraction:
    """2 ** (-age / half-life): a touch one half-life before the conversion weighs half a fresh one.

    A half-life below one day is treated as one day; touches after the conversion weigh as fresh ones
    (callers exclude them before this point).
    """
    half_life = max(int(half_life_days), 1)
    age_microseconds = max(age // timedelta(microseconds=1), 0)
    exponent = -Fraction(age_microseconds, half_life * 86_400 * 10**6)
    with decimal.localcontext(_DECAY_CONTEXT):
        power = Decimal(2) ** (Decimal(exponent.numerator) / Decimal(exponent.denominator))
    return Fraction(power)


def exact_shares(weights: Sequence[Fraction]) -> list[Decimal]:
    """Normalise ``weights`` to shares with SHARE_PLACES decimals that sum to exactly 1.

    Largest remainder: floor every share to whole units, then hand the leftover units one each to
    the largest remainders; ties go to the later position (the later touch).
    """
    total = sum(weights, Fraction(0))
    if not weights or total <= 0:
        raise ValueError("at least one positive weight is needed")
    exact = [weight / total * SHARE_UNITS for weight in weights]
    units = [value.numerator // value.denominator for value in exact]
    leftover = SHARE_UNITS - sum(units)
    order = sorted(range(len(exact)), key=lambda i: (exact[i] - units[i], i), reverse=True)
    for index in order[:leftover]:
        units[index] += 1
    return [units_to_share(unit) for unit in units]


def units_to_share(units: int) -> Decimal:
    return (Decimal(units) / SHARE_UNITS).quantize(Decimal(1).scaleb(-SHARE_PLACES))


def share_to_units(share: Decimal) -> int:
    return int(share * SHARE_UNITS)


def split_amount(amount_minor: int, shares: Sequence[Decimal]) -> list[int]:
    """Split an integer amount by ``shares`` (summing to 1) into integers summing to ``amount_minor``.

    Largest remainder again; ties go to the larger share, then to the later position.
    """
    if not shares:
        return []
    sign = -1 if amount_minor < 0 else 1
    magnitude = abs(amount_minor)
    exact = [Fraction(magnitude * share_to_units(share), SHARE_UNITS) for share in shares]
    parts = [value.numerator // value.denominator for value in exact]
    leftover = magnitude - sum(parts)
    order = sorted(range(len(exact)), key=lambda i: (exact[i] - parts[i], shares[i], i), reverse=True)
    for index in order[:leftover]:
        parts[index] += 1
    return [sign * part for part in parts]


def credit(
    model: str,
    touches: Sequence[Touch],
    *,
    conversion_at: datetime,
    half_life_days: int,
    amount_minor: int = 0,
) -> Credit:
    """Shares per touch and per participant (and the amount per participant) for one conversion.

    ``touches`` must be ordered oldest first and all lie at or before ``conversion_at``.
    """
    weights = touch_weights(model, touches, conversion_at=conversion_at, half_life_days=half_life_days)
    shares = exact_shares(weights)
    per_participant: dict[int, int] = {}
    last_position: dict[int, int] = {}
    for position, (touch, share) in enumerate(zip(touches, shares, strict=True)):
        per_participant[touch.participant_id] = per_participant.get(touch.participant_id, 0) + share_to_units(share)
        last_position[touch.participant_id] = position
    credited = [pid for pid, units in per_participant.items() if units > 0]
    # Deterministic order for the amount split: by share, then by the participant's latest touch.
    credited.sort(key=lambda pid: (per_participant[pid], last_position[pid]))
    participant_shares = {pid: units_to_share(per_participant[pid]) for pid in credited}
    amounts = split_amount(amount_minor, [participant_shares[pid] for pid in credited])
    return Credit(
        model=model,
        touch_shares=shares,
        participant_shares=participant_shares,
        participant_amounts=dict(zip(credited, amounts, strict=True)),
    )
