"""seed_demo leaves two flagged referrals in Acme's review queue."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from referrals.models import FraudFlag, FraudPolicy, Referral, ReviewStatus


@pytest.mark.django_db
def test_seed_demo_fills_the_review_queue_once():
    call_command("seed_demo", clicks=20, stdout=io.StringIO())
    call_command("seed_demo", clicks=20, stdout=io.StringIO())

    flagged = Referral.objects.filter(tenant__slug="acme", review_status=ReviewStatus.FLAGGED).order_by("pk")
    assert [(r.referred_email, list(r.fraud_flags.values_list("code", flat=True))) for r in flagged] == [
        ("dana+trial@northwind.example", ["self_referral_email"]),
        ("buyer@mailinator.com", ["disposable_email"]),
    ]
    assert FraudFlag.objects.filter(tenant__slug="acme").count() == 2
    assert FraudPolicy.objects.filter(tenant__slug="acme").count() == 2
