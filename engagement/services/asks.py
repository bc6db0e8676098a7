"""Asks: the invitation to refer that a trigger moment earned, scheduled and sent by policy.

``ask_schedule`` writes the ask at the policy's delay, moved out of quiet hours; ``ask_send`` (task
``engagement.ask_send``, and ``engagement.asks_send_due`` every minute for delayed ones) re-checks the
unsubscribe and the program's daily cap, enrols the customer (or finds their participant), and sends the
invitation with their link through the communications (send log, unsubscribe link).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from programs.mailing import email_is_opted_out
from programs.models import ParticipantStatus
from programs.services import participant_upsert
from referral_platform.celery import enqueue_on_commit
from referral_platform.tenancy.actors import system_actor

from ..models import Ask, AskStatus, CommunicationKind, EngagementSettings, Moment, TriggerPolicy
from ..policy import local_day_bounds, next_allowed_time, zone


def tenant_zone(tenant_id: int):
    settings_row = EngagementSettings.objects.for_tenant(tenant_id).first()
    return zone(settings_row.time_zone if settings_row else "UTC")


def ask_schedule(*, moment: Moment, policy: TriggerPolicy, now: datetime) -> Ask:
    """The ask of ``moment``: due after the policy's delay (from the moment, not from its arrival), outside
    quiet hours. Sent at once after commit when already due."""
    due = max(moment.occurred_at + timedelta(minutes=policy.delay_minutes), now)
    due = next_allowed_time(
        due, quiet_start=policy.quiet_hours_start, quiet_end=policy.quiet_hours_end, tz=tenant_zone(moment.tenant_id)
    )
    ask = Ask.objects.create(
        tenant_id=moment.tenant_id,
        program_id=policy.program_id,
        moment=moment,
        trigger=moment.trigger,
        email=moment.email,
        scheduled_for=due,
        created_at=now,
    )
    if due <= now:
        from ..tasks import ask_send as ask_send_task

        enqueue_on_commit(ask_send_task, ask.pk)
    return ask


@transaction.atomic
def ask_send(*, ask_id: int, now: datetime | None = None) -> Ask | None:
    """Send one due ask (idempotent: a sent or not-yet-due ask is left alone).

    The program's policy row is locked while the daily cap is counted, so concurrent senders never pass it.
    """
    from .communications import communication_send, invitation_context

    now = now or timezone.now()
    ask = Ask.objects.select_for_update(of=("self",)).filter(pk=ask_id, status=AskStatus.SCHEDULED).first()
    if ask is None or ask.scheduled_for > now:
        return ask
    moment = Moment.objects.get(pk=ask.moment_id)
    policy = (
        TriggerPolicy.objects.select_for_update()
        .filter(tenant_id=ask.tenant_id, program_id=ask.program_id, trigger=ask.trigger)
        .first()
    )
    tz = tenant_zone(ask.tenant_id)
    if policy is not None and policy.daily_cap:
        start, end = local_day_bounds(now, tz)
        sent_today = (
            Ask.objects.for_tenant(ask.tenant_id)
            .filter(program_id=ask.program_id, status=AskStatus.SENT, sent_at__gte=start, sent_at__lt=end)
            .count()
        )
        if sent_today >= policy.daily_cap:
            ask.scheduled_for = next_allowed_time(
                end, quiet_start=policy.quiet_hours_start, quiet_end=policy.quiet_hours_end, tz=tz
            )
            ask.note = "daily cap reached; moved to the next day"
            ask.save(update_fields=["scheduled_for", "note"])
            return ask
    if email_is_opted_out(ask.tenant_id, ask.email):
        ask.status = AskStatus.UNSUBSCRIBED
        ask.save(update_fields=["status"])
        return ask
    tenant = ask.program.tenant
    enrolment = participant_upsert(
        tenant=tenant,
        program=ask.program,
        external_id=moment.customer_external_id,
        name=moment.name or ask.email.split("@")[0],
        email=ask.email,
        company=moment.company,
        actor=system_actor(tenant),
        source="trigger",
    )
    participant = enrolment.participant
    ask.participant = participant
    if participant.status != ParticipantStatus.ACTIVE:
        ask.status = AskStatus.FAILED
        ask.note = f"participant is {participant.status}; nothing sent"
        ask.save(update_fields=["participant", "status", "note"])
        return ask
    communication_send(
        participant=participant,
        kind=CommunicationKind.INVITATION,
        related_key=f"ask:{ask.pk}",
        context=invitation_context(participant=participant, moment=moment, policy=policy),
    )
    ask.status = AskStatus.SENT
    ask.sent_at = now
    ask.save(update_fields=["participant", "status", "sent_at"])
    return ask


def asks_due(*, now: datetime | None = None, limit: int = 500) -> list[int]:
    now = now or timezone.now()
    return list(
        Ask.objects.filter(status=AskStatus.SCHEDULED, scheduled_for__lte=now)
        .order_by("scheduled_for")
        .values_list("pk", flat=True)[:limit]
    )
