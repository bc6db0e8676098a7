"""The ``account_owner`` hook: an account a partner's deal registration protects is established for that
partner alone — at sign-up, on a payment, and a competing partner's lead is refused."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from referral_platform.hooks import AccountClaim, hooks
from referrals import services
from referrals.models import Attribution, Referral, TouchpointKind

from .builders import click, program_for, referrer_with_link

pytestmark = pytest.mark.django_db
NOW = timezone.now().replace(microsecond=0)


@pytest.fixture
def protected(world):
    """Globex's account (globex.example) is protected by Priya's deal; Dana is a customer with a link."""
    program = program_for(world.a, attribution_model="linear", cookie_window_days=30)
    dana, dana_link = referrer_with_link(program)
    priya, _ = referrer_with_link(program, name="Priya Sharma", company="Quanta Partners")  # a direct link

    def owner(*, tenant, program, email, company, at):
        if tenant.pk == world.a.pk and email.endswith("@globex.example"):
            return AccountClaim(participant=priya, evidence={"deal": "DR-7", "domain": "globex.example"})
        return None

    hooks.register("account_owner", owner)
    yield program, dana, dana_link, priya
    hooks.unregister("account_owner", owner)


def test_a_sign_up_of_a_protected_account_goes_to_the_registering_partner_alone(world, protected):
    _program, _dana, dana_link, priya = protected
    click(dana_link, visitor_id="vis-1", at=NOW - timedelta(days=2))

    outcome = services.signup_record(
        tenant=world.a, actor="test", email="cto@globex.example", visitor_id="vis-1", referral_code=dana_link.code
    )

    referral = outcome.referral
    assert referral.referrer == priya
    event = services.conversion_event_process(
        event_id=services.conversion_event_receive(
            tenant=world.a,
            external_event_id="pay_1",
            kind="payment",
            occurred_at=NOW,
            raw={"k": 1},
            amount_minor=10_000,
            currency="USD",
            email="cto@globex.example",
        ).event.pk
    )
    assert {(row.participant_id, str(row.share)) for row in Attribution.objects.filter(conversion_event=event)} == {
        (priya.pk, "1.000000")
    }
    touch = referral.touchpoints.get(kind=TouchpointKind.PARTNER_REGISTRATION)
    assert touch.data == {"deal": "DR-7", "domain": "globex.example"}


def test_a_payment_of_a_protected_account_with_no_sign_up_is_established_for_the_partner(world, protected):
    _program, _dana, _link, priya = protected

    event = services.conversion_event_process(
        event_id=services.conversion_event_receive(
            tenant=world.a,
            external_event_id="pay_2",
            kind="payment",
            occurred_at=NOW,
            raw={"k": 2},
            amount_minor=10_000,
            currency="USD",
            email="ap@globex.example",
        ).event.pk
    )

    assert event.referral.referrer == priya


def test_another_partners_lead_for_a_protected_account_is_refused_and_nothing_is_written(world, protected):
    _program, dana, _link, _priya = protected

    with pytest.raises(ValidationError) as refused:
        services.lead_submit(
            tenant=world.a, actor="test", participant=dana, name="Jo", email="jo@globex.example", company="Globex"
        )

    assert "protected by another partner" in str(refused.value.message_dict["company"])
    assert not Referral.objects.filter(referred_email="jo@globex.example").exists()


def test_an_unprotected_account_is_untouched_by_the_hook(world, protected):
    _program, dana, dana_link, _priya = protected

    outcome = services.signup_record(
        tenant=world.a, actor="test", email="cto@initech.example", referral_code=dana_link.code
    )

    assert outcome.referral.referrer == dana
