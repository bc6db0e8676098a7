"""Demo rewards for ``manage.py seed_demo``: every state, a review waiting, a paid payout, a clawback.

Everything goes through the real services (so the ledger is real); nothing calls Stripe: the cash
payout is recorded as paid outside the platform with the reference "demo".
"""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from programs.models import Participant, Program
from referral_platform.tenancy.actors import system_actor
from referral_platform.tenancy.models import Tenant

from .models import ParticipantStripeProfile, PayoutSettings, Reward, StripeCredentials
from .payouts import payout_mark_fulfilled, payout_prepare
from .services import reward_approve, reward_create, reward_reduce_for_refund, reward_reject


def seed_rewards(tenant: Tenant) -> int:
    """Create the demo rewards once per tenant; returns how many were created (0 when already there)."""
    if Reward.objects.for_tenant(tenant).exists():
        return 0
    program = Program.objects.for_tenant(tenant).filter(slug="customers").first()
    people = list(Participant.objects.for_tenant(tenant).filter(program=program).order_by("pk")[:6])
    if program is None or len(people) < 6:
        return 0
    actor = system_actor(tenant)
    now = timezone.now()
    long_ago = now - timedelta(days=program.hold_days + 10)
    StripeCredentials.objects.get_or_create(
        tenant=tenant,
        defaults={"secret_key": "sk_test_demo_not_a_real_key", "webhook_secret": "whsec_demo_not_a_real_secret"},
    )
    PayoutSettings.objects.get_or_create(tenant=tenant, program=program, defaults={"minimum_payout_minor": 2_000})
    ParticipantStripeProfile.objects.get_or_create(
        tenant=tenant, participant=people[0], defaults={"connected_account_id": "acct_demo_connected"}
    )

    def create(person, amount, key, *, when=now, **kwargs):
        return reward_create(
            tenant=tenant,
            program=program,
            participant=person,
            amount_minor=amount,
            source_key=f"demo:{key}",
            actor=actor,
            now=when,
            explanation={"rule": "flat", "amount_minor": amount},
            explanation_text=f"Flat reward of {amount / 100:.2f} {program.currency} for a converted referral.",
            **kwargs,
        )

    # Paid by a Connect transfer (recorded outside the platform: reference "demo"), then half refunded:
    # a clawback the participant's next payout nets off.
    paid = create(people[0], 20_000, "paid-cash", when=long_ago)
    reward_approve(reward=paid, actor=actor, now=now)
    [cash_payout] = payout_prepare(participant=people[0], now=now)
    payout_mark_fulfilled(payout=cash_payout, actor=actor, reference="demo", note="Demo: transfer made by hand.")
    reward_reduce_for_refund(reward=paid, refunded_minor=50, paid_minor=100, actor=actor)

    # A gift card fulfilled by a marketer.
    gift = create(people[1], 2_500, "gift-card", when=long_ago, kind="manual", description="Gift card")
    reward_approve(reward=gift, actor=actor, now=now)
    [gift_payout] = payout_prepare(participant=people[1], now=now)
    payout_mark_fulfilled(payout=gift_payout, actor=actor, note="Gift card code sent by e-mail.")

    # Approved, waiting for the next payout run (the participant has no Connect account yet).
    approved = create(people[2], 12_000, "approved", when=long_ago)
    reward_approve(reward=approved, actor=actor, now=now)

    # Waiting in the review queue: above the auto-approve limit, hold over.
    create(people[3], program.auto_approve_limit_minor + 25_000, "review", when=long_ago)

    # On hold.
    create(people[4], 5_000, "on-hold")

    # Rejected with a reason.
    rejected = create(people[5], 8_000, "rejected", when=long_ago)
    reward_reject(reward=rejected, actor=actor, reason="Self-referral: same company domain.")

    # Reversed: the referred customer's payment was refunded in full before payout.
    reversed_ = create(people[4], 6_000, "refunded")
    reward_reduce_for_refund(reward=reversed_, refunded_minor=100, paid_minor=100, actor=actor)
    return Reward.objects.for_tenant(tenant).count()
