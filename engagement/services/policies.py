"""Trigger policies: one per program and trigger."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction

from referral_platform.tenancy.models import Tenant

from ..models import TriggerPolicy


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
