"""Messages at each step (R-20): e-mailed once after commit, recorded for the dashboard, never resent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.core import mail
from django.utils import timezone

from programs.dashboard_links import dashboard_url
from referral_platform.tenancy.actors import system_actor
from rewards.messages import business_days_between, conversion_earnings_words
from rewards.models import ParticipantMessage, Reward
from rewards.payouts import payout_mark_fulfilled, payout_prepare
from rewards.services import reward_approve
from rewards.tasks import evaluate_conversion, message_referral_stage
from tests import factories as f

from .pipeline import Pipeline, program_with_rules, referrer, rules_doc

pytestmark = pytest.mark.django_db

FIFTY_PER_CUSTOMER = rules_doc(referrer=[{"kind": "flat_per_conversion", "amount_minor": 5_000}])


@pytest.fixture
def pipe(world, django_capture_on_commit_callbacks):
    return Pipeline(world, django_capture_on_commit_callbacks)


def _kinds(participant):
    return list(
        ParticipantMessage.objects.filter(participant=participant).order_by("pk").values_list("kind", flat=True)
    )


def test_a_new_referral_thanks_the_referrer_once_with_the_24_hour_promise(world, pipe):
    program = program_with_rules(world.a, FIFTY_PER_CUSTOMER)
    dana, link = referrer(program, "Dana Whitfield")

    referral = pipe.sign_up(email="cto@orbit.example", customer="cus_orbit", code=link.code, company="Orbit Labs")

    [message] = ParticipantMessage.objects.filter(participant=dana)
    assert (message.kind, message.referral_id, message.tenant_id) == ("referral_received", referral.pk, world.a.pk)
    assert message.subject == "Thanks for referring Orbit Labs"
    assert "will review it within 24 hours" in message.body and dashboard_url(dana) in message.body
    assert [m.to for m in mail.outbox] == [[dana.email]] and mail.outbox[0].subject == message.subject
    assert message.emailed_at is not None

    # A retried task sends nothing more
    assert message_referral_stage.run(referral.pk, "received") is False
    assert ParticipantMessage.objects.count() == 1 and len(mail.outbox) == 1


def test_a_qualified_lead_message_says_what_the_conversion_will_earn(world, pipe):
    program = program_with_rules(world.a, FIFTY_PER_CUSTOMER)
    dana, link = referrer(program, "Dana Whitfield")
    pipe.sign_up(email="cto@orbit.example", customer="cus_orbit", code=link.code, company="Orbit Labs")

    pipe.event("q_orbit", "qualified", customer="cus_orbit")

    message = ParticipantMessage.objects.get(participant=dana, kind="referral_qualified")
    assert message.subject == "Orbit Labs is now a qualified lead"
    assert "your referral Orbit Labs is now a qualified lead. When they become a customer you earn 50.00 USD." in (
        message.body
    )


def test_the_conversion_message_names_the_reward_and_when_it_arrives_and_is_sent_once(world, pipe):
    program = program_with_rules(world.a, FIFTY_PER_CUSTOMER, hold_days=14)
    dana, link = referrer(program, "Dana Whitfield")
    pipe.sign_up(email="cto@orbit.example", customer="cus_orbit", code=link.code, company="Orbit Labs")
    sent_before = len(mail.outbox)

    event = pipe.pay("pay_orbit_1", customer="cus_orbit", amount=49_900)

    message = ParticipantMessage.objects.get(participant=dana, kind="referral_converted")
    [reward] = Reward.objects.filter(participant=dana)
    days = business_days_between(timezone.now(), reward.hold_until) + 2
    assert message.subject == "Orbit Labs became a customer: 50.00 USD for you"
    assert f"Your reward of 50.00 USD arrives within {days} business days." in message.body
    assert len(mail.outbox) == sent_before + 1

    evaluate_conversion.run(event.pk)  # a redelivered evaluation

    assert ParticipantMessage.objects.filter(participant=dana, kind="referral_converted").count() == 1
    assert len(mail.outbox) == sent_before + 1


def test_approval_says_on_its_way_and_payment_says_paid(world, pipe):
    program = program_with_rules(world.a, FIFTY_PER_CUSTOMER)
    dana, link = referrer(program, "Dana Whitfield")
    pipe.sign_up(email="cto@orbit.example", customer="cus_orbit", code=link.code)
    pipe.pay("pay_orbit_1", customer="cus_orbit", amount=49_900)
    [reward] = Reward.objects.filter(participant=dana)
    f.ParticipantStripeProfileFactory(participant=dana)
    actor = system_actor(world.a)

    with pipe.capture(execute=True):
        reward_approve(reward=reward, actor=actor)
        [payout] = payout_prepare(participant=dana)
        payout_mark_fulfilled(payout=payout, actor=actor, reference="tr_by_hand")

    assert _kinds(dana) == ["referral_received", "referral_converted", "reward_approved", "reward_paid"]
    approved = ParticipantMessage.objects.get(participant=dana, kind="reward_approved")
    assert approved.subject == "Your reward of 50.00 USD is on its way" and approved.reward_id == reward.pk
    assert ParticipantMessage.objects.get(participant=dana, kind="reward_paid").subject == (
        "Your reward of 50.00 USD has been paid"
    )
    assert [m.subject for m in mail.outbox][-2:] == [approved.subject, "Your reward of 50.00 USD has been paid"]


def test_the_referred_company_hears_about_its_own_reward(world, pipe):
    rules = rules_doc(
        referrer=[{"kind": "flat_per_conversion", "amount_minor": 5_000}],
        referred=[{"kind": "free_months", "months": 1}],
    )
    program = program_with_rules(world.a, rules)
    _dana, link = referrer(program, "Dana Whitfield")
    pipe.sign_up(email="cto@orbit.example", customer="cus_orbit", code=link.code, company="Orbit Labs")

    pipe.pay("pay_orbit_1", customer="cus_orbit", amount=49_900)

    [referred] = Reward.objects.filter(beneficiary_side="referred")
    assert (referred.kind, referred.coupon_percent_off, referred.coupon_duration_months) == ("coupon", 100, 1)
    message = ParticipantMessage.objects.get(participant=referred.participant)
    assert message.subject == "Your welcome reward: 1 free month"
    assert "through Dana Whitfield: you get 1 free month" in message.body
    assert message.email_to == "cto@orbit.example"


def test_earnings_words_follow_tiers_and_partner_tiers():
    from programs.rules import parse_rules

    rules = parse_rules(
        rules_doc(
            referrer=[
                {
                    "kind": "tiered",
                    "tiers": [{"min_referrals": 1, "amount_minor": 5_000}, {"min_referrals": 4, "percent_bp": 1_000}],
                },
                {"kind": "recurring_percent", "percent_bp": 2_000, "months": 12},
            ],
            partner_tiers={"gold": {"referrer": [{"kind": "percent_of_revenue", "percent_bp": 3_000}]}},
        )
    )

    assert conversion_earnings_words(rules, next_referral=1) == (
        "50.00 USD and 20 % of every payment in their first 12 months"
    )
    assert conversion_earnings_words(rules, next_referral=4).startswith("10 % of their first payment and")
    assert conversion_earnings_words(rules, tier="gold") == "30 % of their first payment"


def test_business_days_skip_weekends():
    friday = datetime(2026, 11, 27, 12, tzinfo=UTC)
    assert business_days_between(friday, friday + timedelta(days=3)) == 1  # Sat, Sun skipped, Monday counts
    assert business_days_between(friday, friday) == 0
