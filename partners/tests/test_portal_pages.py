"""The portal's pages for a logged-in partner user: every page renders its own partner's data, writes go
through the services, bad input names the field and writes nothing; members and visitors do not get in."""

from __future__ import annotations

import pytest
from django.core.files.base import ContentFile
from django.urls import reverse

from partners.models import DealRegistration, PartnerTier, Resource, SupportTicket
from partners.services import deal_register, deal_stage_update
from referral_platform.tenancy.models import AuditEvent
from referrals.models import Referral

from .builders import enrolled_partner, partner_program

pytestmark = pytest.mark.django_db


@pytest.fixture
def portal(world, client):
    program = partner_program(world.a)
    partner, user = enrolled_partner(world.a, program, name="Quanta Partners")
    client.force_login(user)
    return program, partner, user, client


def test_every_portal_page_renders_for_the_partner(world, portal):
    program, partner, _user, client = portal
    deal = deal_register(
        tenant=world.a, partner=partner, program=program, company_name="Acme", domain="acme.io", actor="t",
        deal_value_minor=10_000_00,
    )  # fmt: skip
    deal_stage_update(deal=deal, stage="won", actor="crm")
    participant = partner.enrolments.get().participant
    ticket = SupportTicket.objects.create(tenant=world.a, partner=partner, subject="Hello", opened_by="t")
    period = deal.closed_at.strftime("%Y-%m")
    pages = [
        reverse("portal_home"),
        reverse("portal_links"),
        reverse("portal_link_qr", args=[participant.pk]),
        reverse("portal_deals"),
        reverse("portal_deal_detail", args=[deal.pk]),
        reverse("portal_leads"),
        reverse("portal_statements") + f"?period={period}",
        reverse("portal_statement_csv", args=[participant.pk, period]),
        reverse("portal_statement_print", args=[participant.pk, period]),
        reverse("portal_resources"),
        reverse("portal_tickets"),
        reverse("portal_ticket_detail", args=[ticket.pk]),
        reverse("portal_profile"),
        reverse("portal_team"),
        reverse("portal_payouts"),
    ]
    for url in pages:
        response = client.get(url)
        assert response.status_code == 200, url
        assert response["Cache-Control"] == "private, no-store", url
    statement = client.get(reverse("portal_statement_print", args=[participant.pk, period])).content.decode()
    assert "Commission: Acme" in statement and "3,000.00 USD" in statement
    csv_body = client.get(reverse("portal_statement_csv", args=[participant.pk, period])).content.decode()
    assert "300000" in csv_body
    home = client.get(reverse("portal_home")).content.decode()
    assert "vendor/chartjs/chart.umd.min.js" in home and 'id="fig-won">1<' in home


def test_the_home_pipeline_counts_every_deal_of_a_stage(world, portal):
    """QA: with two deals in "registered" the portal chart showed 1 (GROUP BY split by the default ordering)."""
    from partners.selectors import portal_home

    program, partner, _user, _client = portal
    for name, domain in [("Acme", "acme.io"), ("Initech", "initech.io")]:
        deal_register(tenant=world.a, partner=partner, program=program, company_name=name, domain=domain, actor="t")

    home = portal_home(partner)

    assert home.pipeline["registered"]["count"] == 2


def test_registering_a_deal_from_the_portal(world, portal):
    program, _partner, _user, client = portal

    response = client.post(
        reverse("portal_deals"),
        {"program": program.pk, "company_name": "Globex GmbH", "domain": "www.globex.de", "deal_value": "1200.50"},
    )

    deal = DealRegistration.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("portal_deal_detail", args=[deal.pk])
    assert (deal.domain, deal.deal_value_minor, deal.status) == ("globex.de", 120_050, "approved")


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"company_name": "Globex", "domain": "gmail.com"}, "domain"),
        ({"company_name": "", "domain": "globex.de"}, "company_name"),
        ({"company_name": "Globex", "domain": "globex.de", "deal_value": "-5"}, "deal_value"),
        ({"company_name": "Globex", "domain": "globex.de", "contact_email": "nope"}, "contact_email"),
    ],
)
def test_bad_deal_input_names_the_field_and_writes_nothing(world, portal, data, field):
    program, _partner, _user, client = portal

    response = client.post(reverse("portal_deals"), {"program": program.pk, **data})

    assert response.status_code == 400
    assert field in response.context["form"].errors
    assert not DealRegistration.objects.exists()


