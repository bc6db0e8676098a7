"""seed_demo gives the partner portal something to show: partners of each type with logins, deals in every
state, a conflict waiting, a resource library, tickets and an application; it prints a partner login."""

from io import StringIO

import pytest
from django.core.management import call_command
from django.test import Client

from partners.models import (
    DealConflict,
    DealRegistration,
    DealStatus,
    Partner,
    PartnerApplication,
    PartnerType,
    Resource,
    SupportTicket,
)
from rewards.models import Reward


@pytest.mark.heavy(25)
@pytest.mark.django_db
def test_seed_demo_creates_partners_with_deals_in_every_state_and_prints_a_partner_login(
    django_capture_on_commit_callbacks,
):
    out = StringIO()
    with django_capture_on_commit_callbacks(execute=True):
        call_command("seed_demo", clicks=20, stdout=out)
    call_command("seed_demo", clicks=20, stdout=StringIO())  # idempotent

    assert set(Partner.objects.filter(tenant__slug="acme").values_list("partner_type", flat=True)) == set(
        PartnerType.values
    )
    assert set(DealRegistration.objects.values_list("status", flat=True)) == set(DealStatus.values)
    assert DealConflict.objects.filter(status="open").count() == 1
    assert Resource.objects.filter(min_tier__slug="gold").exists() and Resource.objects.count() == 6
    assert SupportTicket.objects.count() == 2 and PartnerApplication.objects.filter(status="pending").count() == 1
    assert Reward.objects.filter(source_key__startswith="deal:").count() == 1
    assert "partner@resellpro.example" in out.getvalue() and "/portal/" in out.getvalue()

    client = Client()
    assert client.login(username="partner@resellpro.example", password="demo-pass-2026")
    home = client.get("/portal/")
    assert home.status_code == 200 and "ResellPro GmbH" in home.content.decode()
    assert "Gold playbook" in client.get("/portal/resources/").content.decode()
