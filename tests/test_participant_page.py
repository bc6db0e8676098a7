"""A participant's admin page shows their links, clicks, referrals, rewards, payouts and messages in one place."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from tests import factories as f

pytestmark = pytest.mark.django_db


def test_the_participant_page_gathers_everything_about_them(world, client):
    program = f.ProgramFactory(tenant=world.a, currency="USD")
    dana = f.ParticipantFactory(program=program, name="Dana")
    f.ReferralFactory(referrer=dana, referred_company="Global Bank")
    f.make_ledger_reward(dana, amount_minor=4_200, now=timezone.now() - timedelta(hours=1))
    other = f.ParticipantFactory(program=program)
    f.ReferralFactory(referrer=other, referred_company="Not Dana's Co")
    client.force_login(world.marketer_a)

    page = client.get(reverse("admin:programs_participant_change", args=[dana.pk])).content.decode()

    for title in ("Clicks (", "Referrals (1)", "Rewards (1)", "Payouts (0)", "Messages ("):
        assert title in page, title
    assert "Global Bank" in page and "42.00 USD" in page
    assert "Not Dana's Co" not in page
    assert f"?referrer__id__exact={dana.pk}" in page
