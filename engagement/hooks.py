"""How engagement reacts to the lower layers (registered in ``EngagementConfig.ready``).

- referrals, rewards, deals and enrolments → an outbound webhook event for the tenant's CRM
  (``engagement.services.webhooks``; nothing is written when no endpoint wants the type);
- a program got a new rule version → the "your terms changed" message to its active participants,
  queued after commit (``engagement.program_update_send``).
"""

from __future__ import annotations

from referral_platform.celery import enqueue_on_commit
from referral_platform.hooks import hooks

REFERRAL_EVENTS = {"qualified": "referral.qualified", "converted": "referral.converted"}
REWARD_EVENTS = {"approved": "reward.approved", "paid": "reward.paid", "clawed_back": "reward.clawed_back"}
DEAL_EVENTS = {"registered": "deal.registered", "conflict": "deal.conflict"}


def _lead_score_boost(tenant_id: int) -> int:
    from .models import EngagementSettings

    row = EngagementSettings.objects.for_tenant(tenant_id).first()
    return row.lead_score_boost if row else EngagementSettings._meta.get_field("lead_score_boost").default


def _participant_data(participant) -> dict:
    return {
        "id": participant.pk,
        "external_id": participant.external_id,
        "email": participant.email,
        "name": participant.name,
        "program_id": participant.program_id,
    }


def referral_data(referral) -> dict:
    return {
        "referral": {
            "id": referral.pk,
            "program_id": referral.program_id,
            "status": referral.status,
            "referred_email": referral.referred_email,
            "referred_name": referral.referred_name,
            "referred_company": referral.referred_company,
            "referred_external_id": referral.referred_external_id,
            "source": referral.source,
            "created_at": referral.created_at.isoformat() if referral.created_at else None,
        },
        "referrer": _participant_data(referral.referrer),
        # referred leads score higher in the CRM's lead scoring.
        "lead_score_boost": _lead_score_boost(referral.tenant_id),
    }


def on_referral_created(*, referral) -> None:
    from .services import webhook_emit

    webhook_emit(
        tenant_id=referral.tenant_id,
        event_type="referral.created",
        dedupe_key=f"referral.created:{referral.pk}",
        data=lambda: referral_data(referral),
    )


def on_referral_changed(*, referral, change: str) -> None:
    from .services import webhook_emit

    event_type = REFERRAL_EVENTS.get(change)
    if event_type:
        webhook_emit(
            tenant_id=referral.tenant_id,
            event_type=event_type,
            dedupe_key=f"{event_type}:{referral.pk}",
            data=lambda: referral_data(referral),
        )


def on_reward_changed(*, reward, change: str) -> None:
    from .services import webhook_emit

    if change == "reversed" and reward.clawed_back_minor:
        change = "clawed_back"  # a paid reward taken back in full ends reversed: the CRM hears "clawed back"
    event_type = REWARD_EVENTS.get(change)
    if event_type is None:
        return
    webhook_emit(
        tenant_id=reward.tenant_id,
        event_type=event_type,
        dedupe_key=f"{event_type}:{reward.pk}:{reward.clawed_back_minor}",
        data=lambda: {
            "reward": {
                "id": reward.pk,
                "status": reward.status,
                "amount_minor": reward.amount_minor,
                "net_minor": reward.amount_minor - reward.reversed_minor,
                "clawed_back_minor": reward.clawed_back_minor,
                "currency": reward.currency,
                "referral_id": reward.referral_id,
            },
            "participant": _participant_data(reward.participant),
        },
    )


def on_deal_changed(*, deal, change: str) -> None:
    from .services import webhook_emit

    event_type = DEAL_EVENTS.get(change)
    if event_type is None:
        return
    webhook_emit(
        tenant_id=deal.tenant_id,
        event_type=event_type,
        dedupe_key=f"{event_type}:{deal.pk}",
        data=lambda: {
            "deal": {
                "id": deal.pk,
                "status": deal.status,
                "company_name": deal.company_name,
                "domain": deal.domain,
                "contact_email": deal.contact_email,
                "deal_value_minor": deal.deal_value_minor,
                "currency": deal.currency,
            },
            "partner": _participant_data(deal.participant),
            "lead_score_boost": _lead_score_boost(deal.tenant_id),
        },
    )


def on_participant_activated(*, participant, welcome: bool = False) -> None:
    from .services import webhook_emit

    webhook_emit(
        tenant_id=participant.tenant_id,
        event_type="participant.enrolled",
        dedupe_key=f"participant.enrolled:{participant.pk}",
        data=lambda: {"participant": _participant_data(participant)},
    )


def on_program_rules_changed(*, program, version, previous) -> None:
    from .tasks import program_update_send

    if previous is not None:
        enqueue_on_commit(program_update_send, program.pk, version.pk, previous.pk, once=True)


def deliveries_requeue_stale(*, cutoff, max_attempts: int) -> int:
    """Reconciler sweep (referral_platform/reconcile.py): outbound webhook deliveries still pending since
    before ``cutoff`` whose attempt was never recorded (a worker died with it; next_attempt_at is unset, so
    ``webhooks_retry_due`` does not see them) are delivered again (idempotent: a message keeps its id)."""
    from django.db.models import Q

    from .models import DeliveryStatus, WebhookDelivery
    from .tasks import webhook_deliver

    stale = list(
        WebhookDelivery.objects.filter(status=DeliveryStatus.PENDING, created_at__lt=cutoff)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lt=cutoff))
        .order_by("pk")
        .values_list("pk", flat=True)[:500]
    )
    for delivery_id in stale:
        enqueue_on_commit(webhook_deliver, delivery_id)
    return len(stale)


def register() -> None:
    from referral_platform.reconcile import register_sweep

    register_sweep("engagement.webhook_deliveries", deliveries_requeue_stale)
    hooks.register("referral_created", on_referral_created)
    hooks.register("referral_changed", on_referral_changed)
    hooks.register("reward_changed", on_reward_changed)
    hooks.register("deal_changed", on_deal_changed)
    hooks.register("participant_activated", on_participant_activated)
    hooks.register("program_rules_changed", on_program_rules_changed)
