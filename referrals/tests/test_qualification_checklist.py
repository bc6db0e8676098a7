"""A marketer qualifying a lead by hand must see the program's checklist confirmed first."""

from __future__ import annotations

import pytest

from programs.services import program_current_version
from referrals.models import Referral, ReferralStatus
from rewards.tests.pipeline import program_with_rules, rules_doc
from tests import factories as f

pytestmark = pytest.mark.django_db

CHECKLIST_RULES = rules_doc(
    referrer=[{"kind": "flat_per_conversion", "amount_minor": 5_000}],
    qualification={"budget": True, "authority": True, "need": False, "timeline": False},
)


def _lead(world, qualification):
    program = program_with_rules(world.a, CHECKLIST_RULES)
    referrer = f.ParticipantFactory(program=program)
    return f.ReferralFactory(
        referrer=referrer,
        status=ReferralStatus.SIGNED_UP,
        qualification=qualification,
        rule_version=program_current_version(program=program),
    )


def _qualify_in_admin(client, world, referral):
    client.force_login(world.marketer_a)
    return client.post(
        "/admin/referrals/referral/",
        {"action": "mark_qualified", "_selected_action": [referral.pk]},
        follow=True,
    )


def test_lead_missing_checklist_items_is_not_qualified_and_the_marketer_is_told_why(client, world):
    referral = _lead(world, {"budget": "Approved, 40k", "authority": "  "})

    page = _qualify_in_admin(client, world, referral).content.decode()

    assert "missing authority" in page
    referral.refresh_from_db()
    assert referral.status == ReferralStatus.SIGNED_UP and referral.qualified_at is None


def test_lead_with_the_checklist_confirmed_is_qualified(client, world):
    referral = _lead(world, {"budget": "Approved, 40k", "authority": "VP Sales signs", "notes": "demo booked"})

    _qualify_in_admin(client, world, referral)

    referral.refresh_from_db()
    assert referral.status == ReferralStatus.QUALIFIED and referral.qualified_at is not None


def test_marketer_of_another_tenant_cannot_qualify_the_lead(client, world):
    referral = _lead(world, {"budget": "yes", "authority": "yes"})
    client.force_login(world.marketer_b)

    client.post("/admin/referrals/referral/", {"action": "mark_qualified", "_selected_action": [referral.pk]})

    assert Referral.objects.get(pk=referral.pk).status == ReferralStatus.SIGNED_UP
