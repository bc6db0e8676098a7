"""Demo rewards for ``manage.py seed_demo``: every reward comes from the real evaluation of a demo
conversion, then moves through the real services, so the demo shows every state, an approval waiting in
the review queue, a paid payout and a clawback, on a real ledger, with the participants' messages.

Nothing calls Stripe: the cash payout is recorded as paid outside the platform with the reference "demo".
"""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from programs.models import Participant, Program
from referral_platform.tenancy.actors import system_actor
from referral_platform.tenancy.models import Tenant
from referrals.models import ConversionEvent, ConversionEventStatus, ReferralLink
from rewards.evaluation import reward_evaluate
from rewards.models import ParticipantStripeProfile, PayoutSettings, Reward, StripeCredentials
from rewards.payouts import payout_mark_fulfilled, payout_prepare
from rewards.services import reward_approve, reward_reject

HISTORY_PREFIX = "demo_rw_"
# (key, program slug, referrer's external id, referred company, days ago the customer signed up)
HISTORY = [
    ("helios", "customers", "cus_1002", "Helios Energy", 48),  # paid by transfer, then half refunded: clawback
    ("nimbus", "customers", "cus_1003", "Nimbus Health", 46),  # qualified lead: a gift, fulfilled by hand
    ("vertex", "customers", "cus_1004", "Vertex Retail", 44),  # approved, waiting for the payout run
    ("quasar", "customers", "cus_1006", "Quasar Labs", 43),  # rejected by a marketer
    ("zephyr", "customers", "cus_1005", "Zephyr Media", 12),  # refunded in full before payout: reversed
    ("atlas", "partners", "ptn_01", "Atlas Logistics", 50),  # above the auto-approve limit: review queue
]


def demo_conversions_evaluate(tenant: Tenant) -> None:
    """Evaluate every processed demo conversion (inline; the queued tasks then find them done)."""
    events = (
        ConversionEvent.objects.for_tenant(tenant)
        .filter(status__in=[ConversionEventStatus.PROCESSED, ConversionEventStatus.UNATTRIBUTED])
        .exclude(source="history")
    )  # the analytics history (demo/analytics.py) is facts, not events to evaluate
    for event_id in events.order_by("occurred_at", "pk").values_list("pk", flat=True):
        reward_evaluate(event_id=event_id)


def demo_messages_send(tenant: Tenant) -> None:
    """The referral-stage messages of every demo referral, sent now rather than by the queued tasks, so the
    demo participants' dashboards have them at once (each is sent once: the tasks then find them)."""
    from referrals.models import Referral
    from rewards.messages import message_referral_stage

    for referral_id, qualified_at in (
        Referral.objects.for_tenant(tenant)
        .exclude(referred_external_id__startswith="hist-")  # the analytics history sends no messages
        .order_by("created_at", "pk")
        .values_list("pk", "qualified_at")
    ):
        message_referral_stage(referral_id=referral_id, stage="received")
        if qualified_at is not None:
            message_referral_stage(referral_id=referral_id, stage="qualified")


