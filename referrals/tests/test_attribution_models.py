"""The attribution models on known touchpoint sequences: expected shares, exact sums, exact amounts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from programs.models import AttributionModel
from referrals.attribution import Touch, credit, exact_shares, split_amount, touch_weights

CONVERSION_AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
D = Decimal


def sequence(*specs: tuple[int, int]) -> list[Touch]:
    """(participant id, days before the conversion), oldest first."""
    return [
        Touch(ref=f"t{index}", participant_id=participant, occurred_at=CONVERSION_AT - timedelta(days=days))
        for index, (participant, days) in enumerate(specs)
    ]


# Five touches by three participants: A (id 1) first and third, B (2) second and last, C (3) fourth.
FIVE = sequence((1, 20), (2, 15), (1, 10), (3, 5), (2, 0))

EXPECTED_TOUCH_SHARES = {
    AttributionModel.FIRST_TOUCH: ["1.000000", "0.000000", "0.000000", "0.000000", "0.000000"],
    AttributionModel.LAST_TOUCH: ["0.000000", "0.000000", "0.000000", "0.000000", "1.000000"],
    AttributionModel.LINEAR: ["0.200000"] * 5,
    # 40 % first, 40 % last, 20 % / 3 in the middle = 0.0666…: two leftover millionths go to the
    # largest remainders, ties to the later touches.
    AttributionModel.POSITION_BASED: ["0.400000", "0.066666", "0.066667", "0.066667", "0.400000"],
}
EXPECTED_PARTICIPANT_SHARES = {
    AttributionModel.FIRST_TOUCH: {1: "1.000000"},
    AttributionModel.LAST_TOUCH: {2: "1.000000"},
    AttributionModel.LINEAR: {1: "0.400000", 2: "0.400000", 3: "0.200000"},
    AttributionModel.POSITION_BASED: {1: "0.466667", 2: "0.466666", 3: "0.066667"},
}


@pytest.mark.parametrize("model", list(EXPECTED_TOUCH_SHARES), ids=str)
def test_known_sequence_gets_the_expected_shares_that_sum_to_exactly_one(model):
    result = credit(model, FIVE, conversion_at=CONVERSION_AT, half_life_days=7, amount_minor=100_00)

    assert [str(share) for share in result.touch_shares] == EXPECTED_TOUCH_SHARES[model]
    assert {pid: str(share) for pid, share in result.participant_shares.items()} == EXPECTED_PARTICIPANT_SHARES[model]
    assert sum(result.touch_shares) == D(1)
    assert sum(result.participant_shares.values()) == D(1)
    assert sum(result.participant_amounts.values()) == 100_00


def test_time_decay_halves_the_weight_every_half_life():
    # Half-life 5 days, touches 15, 10, 5 and 0 days old → weights 1/8, 1/4, 1/2, 1 (total 15/8),
    # shares 1/15, 2/15, 4/15, 8/15; the two leftover millionths go to the .666… remainders.
    touches = sequence((1, 15), (2, 10), (3, 5), (4, 0))

    result = credit(
        AttributionModel.TIME_DECAY, touches, conversion_at=CONVERSION_AT, half_life_days=5, amount_minor=15_00
    )

    assert [str(s) for s in result.touch_shares] == ["0.066667", "0.133333", "0.266667", "0.533333"]
    assert sum(result.touch_shares) == D(1)
    assert result.participant_amounts == {1: 100, 2: 200, 3: 400, 4: 800}


def test_time_decay_on_the_five_touch_sequence_sums_to_exactly_one_and_favours_recent_touches():
    result = credit(AttributionModel.TIME_DECAY, FIVE, conversion_at=CONVERSION_AT, half_life_days=7)

    assert sum(result.touch_shares) == D(1)
    assert sum(result.participant_shares.values()) == D(1)
    assert result.touch_shares == sorted(result.touch_shares)  # older touches weigh less
    # 2^(-20/7) : 1 ≈ 0.1380 : 1, checked independently of the implementation's arithmetic.
    ratio = result.touch_shares[0] / result.touch_shares[-1]
    assert abs(ratio - D(2) ** (D(-20) / D(7))) < D("0.00001")


@pytest.mark.parametrize(
    ("touches", "expected"),
    [
        (sequence((1, 3)), ["1.000000"]),
        (sequence((1, 3), (2, 1)), ["0.500000", "0.500000"]),
        (sequence((1, 3), (2, 2), (3, 1)), ["0.400000", "0.200000", "0.400000"]),
        (sequence((1, 4), (2, 3), (3, 2), (4, 1)), ["0.400000", "0.100000", "0.100000", "0.400000"]),
    ],
    ids=["one-touch-100", "two-touches-50-50", "three-touches-40-20-40", "four-touches-40-10-10-40"],
)
def test_position_based_edge_cases(touches, expected):
    result = credit(AttributionModel.POSITION_BASED, touches, conversion_at=CONVERSION_AT, half_life_days=7)
    assert [str(s) for s in result.touch_shares] == expected


def test_linear_thirds_give_the_leftover_millionth_to_the_last_touch():
    assert [
        str(s)
        for s in exact_shares(
            touch_weights(
                AttributionModel.LINEAR, sequence((1, 3), (2, 2), (3, 1)), conversion_at=CONVERSION_AT, half_life_days=7
            )
        )
    ] == ["0.333333", "0.333333", "0.333334"]


def test_amount_split_is_exact_in_minor_units():
    assert split_amount(100, [D("0.333333"), D("0.333333"), D("0.333334")]) == [33, 33, 34]
    assert split_amount(1, [D("0.5"), D("0.5")]) == [0, 1]
    assert split_amount(0, [D("1")]) == [0]


def test_a_participant_with_only_zero_weight_touches_gets_no_row():
    result = credit(AttributionModel.LAST_TOUCH, FIVE, conversion_at=CONVERSION_AT, half_life_days=7)
    assert set(result.participant_shares) == {2}


@settings(max_examples=150, deadline=None)
@given(
    model=st.sampled_from(list(AttributionModel.values)),
    specs=st.lists(
        st.tuples(st.integers(min_value=1, max_value=6), st.integers(min_value=0, max_value=90 * 24 * 60)),
        min_size=1,
        max_size=40,
    ),
    half_life=st.integers(min_value=0, max_value=60),
    amount=st.integers(min_value=0, max_value=10**12),
)
def test_every_model_sums_to_exactly_one_and_the_exact_amount(model, specs, half_life, amount):
    touches = sorted(
        (
            Touch(ref=f"t{i}", participant_id=p, occurred_at=CONVERSION_AT - timedelta(minutes=minutes))
            for i, (p, minutes) in enumerate(specs)
        ),
        key=lambda touch: touch.occurred_at,
    )

    result = credit(model, touches, conversion_at=CONVERSION_AT, half_life_days=half_life, amount_minor=amount)

    assert sum(result.touch_shares) == D(1)
    assert sum(result.participant_shares.values()) == D(1)
    assert all(D(0) < share <= D(1) for share in result.participant_shares.values())
    assert sum(result.participant_amounts.values()) == amount
    assert all(share.as_tuple().exponent == -6 for share in result.touch_shares)


def test_unknown_model_is_refused():
    with pytest.raises(ValueError, match="unknown attribution model"):
        touch_weights("most_charming", FIVE, conversion_at=CONVERSION_AT, half_life_days=7)
