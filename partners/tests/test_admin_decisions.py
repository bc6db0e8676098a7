"""Marketers decide in the admin: approve / reject applications with a reason, resolve conflicts seeing both
claims, look up an account, reply to tickets. Viewers may look but not decide."""

from __future__ import annotations

import pytest
from django.core import mail
from django.urls import reverse

from partners.models import DealConflict, Partner, PartnerApplication, SupportTicket
from partners.services import deal_register, ticket_open
from tests.factories import PartnerApplicationFactory

from .builders import enrolled_partner, partner_program

pytestmark = pytest.mark.django_db


def test_a_marketer_approves_an_application_with_a_changed_commission(
    world, client, django_capture_on_commit_callbacks
):
    program = partner_program(world.a)
    application = PartnerApplicationFactory(program=program, partner_type="affiliate", email="ann@kite.io")
    client.force_login(world.marketer_a)
    url = reverse("admin:partners_partnerapplication_approve", args=[application.pk])

    page = client.get(url)
    with django_capture_on_commit_callbacks(execute=True):
        done = client.post(url, {"partner_type": "affiliate", "commission_bp": "1800", "reason": "Strong audience"})

    assert page.status_code == 200 and "15 % of first-year revenue" in page.content.decode()
    assert done.status_code == 302
    partner = Partner.objects.get()
    assert (partner.commission_bp, partner.partner_type) == (1800, "affiliate")
    assert PartnerApplication.objects.get().status == "approved"
    assert any(m.to == ["ann@kite.io"] and "/portal/invitations/" in m.body for m in mail.outbox)


def test_rejecting_needs_a_reason_and_viewers_cannot_decide(world, client):
    application = PartnerApplicationFactory(program=partner_program(world.a))
    url = reverse("admin:partners_partnerapplication_reject", args=[application.pk])

    client.force_login(world.viewer_a)
    assert client.post(url, {"reason": "no"}).status_code == 403
    client.force_login(world.marketer_a)
    empty = client.post(url, {"reason": ""})
    client.force_login(world.marketer_b)
    foreign = client.post(url, {"reason": "B decides"})

    assert empty.status_code == 400 and "reason" in empty.context["form"].errors
    assert foreign.status_code == 404
    assert PartnerApplication.objects.get().status == "pending"


def test_a_marketer_sees_both_claims_and_resolves_the_conflict(world, client):
    program = partner_program(world.a)
    quanta, _ = enrolled_partner(world.a, program, name="Quanta Partners")
    orbit, _ = enrolled_partner(world.a, program, name="Orbit Resellers")
    deal_register(tenant=world.a, partner=quanta, program=program, company_name="Acme", domain="acme.io", actor="t")
    deal_register(tenant=world.a, partner=orbit, program=program, company_name="Acme Inc", domain="acme.io", actor="t")
    conflict = DealConflict.objects.get()
    client.force_login(world.marketer_a)
    url = reverse("admin:partners_dealconflict_resolve", args=[conflict.pk])

    change = client.get(reverse("admin:partners_dealconflict_change", args=[conflict.pk])).content.decode()
    page = client.get(url).content.decode()
    done = client.post(url, {"decision": "holder_keeps", "reason": "Quanta registered first with a qualified deal"})

    assert "Quanta Partners" in change and "Orbit Resellers" in change and "1.000" in change
    assert "First claim" in page and "Second claim" in page
    assert done.status_code == 302
    conflict.refresh_from_db()
    assert (conflict.status, conflict.decision, conflict.challenger.status) == ("resolved", "holder_keeps", "rejected")


def test_the_admin_account_lookup_answers_the_sales_team(world, client):
    program = partner_program(world.a)
    quanta, _ = enrolled_partner(world.a, program, name="Quanta Partners")
    deal_register(tenant=world.a, partner=quanta, program=program, company_name="Acme", domain="acme.io", actor="t")
    client.force_login(world.viewer_a)

    found = client.get(reverse("admin:partners_dealregistration_lookup"), {"domain": "https://www.acme.io"})
    free = client.get(reverse("admin:partners_dealregistration_lookup"), {"domain": "initech.com"})
    client.force_login(world.marketer_b)
    other = client.get(reverse("admin:partners_dealregistration_lookup"), {"domain": "acme.io"})

    assert "is protected for <strong>Quanta Partners</strong>" in found.content.decode()
    assert "belongs to no partner" in free.content.decode()
    assert "Quanta" not in other.content.decode()


def test_a_marketer_replies_to_a_ticket_and_the_partner_is_told(world, client, django_capture_on_commit_callbacks):
    partner, user = enrolled_partner(world.a, partner_program(world.a))
    ticket = ticket_open(partner=partner, subject="Deck?", body="Where?", actor="p")
    client.force_login(world.marketer_a)
    mail.outbox.clear()

    with django_capture_on_commit_callbacks(execute=True):
        done = client.post(
            reverse("admin:partners_supportticket_reply", args=[ticket.pk]), {"body": "In resources.", "close": "on"}
        )

    assert done.status_code == 302
    assert SupportTicket.objects.get().status == "closed"
    assert any(user.email in m.to and "In resources." in m.body for m in mail.outbox)


def _inline_data(page) -> dict:
    """The inline formsets of an admin change page as the browser would post them back, unchanged."""
    data = {}
    for inline in page.context["inline_admin_formsets"]:
        formset = inline.formset
        for name, value in formset.management_form.initial.items():
            data[f"{formset.prefix}-{name}"] = value
        for form in formset.forms:
            for name in form.fields:
                value = form[name].value()
                if value is True:
                    data[form.add_prefix(name)] = "on"
                elif value not in (None, False):
                    data[form.add_prefix(name)] = getattr(value, "pk", value)
    return data


def test_editing_a_partner_in_the_admin_goes_through_the_services_and_is_audited(world, client):
    from referral_platform.tenancy.models import AuditEvent

    partner, _user = enrolled_partner(world.a, partner_program(world.a))
    client.force_login(world.marketer_a)
    url = reverse("admin:partners_partner_change", args=[partner.pk])
    form = {
        "name": partner.name,
        "website": "",
        "partner_type": "reseller",
        "country": "DE",
        "payout_currency": "EUR",
        "commission_bp": "3500",
        "status": "suspended",
        **_inline_data(client.get(url)),
    }

    response = client.post(url, form)

    partner.refresh_from_db()
    assert response.status_code == 302, response.content.decode()[:2000]
    assert (partner.commission_bp, partner.payout_currency, partner.status) == (3500, "EUR", "suspended")
    assert AuditEvent.objects.filter(action="partner.updated").exists()
    assert AuditEvent.objects.filter(action="partner.status", to_state="suspended").exists()
