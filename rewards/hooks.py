"""How rewards react to the lower layers (registered in ``RewardsConfig.ready``; referral_platform/hooks.py).

- a referral changed (a stage, a date, a rejection, a review decision) or one of its conversions was
  processed → its rewards are settled again after commit (``rewards.settle_referral``, once per
  transaction);
- a referral was created or qualified → the referrer is told (``rewards.message_referral_stage``);
- a participant became active with ``welcome`` → the welcome e-mail with their links and dashboard;
- programs asks for a rules change preview → ``rewards.preview.rules_change_preview``.
"""

from __future__ import annotations

from referral_platform.celery import enqueue_on_commit
from referral_platform.hooks import hooks


def settle_after_referral_change(*, referral, change: str) -> None:
    from .tasks import message_referral_stage, settle_referral

    enqueue_on_commit(settle_referral, referral.pk, once=True)
    if change == "qualified":
        enqueue_on_commit(message_referral_stage, referral.pk, "qualified", once=True)


def settle_after_conversion(*, event) -> None:
    from .tasks import settle_referral

    if event.referral_id is not None:
        enqueue_on_commit(settle_referral, event.referral_id, once=True)


def tell_the_referrer_it_was_received(*, referral) -> None:
    from .tasks import message_referral_stage

    enqueue_on_commit(message_referral_stage, referral.pk, "received", once=True)


def welcome(*, participant, welcome: bool = False) -> None:
    if welcome:
        from .messages import message_welcome

        message_welcome(participant=participant)


def preview(*, tenant, program, proposed_rules, **options):
    from .preview import rules_change_preview

    return rules_change_preview(tenant, program=program, proposed_rules=proposed_rules, **options)


def activity(*, participant) -> list[dict]:
    """Rewards, payouts and messages of a participant, for their admin page (``participant_activity``)."""
    from django.urls import reverse

    from referral_platform.money import format_amount

    from .models import ParticipantMessage, Payout, Reward

    rewards = Reward.objects.for_tenant(participant.tenant_id).filter(participant=participant).order_by("-pk")
    payouts = Payout.objects.for_tenant(participant.tenant_id).filter(participant=participant).order_by("-pk")
    messages = (
        ParticipantMessage.objects.for_tenant(participant.tenant_id).filter(participant=participant).order_by("-pk")
    )
    return [
        {
            "title": "Rewards",
            "count": rewards.count(),
            "headers": ["Amount", "Status", "What", "Earned"],
            "rows": [
                [
                    format_amount(r.amount_minor, r.currency),
                    r.get_status_display(),
                    r.description or r.get_kind_display(),
                    f"{r.created_at:%Y-%m-%d}",
                ]
                for r in rewards[:10]
            ],
            "more_url": reverse("admin:rewards_reward_changelist") + f"?participant__id__exact={participant.pk}",
        },
        {
            "title": "Payouts",
            "count": payouts.count(),
            "headers": ["Amount", "Status", "Created"],
            "rows": [
                [format_amount(p.amount_minor, p.currency), p.get_status_display(), f"{p.created_at:%Y-%m-%d}"]
                for p in payouts[:10]
            ],
            "more_url": reverse("admin:rewards_payout_changelist") + f"?participant__id__exact={participant.pk}",
        },
        {
            "title": "Messages",
            "count": messages.count(),
            "headers": ["Subject", "Kind", "Sent"],
            "rows": [
                [m.subject, m.get_kind_display(), f"{m.emailed_at:%Y-%m-%d %H:%M}" if m.emailed_at else "not e-mailed"]
                for m in messages[:10]
            ],
            "more_url": reverse("admin:rewards_participantmessage_changelist")
            + f"?participant__id__exact={participant.pk}",
        },
    ]


def register() -> None:
    from referral_platform.reconcile import register_sweep

    from . import sweeps
    from .pipeline import conversions_process_batch

    register_sweep("rewards.stripe_events", sweeps.stripe_events_requeue_stale)
    register_sweep("rewards.payouts", sweeps.payouts_requeue_stale)
    register_sweep("rewards.settlements", sweeps.settlements_requeue_missing)
    hooks.register("referral_changed", settle_after_referral_change)
    hooks.register("conversion_processed", settle_after_conversion)
    hooks.register("conversions_process_batch", conversions_process_batch)
    hooks.register("referral_created", tell_the_referrer_it_was_received)
    hooks.register("participant_activated", welcome)
    hooks.register("rules_change_preview", preview)
    hooks.register("participant_activity", activity)