def seed_rewards(tenant: Tenant) -> int:
    """Evaluate the demo conversions and play the reward history once per tenant; returns how many
    rewards exist afterwards (0 when the history was already there)."""
    from referrals.services import conversion_event_process, conversion_event_receive, signup_record

    demo_conversions_evaluate(tenant)
    if ConversionEvent.objects.for_tenant(tenant).filter(external_event_id__startswith=HISTORY_PREFIX).exists():
        return 0
    customers = Program.objects.for_tenant(tenant).filter(slug="customers").first()
    if customers is None:
        return 0
    actor = system_actor(tenant)
    now = timezone.now().replace(microsecond=0)
    domain = "example" if tenant.slug == "acme" else f"{tenant.slug}.example"
    StripeCredentials.objects.get_or_create(
        tenant=tenant,
        defaults={"secret_key": "sk_test_demo_not_a_real_key", "webhook_secret": "whsec_demo_not_a_real_secret"},
    )
    PayoutSettings.objects.get_or_create(tenant=tenant, program=customers, defaults={"minimum_payout_minor": 2_000})

    def person(external_id: str) -> Participant:
        return Participant.objects.for_tenant(tenant).get(external_id=external_id)

    def event(key: str, kind: str, customer: str, days_ago: float, amount_minor: int = 0, **extra) -> ConversionEvent:
        data = {
            "external_event_id": f"{HISTORY_PREFIX}{key}",
            "kind": kind,
            "amount_minor": amount_minor,
            "currency": "USD" if amount_minor else "",
            "occurred_at": now - timedelta(days=days_ago),
            "customer_external_id": customer,
        }
        raw = {name: value.isoformat() if hasattr(value, "isoformat") else value for name, value in data.items()}
        received = conversion_event_receive(tenant=tenant, raw={**raw, **extra}, queue_processing=False, **data)
        processed = conversion_event_process(event_id=received.event.pk)
        reward_evaluate(event_id=processed.pk)
        return processed

    for key, program_slug, referrer_id, company, days_ago in HISTORY:
        referrer = Participant.objects.for_tenant(tenant).get(program__slug=program_slug, external_id=referrer_id)
        signup_record(
            tenant=tenant,
            actor=actor,
            email=f"founder@{key}.{domain}",
            referral_code=ReferralLink.objects.for_tenant(tenant).get(participant=referrer, channel="direct").code,
            customer_external_id=f"acct_{key}",
            company=company,
            company_size="51-200",
            occurred_at=now - timedelta(days=days_ago),
        )

    def reward_of(key: str, participant: Participant) -> Reward:
        return Reward.objects.for_tenant(tenant).get(
            participant=participant, conversion_event__external_event_id=f"{HISTORY_PREFIX}{key}"
        )

    # Paid by a Connect transfer (made by hand: reference "demo"), then half refunded: a clawback that the
    # participant's next payout nets off.
    ravi = person("cus_1002")
    ParticipantStripeProfile.objects.get_or_create(
        tenant=tenant, participant=ravi, defaults={"connected_account_id": "acct_demo_connected"}
    )
    event("helios_pay", "payment", "acct_helios", 45, 48_000)
    reward_approve(reward=reward_of("helios_pay", ravi), actor=actor)
    [cash_payout] = payout_prepare(participant=ravi)
    payout_mark_fulfilled(payout=cash_payout, actor=actor, reference="demo", note="Demo: transfer made by hand.")
    event("helios_refund", "refund", "acct_helios", 3, 24_000, refunded_event_id=f"{HISTORY_PREFIX}helios_pay")

    # A qualified lead earns the referrer a hoodie, handed over by a marketer.
    sofia = person("cus_1003")
    event("nimbus_qualified", "qualified", "acct_nimbus", 40)
    reward_approve(reward=reward_of("nimbus_qualified", sofia), actor=actor)
    [gift_payout] = payout_prepare(participant=sofia)
    payout_mark_fulfilled(payout=gift_payout, actor=actor, note="Hoodie shipped, tracking 1Z999AA1.")

    # Approved, waiting for the next payout run (the participant has no Connect account yet).
    event("vertex_pay", "payment", "acct_vertex", 41, 39_900)
    reward_approve(reward=reward_of("vertex_pay", person("cus_1004")), actor=actor)

    # Rejected by a marketer, with the reason.
    event("quasar_pay", "payment", "acct_quasar", 40, 45_000)
    reward_reject(
        reward=reward_of("quasar_pay", person("cus_1006")),
        actor=actor,
        reason="Existing customer: Quasar Labs already had a contract through direct sales.",
    )

    # Refunded in full before payout, through the conversion API's refund event: reversed.
    event("zephyr_pay", "payment", "acct_zephyr", 10, 30_000)
    event("zephyr_refund", "refund", "acct_zephyr", 9, 30_000)

    # Above the partner program's auto-approve limit (the customers' payments above stay under it, so
    # their referred companies' free months are auto-approved), hold over: waits in the review queue.
    event("atlas_pay", "payment", "acct_atlas", 40, 500_000)
    return Reward.objects.for_tenant(tenant).count()
