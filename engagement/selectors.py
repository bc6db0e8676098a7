"""Reads of engagement (tenant first)."""

from __future__ import annotations

from collections import defaultdict

from django.db.models import Count, Min, Q, Sum
from django.db.models.functions import TruncMonth

from programs.models import Participant
from referral_platform.tenancy.models import Tenant
from referrals.models import ConversionEvent, ConversionKind, Referral
from rewards.models import ParticipantMessage

from .models import (
    Ask,
    AskStatus,
    Communication,
    EngagementSettings,
    Moment,
    Notification,
    Trigger,
    TypeformSettings,
)


def nps_funnel(tenant: Tenant | int, *, program_id=None) -> list[dict]:
    """Per month of the response: responses → promoters → invited → enrolled → with a first referral →
    paying customers (converted referrals) → revenue (their payments, minor units per currency)."""
    moments = Moment.objects.for_tenant(tenant).filter(trigger=Trigger.NPS)
    if program_id and str(program_id).isdigit():
        moments = moments.filter(program_id=int(program_id))
    months: dict = defaultdict(
        lambda: {
            "responses": 0,
            "promoters": 0,
            "invited": 0,
            "enrolled": 0,
            "first_referral": 0,
            "paying": 0,
            "revenue_minor": {},
        }
    )
    for row in (
        moments.annotate(month=TruncMonth("occurred_at"))
        .values("month")
        .annotate(responses=Count("pk"), promoters=Count("pk", filter=Q(score__gte=9)))
    ):
        months[row["month"]].update(responses=row["responses"], promoters=row["promoters"])
    asks = (
        Ask.objects.for_tenant(tenant)
        .filter(moment__in=moments, status=AskStatus.SENT)
        .annotate(month=TruncMonth("moment__occurred_at"))
        .values("month", "participant_id")
    )
    participants_by_month: dict = defaultdict(set)
    for row in asks:
        months[row["month"]]["invited"] += 1
        if row["participant_id"]:
            participants_by_month[row["month"]].add(row["participant_id"])
    for month, ids in participants_by_month.items():
        months[month]["enrolled"] = len(ids)
        referrals = Referral.objects.for_tenant(tenant).filter(referrer_id__in=ids)
        months[month]["first_referral"] = referrals.values("referrer_id").distinct().count()
        paying = referrals.filter(converted_at__isnull=False)
        months[month]["paying"] = paying.count()
        revenue = (
            ConversionEvent.objects.for_tenant(tenant)
            .filter(referral__in=paying, kind=ConversionKind.PAYMENT)
            .values("currency")
            .annotate(total=Sum("amount_minor"))
        )
        months[month]["revenue_minor"] = {row["currency"]: row["total"] for row in revenue}
    return [{"month": month.strftime("%Y-%m"), **values} for month, values in sorted(months.items())]


def communication_counts(tenant: Tenant | int, *, program) -> dict:
    rows = (
        Communication.objects.for_tenant(tenant)
        .filter(participant__program=program)
        .values("kind", "status")
        .annotate(count=Count("pk"))
    )
    counts: dict = defaultdict(dict)
    for row in rows:
        counts[row["kind"]][row["status"]] = row["count"]
    return dict(counts)


def participant_send_log(tenant: Tenant | int, *, participant: Participant) -> list[dict]:
    """Every e-mail of one participant, newest first: engagement's and the step messages (R-20)."""
    rows = [
        {
            "kind": row.kind,
            "subject": row.subject,
            "status": row.status,
            "created_at": row.created_at.isoformat(),
            "sent_at": row.sent_at.isoformat() if row.sent_at else None,
        }
        for row in Communication.objects.for_tenant(tenant).filter(participant=participant)
    ]
    rows += [
        {
            "kind": row.kind,
            "subject": row.subject,
            "status": "sent" if row.emailed_at else "not_sent",
            "created_at": row.created_at.isoformat(),
            "sent_at": row.emailed_at.isoformat() if row.emailed_at else None,
        }
        for row in ParticipantMessage.objects.for_tenant(tenant).filter(participant=participant)
    ]
    return sorted(rows, key=lambda row: row["created_at"], reverse=True)


def participant_notifications(tenant: Tenant | int, *, participant: Participant, limit: int = 10):
    return list(Notification.objects.for_tenant(tenant).filter(participant=participant)[:limit])


def first_referral_at(tenant: Tenant | int, *, participant: Participant):
    return Referral.objects.for_tenant(tenant).filter(referrer=participant).aggregate(first=Min("created_at"))["first"]


def engagement_settings(tenant: Tenant) -> dict:
    from django.conf import settings
    from django.urls import reverse

    from referral_platform.crypto import last_four

    row = EngagementSettings.objects.for_tenant(tenant).first() or EngagementSettings(tenant=tenant)
    typeform = TypeformSettings.objects.for_tenant(tenant).first()
    return {
        "time_zone": row.time_zone,
        "lead_score_boost": row.lead_score_boost,
        "typeform": {
            "webhook_url": settings.SITE_URL + reverse("typeform_webhook", kwargs={"tenant_slug": tenant.slug}),
            "secret": last_four(typeform.secret) if typeform else "",
            "score_field_ref": typeform.score_field_ref if typeform else "",
            "program": typeform.program_id if typeform else None,
        },
    }
