"""A marketer reviews a flagged referral in a real browser: reads the evidence, clears it with a reason."""

from __future__ import annotations

import pytest

from referral_platform.tenancy.models import AuditEvent, Role
from referrals import services
from referrals.models import Referral, ReviewStatus
from tests.factories import PASSWORD, MembershipFactory, ParticipantFactory, ProgramFactory, ReferralLinkFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_marketer_reads_the_evidence_and_clears_a_flagged_referral(page, live_server):
    membership = MembershipFactory(role=Role.MARKETER)
    tenant = membership.tenant
    dana = ParticipantFactory(program=ProgramFactory(tenant=tenant), name="Dana W", email="dana@northwind.example")
    link = ReferralLinkFactory(participant=dana)
    outcome = services.signup_record(
        tenant=tenant, actor="test", email="Dana+trial@Northwind.example", referral_code=link.code
    )
    referral = outcome.referral
    assert Referral.objects.get(pk=referral.pk).review_status == ReviewStatus.FLAGGED

    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("input[name=login]", membership.user.email)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.goto(f"{live_server.url}/admin/referrals/fraudreview/")
    page.click(f"text=#{referral.pk} dana+trial@northwind.example")

    compared = page.locator("table.fraud-compared").inner_text()
    assert "dana+trial@northwind.example" in compared and "dana@northwind.example" in compared

    page.click("text=Clear this referral…")
    page.fill("textarea[name=reason]", "   ")  # the browser requires a value; blanks reach the server
    page.click("input[type=submit]")
    assert "nothing has been changed" in page.locator("p.errornote").inner_text()
    assert Referral.objects.get(pk=referral.pk).review_status == ReviewStatus.FLAGGED

    page.fill("textarea[name=reason]", "Dana's second company, checked by phone")
    page.click("input[type=submit]")

    assert "1 referral(s) cleared." in page.locator("ul.messagelist").inner_text()
    assert Referral.objects.get(pk=referral.pk).review_status == ReviewStatus.CLEARED
    audit = AuditEvent.objects.get(action="referral.review.cleared", object_id=str(referral.pk))
    assert audit.reason == "Dana's second company, checked by phone"
