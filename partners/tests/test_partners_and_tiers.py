"""Applications and vetting, partner users as actors, team invitations, tiers, tickets."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core import mail
from django.core.exceptions import ValidationError
from django.utils import timezone

from partners.hooks import session_actor
from partners.models import (
    ApplicationStatus,
    Partner,
    PartnerApplication,
    PartnerEnrolment,
    PartnerInvitation,
    PartnerTierChange,
    PartnerUser,
    SupportTicket,
    TicketMessage,
)
from partners.services import (
    application_approve,
    application_reject,
    application_submit,
    deal_register,
    deal_stage_update,
    partner_invitation_accept,
    partner_invitation_create,
    partner_invitation_sign_up,
    partner_tiers_recompute,
    ticket_open,
    ticket_reply,
)
from referral_platform.tenancy.actors import system_actor
from referral_platform.tenancy.models import AuditEvent
from tests.factories import PartnerTierFactory, UserFactory

from .builders import enrolled_partner, partner_program

pytestmark = pytest.mark.django_db


def _apply(program, **overrides):
    values = {
        "program": program,
        "company": "Bluebird Consulting",
        "website": "https://www.bluebird.io",
        "partner_type": "services",
        "contact_name": "Bea Bluebird",
        "email": "bea@bluebird.io",
        "audience": "CFOs of logistics companies",
        "expected_volume": "3 deals a quarter",
        "terms_accepted": True,
        "country": "de",
    }
    return application_submit(**{**values, **overrides})


def test_an_application_is_stored_and_a_duplicate_is_refused(world, django_capture_on_commit_callbacks):
    program = partner_program(world.a)

    with django_capture_on_commit_callbacks(execute=True):
        application = _apply(program)
    with pytest.raises(ValidationError) as same_email:
        _apply(program)
    with pytest.raises(ValidationError) as same_company:
        _apply(program, email="other@bluebird.io")

    assert (application.website_domain, application.country, application.status) == ("bluebird.io", "DE", "pending")
    assert "email" in same_email.value.message_dict and "website" in same_company.value.message_dict
    assert PartnerApplication.objects.count() == 1
    assert {tuple(m.to) for m in mail.outbox} >= {("bea@bluebird.io",)}


@pytest.mark.parametrize(
    ("field", "value"),
    [("terms_accepted", False), ("website", "bluebird"), ("email", "nope"), ("partner_type", "spy"), ("audience", "")],
)
def test_a_bad_application_names_the_field_and_writes_nothing(world, field, value):
    program = partner_program(world.a)

    with pytest.raises(ValidationError) as refused:
        _apply(program, **{field: value})

    assert field in refused.value.message_dict
    assert not PartnerApplication.objects.exists()


def test_approval_creates_the_partner_with_type_default_or_chosen_commission_and_invites_it(
    world, django_capture_on_commit_callbacks
):
    program = partner_program(world.a)
    application = _apply(program)
    other = _apply(program, company="Kite", website="https://kite.io", email="kim@kite.io", partner_type="reseller")
    marketer = system_actor(world.a)

    with django_capture_on_commit_callbacks(execute=True):
        bluebird = application_approve(application=application, actor=marketer, reason="Good fit")
        kite = application_approve(application=other, actor=marketer, commission_bp=2500)

    assert (bluebird.partner_type, bluebird.commission_bp) == ("services", 1000)
    assert kite.commission_bp == 2500
    application.refresh_from_db()
    assert (application.status, application.partner, application.decision_reason) == ("approved", bluebird, "Good fit")
    enrolment = PartnerEnrolment.objects.get(partner=bluebird)
    assert enrolment.participant.status == "active" and enrolment.participant.links.exists()
    invitation = PartnerInvitation.objects.get(partner=bluebird)
    assert invitation.email == "bea@bluebird.io" and invitation.role == "admin"
    invite_mail = next(m for m in mail.outbox if m.to == ["bea@bluebird.io"] and "partner portal" in m.subject)
    assert "/portal/invitations/" in invite_mail.body


def test_rejection_needs_a_reason_and_tells_the_applicant(world, django_capture_on_commit_callbacks):
    application = _apply(partner_program(world.a))

    with pytest.raises(ValidationError):
        application_reject(application=application, actor=system_actor(world.a), reason="")
    with django_capture_on_commit_callbacks(execute=True):
        application_reject(application=application, actor=system_actor(world.a), reason="Outside our markets")

    application.refresh_from_db()
    assert application.status == ApplicationStatus.REJECTED and not Partner.objects.exists()
    assert any("Outside our markets" in m.body for m in mail.outbox)


def test_an_invitation_works_once_for_its_email_and_makes_a_partner_user(world):
    program = partner_program(world.a)
    partner, _admin = enrolled_partner(world.a, program)
    _, link = partner_invitation_create(partner=partner, email="Colleague@Quanta.example", actor="t")
    token = link.rstrip("/").rsplit("/", 1)[1]
    stranger = UserFactory(email="someone@else.example")

    with pytest.raises(ValidationError) as wrong:
        partner_invitation_accept(token=token, user=stranger)
    partner_user = partner_invitation_sign_up(token=token, password="a-long-secret-91x", name="Col")
    with pytest.raises(ValidationError) as again:
        partner_invitation_sign_up(token=token, password="a-long-secret-91x")

    assert "email" in wrong.value.message_dict and "token" in again.value.message_dict
    assert partner_user.partner == partner and partner_user.user.email == "colleague@quanta.example"
    assert partner_user.user.check_password("a-long-secret-91x")
    assert PartnerInvitation.objects.get().token_hash != token  # only the hash is stored


def test_a_workspace_member_cannot_become_a_partner_user(world):
    partner, _ = enrolled_partner(world.a, partner_program(world.a))
    _, link = partner_invitation_create(partner=partner, email=world.marketer_a.email, actor="t")

    with pytest.raises(ValidationError) as refused:
        partner_invitation_accept(token=link.rstrip("/").rsplit("/", 1)[1], user=world.marketer_a)

    assert "workspace member" in refused.value.message_dict["email"][0]
    assert not PartnerUser.objects.filter(user=world.marketer_a).exists()


def test_a_partner_user_acts_as_a_partner_user_of_one_tenant_and_partner(world):
    partner, user = enrolled_partner(world.a, partner_program(world.a))

    actor = session_actor(user=user)

    assert (actor.kind, actor.tenant, actor.partner_id, actor.can_write) == ("partner_user", world.a, partner.pk, False)
    assert session_actor(user=world.marketer_a) is None
    PartnerUser.objects.filter(user=user).update(is_active=False)
    assert session_actor(user=user).kind == "anonymous"


def test_tiers_promote_and_demote_over_the_rolling_period_keep_history_and_tell_the_partner(
    world, django_capture_on_commit_callbacks
):
    registered = PartnerTierFactory(tenant=world.a, slug="registered", name="Registered", rank=0)
    silver = PartnerTierFactory(tenant=world.a, slug="silver", name="Silver", rank=1, min_won_deals=2, period_days=90)
    PartnerTierFactory(tenant=world.a, slug="gold", name="Gold", rank=2, min_won_deals=5, min_won_revenue_minor=10**9)
    program = partner_program(world.a)
    partner, _ = enrolled_partner(world.a, program)
    assert partner.tier == registered
    now = timezone.now()
    for index, domain in enumerate(["acme.io", "globex.com"]):
        deal = deal_register(
            tenant=world.a, partner=partner, program=program, company_name=domain, domain=domain, actor="t",
            now=now - timedelta(days=10 + index),
        )  # fmt: skip
        deal_stage_update(deal=deal, stage="won", actor="crm", amount_minor=1_000_00, now=now - timedelta(days=5))

    with django_capture_on_commit_callbacks(execute=True):
        assert partner_tiers_recompute(tenant=world.a, now=now) == {"promoted": 1, "demoted": 0}
    assert partner_tiers_recompute(tenant=world.a, now=now) == {"promoted": 0, "demoted": 0}
    partner.refresh_from_db()
    assert partner.tier == silver
    assert partner.enrolments.get().participant.tier == "silver"
    assert any("moved up to Silver" in m.subject for m in mail.outbox)

    assert partner_tiers_recompute(tenant=world.a, now=now + timedelta(days=100)) == {"promoted": 0, "demoted": 1}
    partner.refresh_from_db()
    history = list(PartnerTierChange.objects.filter(partner=partner).order_by("created_at", "pk"))
    assert [(c.from_tier, c.to_tier, c.direction) for c in history] == [
        (registered, silver, "promoted"),
        (silver, registered, "demoted"),
    ]
    assert "2 won deal(s)" in history[0].reason and "no longer meets" in history[1].reason
    assert AuditEvent.objects.filter(action="partner.tier_changed").count() == 2


def test_a_ticket_conversation_moves_its_status_and_mails_both_sides(world, django_capture_on_commit_callbacks):
    partner, user = enrolled_partner(world.a, partner_program(world.a))

    with django_capture_on_commit_callbacks(execute=True):
        ticket = ticket_open(partner=partner, subject="Deck in German?", body="Do you have one?", actor="p")
        ticket_reply(ticket=ticket, body="Yes, attached.", author_kind="team", actor="m")

    ticket.refresh_from_db()
    assert ticket.status == "answered" and TicketMessage.objects.filter(ticket=ticket).count() == 2
    for address in (user.email, world.owner_a.email, world.marketer_a.email):
        assert sum(address in m.to for m in mail.outbox) == 2
    with pytest.raises(ValidationError) as empty:
        ticket_open(partner=partner, subject="", body="x", actor="p")
    assert "subject" in empty.value.message_dict and SupportTicket.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_ten_simultaneous_applications_from_one_address_make_one(world):
    import threading

    from django.db import connection

    program = partner_program(world.a)
    barrier = threading.Barrier(10)
    outcomes = []

    def apply_once(index):
        try:
            barrier.wait()
            _apply(program, company=f"Bluebird {index}", website=f"https://bluebird{index}.io")
            outcomes.append("stored")
        except ValidationError as error:
            outcomes.append(sorted(error.message_dict))
        finally:
            connection.close()

    threads = [threading.Thread(target=apply_once, args=(index,)) for index in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert outcomes.count("stored") == 1 and outcomes.count(["email"]) == 9
    assert PartnerApplication.objects.count() == 1
