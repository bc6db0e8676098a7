"""Attribution models and exact rounding. Pure functions: no database, no clock, no floats.

Every model turns an ordered sequence of touchpoints into raw weights; ``exact_shares`` turns those
into shares with ``SHARE_PLACES`` decimals that sum to exactly 1 (largest-remainder rounding: each
share is floored, and the leftover millionths go one each to the touchpoints with the largest
remainders, ties to the later touchpoint). A participant's share is the sum of its touchpoints'
rounded shares, so participants' shares sum to exactly 1 as well; those rounded shares are for
display. Amounts are split from the EXACT shares (fractions) by the largest-remainder method, so
they sum to exactly the whole and each part is within one minor unit of its exact share, whatever
the amount (a linear split of 30,000.00 over three is 10,000.00 each, never 9,999.99 / 10,000.02).
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
    """The outcome for one event: per touch (same order as given) and per participant.

    ``participant_exact`` holds each participant's exact share (a Fraction; they sum to exactly 1);
    ``participant_shares`` the same rounded to SHARE_PLACES for display. ``top_participant`` is the one
    with the largest share (ties: the later last touch) — the referral's referrer under this model.
    """

    model: str
    touch_shares: list[Decimal]
    participant_shares: dict[int, Decimal]
    participant_amounts: dict[int, int] = field(default_factory=dict)
    participant_exact: dict[int, Fraction] = field(default_factory=dict)
    top_participant: int | None = None


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


def split_amount(amount_minor: int, shares: Sequence[Decimal | Fraction]) -> list[int]:
    """Split an integer amount by ``shares`` (summing to 1) into integers summing to ``amount_minor``.

    Largest remainder: every exact part is floored and the leftover units go one each to the largest
    remainders; ties go to the larger share, then to the later position. Pass exact shares
    (Fractions) for parts within one unit of the exact split; Decimals are taken as given.
    """
    if not shares:
        return []
    sign = -1 if amount_minor < 0 else 1
    magnitude = abs(amount_minor)
    fractions = [Fraction(share) for share in shares]
    exact = [magnitude * share for share in fractions]
    parts = [value.numerator // value.denominator for value in exact]
    leftover = magnitude - sum(parts)
    order = sorted(range(len(exact)), key=lambda i: (exact[i] - parts[i], fractions[i], i), reverse=True)
    for index in order[:leftover]:
        parts[index] += 1
    return [sign * part for part in parts]


def fraction_text(value: Fraction) -> str:
    """A Fraction as stored ("1/3"); ``parse_fraction`` reads it back."""
    return f"{value.numerator}/{value.denominator}"


def parse_fraction(text: str) -> Fraction | None:
    try:
        return Fraction(text) if text else None
    except (ValueError, ZeroDivisionError):
        return None


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
    total = sum(weights, Fraction(0))
    per_participant: dict[int, int] = {}
    exact_per_participant: dict[int, Fraction] = {}
    last_position: dict[int, int] = {}
    for position, (touch, share, weight) in enumerate(zip(touches, shares, weights, strict=True)):
        pid = touch.participant_id
        per_participant[pid] = per_participant.get(pid, 0) + share_to_units(share)
        exact_per_participant[pid] = exact_per_participant.get(pid, Fraction(0)) + weight / total
        last_position[pid] = position
    credited = [pid for pid, units in per_participant.items() if units > 0]
    # Deterministic order for the amount split: by share, then by the participant's latest touch.
    credited.sort(key=lambda pid: (per_participant[pid], last_position[pid]))
    participant_shares = {pid: units_to_share(per_participant[pid]) for pid in credited}
    # Participants whose share rounds to nothing get no row; the others' exact shares are rescaled so
    # the amounts still sum to exactly the whole.
    kept = sum((exact_per_participant[pid] for pid in credited), Fraction(0))
    participant_exact = {pid: exact_per_participant[pid] / kept for pid in credited}
    amounts = split_amount(amount_minor, [participant_exact[pid] for pid in credited])
    top = max(exact_per_participant, key=lambda pid: (exact_per_participant[pid], last_position[pid]), default=None)
    return Credit(
        model=model,
        touch_shares=shares,
        participant_shares=participant_shares,
        participant_amounts=dict(zip(credited, amounts, strict=True)),
        participant_exact=participant_exact,
        top_participant=top,
    )
