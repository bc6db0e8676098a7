"""Portal writes: payout set-up through Stripe Connect, team invitations (admins only), tickets, profile."""

from __future__ import annotations

import pytest
from django.core import mail
from django.urls import reverse

from partners.models import PartnerInvitation, PartnerRole, PartnerUser, SupportTicket
from rewards.models import ParticipantStripeProfile
from tests.factories import StripeCredentialsFactory, UserFactory

from .builders import enrolled_partner, partner_program

pytestmark = pytest.mark.django_db


@pytest.fixture
def portal(world, client):
    program = partner_program(world.a)
    partner, user = enrolled_partner(world.a, program, name="Quanta Partners")
    client.force_login(user)
    return program, partner, user, client


def test_payout_set_up_sends_the_partner_to_stripe_connect_onboarding(world, portal, stripe):
    StripeCredentialsFactory(tenant=world.a)
    _program, partner, _user, client = portal
    participant = partner.enrolments.get().participant

    response = client.post(reverse("portal_payouts"), {"participant": participant.pk})
    other = client.post(reverse("portal_payouts"), {"participant": participant.pk + 999})

    assert response.status_code == 302 and response["Location"].startswith("https://")
    assert ParticipantStripeProfile.objects.get(participant=participant).connected_account_id
    assert other.status_code == 404
    assert "connected" in client.get(reverse("portal_payouts")).content.decode()


def test_a_partner_admin_invites_a_colleague_and_a_member_cannot(world, portal, django_capture_on_commit_callbacks):
    _program, partner, _user, client = portal

    with django_capture_on_commit_callbacks(execute=True):
        sent = client.post(reverse("portal_team"), {"email": "ops@quanta.example", "role": "member"})
    member = UserFactory(email="member@quanta.example")
    PartnerUser.objects.create(tenant=world.a, partner=partner, user=member, role=PartnerRole.MEMBER)
    client.force_login(member)
    refused = client.post(reverse("portal_team"), {"email": "sneaky@quanta.example", "role": "admin"})

    assert sent.status_code == 302 and refused.status_code == 302
    assert list(PartnerInvitation.objects.values_list("email", flat=True)) == ["ops@quanta.example"]
    assert any(m.to == ["ops@quanta.example"] and "/portal/invitations/" in m.body for m in mail.outbox)


def test_a_ticket_opened_in_the_portal_reaches_the_team(world, portal, django_capture_on_commit_callbacks):
    _program, _partner, _user, client = portal

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("portal_tickets"), {"subject": "MDF budget", "body": "How do we apply?"})
    empty = client.post(reverse("portal_tickets"), {"subject": "", "body": ""})

    ticket = SupportTicket.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("portal_ticket_detail", args=[ticket.pk])
    assert empty.status_code == 400 and {"subject", "body"} <= set(empty.context["form"].errors)
    assert any(world.marketer_a.email in m.to and "MDF budget" in m.subject for m in mail.outbox)


def test_the_profile_is_saved_and_bad_input_names_the_field(world, portal):
    _program, partner, _user, client = portal

    saved = client.post(
        reverse("portal_profile"), {"name": "Quanta GmbH", "website": "", "country": "at", "payout_currency": "eur"}
    )
    bad = client.post(
        reverse("portal_profile"), {"name": "Quanta GmbH", "country": "Austria", "payout_currency": "EUR"}
    )
    bad_currency = client.post(
        reverse("portal_profile"), {"name": "Quanta GmbH", "country": "AT", "payout_currency": "E1"}
    )

    partner.refresh_from_db()
    assert saved.status_code == 302
    assert (partner.name, partner.country, partner.payout_currency) == ("Quanta GmbH", "AT", "EUR")
    assert bad.status_code == 400 and set(bad.context["form"].errors) == {"country"}
    assert bad_currency.status_code == 400 and set(bad_currency.context["form"].errors) == {"payout_currency"}
    partner.refresh_from_db()
    assert (partner.country, partner.payout_currency) == ("AT", "EUR")
