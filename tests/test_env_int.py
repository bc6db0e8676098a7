"""Whole-number settings from the environment (``env_int``: the drain's and settlement's chunk sizes): a value
that is not a whole number, or too small, stops the start naming the variable and the value."""

from __future__ import annotations

import pytest

from referral_platform.settings.base import env_int


def test_unset_or_blank_is_the_default(monkeypatch):
    monkeypatch.delenv("STRIPE_DRAIN_CHUNK", raising=False)
    assert env_int("STRIPE_DRAIN_CHUNK", 200) == 200
    monkeypatch.setenv("STRIPE_DRAIN_CHUNK", "  ")
    assert env_int("STRIPE_DRAIN_CHUNK", 200) == 200


def test_a_whole_number_is_taken(monkeypatch):
    monkeypatch.setenv("SETTLEMENT_CHUNK", " 75 ")
    assert env_int("SETTLEMENT_CHUNK", 200) == 75


@pytest.mark.parametrize(
    ("raw", "message"),
    [("fifty", "whole number, not 'fifty'"), ("2.5", "whole number"), ("0", "at least 1, not 0"), ("-3", "at least 1")],
)
def test_anything_else_names_the_variable(monkeypatch, raw, message):
    monkeypatch.setenv("STRIPE_DRAIN_CHUNK", raw)
    with pytest.raises(ValueError, match="STRIPE_DRAIN_CHUNK") as raised:
        env_int("STRIPE_DRAIN_CHUNK", 200)
    assert message in str(raised.value)


def test_a_setting_that_may_be_off_takes_zero_and_refuses_less(monkeypatch):
    monkeypatch.setenv("DB_ANALYZE_YOUNG_PAGES", "0")
    assert env_int("DB_ANALYZE_YOUNG_PAGES", 10, minimum=0) == 0
    monkeypatch.setenv("DB_ANALYZE_YOUNG_PAGES", "-1")
    with pytest.raises(ValueError, match="DB_ANALYZE_YOUNG_PAGES must be at least 0, not -1"):
        env_int("DB_ANALYZE_YOUNG_PAGES", 10, minimum=0)