def test_an_extension_beyond_the_limit_is_refused_on_the_page_with_the_reason(world, portal):
    program, partner, _user, client = portal
    deal = deal_register(tenant=world.a, partner=partner, program=program, company_name="A", domain="a.io", actor="t")

    response = client.post(reverse("portal_deal_extend", args=[deal.pk]), {"days": "150", "reason": "x"})

    assert response.status_code == 400
    assert "beyond this program&#x27;s limit of 180 days" in response.content.decode()
    deal.refresh_from_db()
    assert deal.extensions_count == 0


def test_a_lead_is_submitted_and_its_sales_stage_shown(world, portal):
    program, _partner, _user, client = portal

    response = client.post(
        reverse("portal_leads"),
        {"program": program.pk, "name": "Jo", "email": "jo@initech.com", "company": "Initech", "budget": "50k"},
    )

    assert response.status_code == 302
    referral = Referral.objects.get()
    assert referral.qualification == {"budget": "50k"} and referral.source == "partner_lead"
    assert "Signed up" in client.get(reverse("portal_leads")).content.decode()


def test_resources_by_tier_and_every_download_is_audited(world, portal):
    _program, partner, _user, client = portal
    gold = PartnerTier.objects.create(tenant=world.a, slug="gold", name="Gold", rank=2)
    open_deck = Resource(tenant=world.a, title="Pitch deck", category="deck")
    open_deck.file.save("deck.pdf", ContentFile(b"%PDF-1.4 deck"), save=True)
    gold_only = Resource.objects.create(
        tenant=world.a, title="Gold playbook", category="training", url="https://x.example/v", min_tier=gold
    )

    page = client.get(reverse("portal_resources")).content.decode()
    download = client.get(reverse("portal_resource_download", args=[open_deck.pk]))
    refused = client.get(reverse("portal_resource_download", args=[gold_only.pk]))

    assert "Pitch deck" in page and "Gold playbook" not in page and "1 more resource" in page
    assert download.status_code == 200 and b"".join(download.streaming_content) == b"%PDF-1.4 deck"
    assert refused.status_code == 404
    assert AuditEvent.objects.filter(action="resource.downloaded", object_id=str(open_deck.pk)).count() == 1
    assert not AuditEvent.objects.filter(action="resource.downloaded", object_id=str(gold_only.pk)).exists()
    partner.tier = gold
    partner.save()
    assert client.get(reverse("portal_resource_download", args=[gold_only.pk])).status_code == 302


def test_visitors_log_in_and_members_get_404(world, client):
    assert client.get(reverse("portal_home")).status_code == 302
    client.force_login(world.marketer_a)
    assert client.get(reverse("portal_home")).status_code == 404


def test_a_partner_user_never_reaches_the_admin_the_api_or_the_members_page(world, portal):
    _program, _partner, user, client = portal
    user.is_superuser = True  # even a superuser login, once it is a partner user, is only that
    user.is_staff = True
    user.save()

    assert client.get(reverse("admin:index")).status_code in (302, 403)
    assert client.get(reverse("admin:partners_dealregistration_changelist")).status_code in (302, 403)
    assert client.get(reverse("api:referral-list")).status_code == 403
    assert client.get(reverse("api:deal-list")).status_code == 403
    assert client.get(reverse("workspace_members")).status_code == 404
    assert client.get(reverse("home")).url == reverse("portal_home")
