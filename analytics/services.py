"""Writes of analytics: the tenant's economics inputs and other-channel customers (its own tables only)."""

from __future__ import annotations

from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from referral_platform.tenancy.services import audit_record

from .models import EconomicsSettings, OtherChannelCustomer

ECONOMICS_FIELDS = (
    "yearly_sales_marketing_spend_minor",
    "program_yearly_cost_minor",
    "average_lifetime_months",
    "total_customers",
)


@transaction.atomic
def economics_settings_save(*, tenant, actor, values: dict) -> EconomicsSettings:
    """Create or update the tenant's economics inputs (one row per tenant), audited."""
    settings, _ = EconomicsSettings.objects.select_for_update().get_or_create(
        tenant=tenant, defaults={"currency": tenant.default_currency}
    )
    for name in ECONOMICS_FIELDS:
        if name in values:
            setattr(settings, name, values[name])
    if (settings.yearly_sales_marketing_spend_minor or 0) < 0 or (settings.program_yearly_cost_minor or 0) < 0:
        raise ValidationError({"yearly_sales_marketing_spend_minor": "Amounts must be zero or more."})
    settings.updated_at = timezone.now()
    settings.save()
    audit_record(
        tenant=tenant,
        actor=actor,
        action="analytics.economics_saved",
        obj=settings,
        data={name: getattr(settings, name) for name in ECONOMICS_FIELDS},
    )
    return settings


@transaction.atomic
def other_channel_customers_upsert(*, tenant, rows: list[dict]) -> list[OtherChannelCustomer]:
    """Create or update other-channel leads/customers by the tenant's external id (validated rows only:
    the caller validates every row first, so nothing is half-written)."""
    saved = []
    for row in rows:
        customer, _ = OtherChannelCustomer.objects.update_or_create(
            tenant=tenant,
            external_id=row["external_id"],
            defaults={
                "channel": row["channel"],
                "lead_at": row["lead_at"],
                "converted_at": row.get("converted_at"),
                "deal_minor": row.get("deal_minor") or 0,
                "arr_minor": row.get("arr_minor") or 0,
                "currency": row.get("currency") or tenant.default_currency,
                "churned_at": row.get("churned_at"),
            },
        )
        saved.append(customer)
    return saved


@transaction.atomic
def other_channel_customers_import(*, tenant, actor, rows: list[dict], filename: str) -> int:
    """A validated CSV upload from the browser: upsert the rows and audit the import (one row per file)."""
    saved = other_channel_customers_upsert(tenant=tenant, rows=rows)
    audit_record(
        tenant=tenant,
        actor=actor,
        action="analytics.other_customers_imported",
        obj=saved[0],
        data={"file": filename[:200], "rows": len(saved)},
    )
    return len(saved)


def _parse_moment(value: str, field: str, line: int) -> datetime | None:
    from django.utils.dateparse import parse_date, parse_datetime

    if not value:
        return None
    moment = parse_datetime(value)
    if moment is None:
        day = parse_date(value)
        if day is None:
            raise ValidationError({field: f"line {line}: {value!r} is not a date."})
        moment = datetime(day.year, day.month, day.day)
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment, timezone.utc)
    return moment
