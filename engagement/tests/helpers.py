from __future__ import annotations

from datetime import time

from engagement.models import EngagementSettings, TriggerPolicy
from tests import factories as f


def nps_program(tenant, **policy):
    """An active program of ``tenant`` with rules and an NPS policy sending at once (overridable)."""
    program = f.ProgramVersionFactory(program=f.ProgramFactory(tenant=tenant)).program
    values = {"delay_minutes": 0, "suppression_days": 90, "daily_cap": 100, **policy}
    TriggerPolicy.objects.create(tenant=tenant, program=program, trigger="nps", **values)
    return program


def quiet_evenings(tenant, zone="Europe/Berlin"):
    EngagementSettings.objects.update_or_create(tenant=tenant, defaults={"time_zone": zone})
    return {"quiet_hours_start": time(20, 0), "quiet_hours_end": time(8, 0)}


def nps_payload(response_id="resp-1", score=9, email="pat@customer.example", **extra):
    return {
        "response_id": response_id,
        "customer_external_id": f"cust-{email}",
        "email": email,
        "name": "Pat Promoter",
        "score": score,
        "comment": "Love it",
        "answered_at": "2026-11-27T10:00:00Z",
        **extra,
    }
