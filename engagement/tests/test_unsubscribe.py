"""The one-click unsubscribe in every e-mail, honoured by every sender (engagement, rewards' step messages,
programs' notices, partners' mails)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from engagement.models import Communication, CommunicationStatus
from engagement.services import campaign_send
from programs.mailing import email_opt_out, unsubscribe_token
from programs.models import EmailOptOut, ProgramAccess
from tests import factories as f

pytestmark = pytest.mark.django_db(transaction=True)

ADDRESS = "una@customer.example"


def every_sender(world, email):
    """Make each sender in the code base try to e-mail ``email``."""
    from partners.services import application_submit
    from programs.services import participant_application_request, participant_apply
    from referrals.services import referral_create

    program = f.ProgramVersionFactory(program=f.ProgramFactory(tenant=world.a)).program
    participant = f.ParticipantFactory(program=program, email=email)
    campaign_send(program=program, kind="launch", key="launch")  # engagement
    referral_create(  # rewards: "thanks, we'll review within 24 hours"
        tenant=world.a, program=program, referrer=participant, email="lead@p.example", source="api", actor="t"
    )
    gated = f.ProgramFactory(tenant=world.a, access=ProgramAccess.GATED)
    participant_apply(program=gated, name="Una", email=email)  # programs: application received
    participant_application_request(program=gated, name="Una", email=email)  # programs: confirm your address
    partner_program = f.ProgramFactory(tenant=world.a, kind="partner", access=ProgramAccess.GATED)
    application_submit(  # partners: application received
        program=partner_program, company="Una Co", website="https://una.example", partner_type="reseller",
        contact_name="Una", email=email, audience="SMBs", expected_volume="5", terms_accepted=True,
    )  # fmt: skip


def test_every_sender_reaches_a_subscribed_address_with_an_unsubscribe_link(world, smtp_inbox):
    every_sender(world, ADDRESS)

    received = smtp_inbox.to(ADDRESS)
    assert len(received) >= 5
    assert all(message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click" for message in received)
    assert all("Unsubscribe (one click):" in smtp_inbox.text(message) for message in received)


def test_an_unsubscribed_participant_receives_nothing_from_any_sender(world, smtp_inbox):
    email_opt_out(tenant_id=world.a.pk, email=ADDRESS)

    every_sender(world, ADDRESS)

    assert smtp_inbox.to(ADDRESS) == []
    assert Communication.objects.get().status == CommunicationStatus.UNSUBSCRIBED


def test_the_one_click_post_unsubscribes_and_a_get_only_asks(world, client):
    url = reverse("email_unsubscribe", kwargs={"token": unsubscribe_token(world.a.pk, ADDRESS)})

    assert client.get(url).status_code == 200 and not EmailOptOut.objects.exists()
    response = client.post(url, {"List-Unsubscribe": "One-Click"})

    assert response.status_code == 200
    row = EmailOptOut.objects.get()
    assert (row.tenant_id, row.email, row.source) == (world.a.pk, ADDRESS, "one_click")


def test_unsubscribing_from_tenant_a_does_not_silence_tenant_b(world, smtp_inbox):
    email_opt_out(tenant_id=world.a.pk, email=ADDRESS)
    program_b = f.ProgramFactory(tenant=world.b)
    f.ParticipantFactory(program=program_b, email=ADDRESS)

    campaign_send(program=program_b, kind="launch", key="launch")

    assert len(smtp_inbox.to(ADDRESS)) == 1


def test_a_tampered_unsubscribe_link_is_404(world, client):
    token = unsubscribe_token(world.a.pk, ADDRESS)
    for bad in (token[:-1] + ("A" if token[-1] != "A" else "B"), "nope"):
        assert client.post(reverse("email_unsubscribe", kwargs={"token": bad})).status_code == 404
    assert not EmailOptOut.objects.exists()
