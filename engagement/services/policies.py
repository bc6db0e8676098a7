"""Trigger policies: one per program and trigger."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction

from referral_platform.tenancy.models import Tenant

from ..models import EngagementSettings, TriggerPolicy, TypeformSettings


@transaction.atomic
def trigger_policy_save(*, tenant: Tenant, policy: TriggerPolicy | None = None, **values) -> TriggerPolicy:
    """Create or update a policy; a second policy for the same program and trigger is refused."""
    program = values.get("program", policy.program if policy else None)
    if program is None or program.tenant_id != tenant.pk:
        raise ValidationError({"program": "Unknown program."})
    start, end = values.get("quiet_hours_start"), values.get("quiet_hours_end")
    if (start is None) != (end is None):
        raise ValidationError({"quiet_hours_end": "Give both ends of the quiet hours, or neither."})
    trigger = values.get("trigger", policy.trigger if policy else None)
    clash = TriggerPolicy.objects.for_tenant(tenant).filter(program=program, trigger=trigger)
    if policy is not None:
        clash = clash.exclude(pk=policy.pk)
    if clash.exists():
        raise ValidationError({"trigger": "This program already has a policy for this trigger."})
    policy = policy or TriggerPolicy(tenant=tenant)
    for name, value in values.items():
        setattr(policy, name, value)
    policy.save()
    return policy


_UNSET = object()


@transaction.atomic
def engagement_settings_save(
    *,
    tenant: Tenant,
    time_zone: str | None = None,
    lead_score_boost: int | None = None,
    typeform_secret: str | None = None,
    typeform_score_field_ref: str | None = None,
    typeform_program=_UNSET,
) -> EngagementSettings:
    """Update the workspace's settings; only the values given change. A Typeform secret of "" removes the
    Typeform webhook (its URL then refuses every call)."""
    row, _ = EngagementSettings.objects.get_or_create(tenant=tenant)
    if time_zone is not None:
        row.time_zone = time_zone
    if lead_score_boost is not None:
        row.lead_score_boost = lead_score_boost
    row.save()
    typeform = TypeformSettings.objects.for_tenant(tenant).first()
    if typeform_secret == "":
        if typeform is not None:
            typeform.delete()
        return row
    if typeform_program is not _UNSET and typeform_program is not None and typeform_program.tenant_id != tenant.pk:
        raise ValidationError({"typeform_program": "Unknown program."})
    if typeform is None and typeform_secret is None:
        return row
    typeform = typeform or TypeformSettings(tenant=tenant)
    if typeform_secret is not None:
        typeform.secret = typeform_secret
    if typeform_score_field_ref is not None:
        typeform.score_field_ref = typeform_score_field_ref
    if typeform_program is not _UNSET:
        typeform.program = typeform_program
    typeform.save()
    return row
