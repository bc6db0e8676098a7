"""seed_demo loads conversion events with attributions, including a multi-touch one, and is re-runnable."""

from __future__ import annotations

from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command

from referrals.models import Attribution, ConversionEvent


@pytest.mark.django_db
def test_seed_demo_has_attributed_conversions_including_a_multi_touch_one():
    call_command("seed_demo", clicks=20, stdout=StringIO())
    events_after_first_run = ConversionEvent.objects.count()

    call_command("seed_demo", clicks=20, stdout=StringIO())

    assert ConversionEvent.objects.count() == events_after_first_run
    assert ConversionEvent.objects.filter(external_event_id__startswith="seed_").count() == 10  # 5 per workspace
    for event in ConversionEvent.objects.filter(status="processed"):
        rows = list(event.attributions.all())
        assert rows and sum(row.share for row in rows) == Decimal(1)
        assert sum(row.amount_minor for row in rows) == event.amount_minor
    multi = Attribution.objects.filter(
        tenant__slug="acme", conversion_event__external_event_id="seed_pay_quanta_1"
    ).order_by("-share", "participant__name")
    assert [(row.participant.name, str(row.share)) for row in multi] == [
        ("Nina Petrova", "0.400000"),
        ("Priya Sharma", "0.400000"),
        ("Marco Rossi", "0.200000"),
    ]
    assert ConversionEvent.objects.get(tenant__slug="acme", external_event_id="seed_pay_orbit_eur").status == "failed"
