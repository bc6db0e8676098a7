"""The partners app answers ``account_owner``: a protected account's sign-up, lead and conversion belong to
the registering partner, and its payment pays that partner and nobody else."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from partners.hooks import account_owner
from partners.models import DealStatus
from partners.services import deal_register, deal_stage_update
from referral_platform.tenancy.memo import batch_memo
from referrals import services as referral_services
from referrals.models import Attribution, Referral
from rewards.models import Reward
from tests.factories import ParticipantFactory, ReferralLinkFactory

from .builders import enrolled_partner, partner_program

pytestmark = pytest.mark.django_db


@pytest.fixture
def protected(world):
    program = partner_program(world.a)
    quanta, _ = enrolled_partner(world.a, program, name="Quanta Partners")
    orbit, _ = enrolled_partner(world.a, program, name="Orbit Resellers")
    deal = deal_register(
        tenant=world.a, partner=quanta, program=program, company_name="Acme Inc.", domain="www.acme.io", actor="t"
    )
    return program, quanta, orbit, deal


def _participant(partner):
    return partner.enrolments.get().participant


def test_the_hook_names_the_registering_partner_by_domain_or_company(world, protected):
    _program, quanta, _orbit, deal = protected

    by_mail = account_owner(tenant=world.a, program=None, email="cfo@sales.acme.io", company="")
    by_name = account_owner(tenant=world.a, program=None, email="ceo@gmail.com", company="ACME, inc")

    assert by_mail.participant == _participant(quanta) and by_mail.evidence["matched_on"] == "domain"
    assert by_name.participant == _participant(quanta) and by_name.evidence["deal"] == deal.reference
    assert account_owner(tenant=world.a, program=None, email="x@initech.com", company="Initech") is None
    assert account_owner(tenant=world.b, program=None, email="cfo@acme.io", company="Acme") is None


def test_in_a_batch_the_registered_accounts_are_read_once_and_the_answers_are_the_same(
    world, protected, django_assert_num_queries
):
    _program, quanta, _orbit, _deal = protected
    asks = [
        (world.a, "cfo@sales.acme.io", ""),
        (world.a, "ceo@gmail.com", "ACME, inc"),
        (world.a, "x@initech.com", "Initech"),
        (world.b, "cfo@acme.io", "Acme"),  # the same account in another workspace: not A's registration
    ]
    alone = [account_owner(tenant=tenant, program=None, email=mail, company=name) for tenant, mail, name in asks]

    with batch_memo():
        with django_assert_num_queries(2):  # each workspace's registered accounts, once
            for tenant, email, company in asks[2:]:
                assert account_owner(tenant=tenant, program=None, email=email, company=company) is None
            assert account_owner(tenant=world.b, program=None, email="b@initech.com", company="Initech") is None
        batched = [
            account_owner(tenant=tenant, program=None, email=email, company=company) for tenant, email, company in asks
        ]

    assert [claim and (claim.participant, claim.evidence) for claim in batched] == [
        claim and (claim.participant, claim.evidence) for claim in alone
    ]
    assert batched[0].participant == _participant(quanta) and batched[2] is None and batched[3] is None


def test_protection_covers_only_its_window_and_pending_registrations_protect_nothing_yet(world, protected):
    _program, _quanta, orbit, deal = protected

    before = account_owner(tenant=world.a, program=None, email="a@acme.io", at=deal.registered_at - timedelta(days=1))
    after = account_owner(tenant=world.a, program=None, email="a@acme.io", at=deal.expires_at + timedelta(seconds=1))

    assert before is None and after is None
    pending = deal_register(
        tenant=world.a, partner=orbit, program=deal.program, company_name="Hooli", domain="hooli.com", actor="t"
    )
    pending.status = DealStatus.PENDING
    pending.save(update_fields=["status"])
    assert account_owner(tenant=world.a, program=None, email="a@hooli.com") is None


def test_a_protected_accounts_conversion_pays_the_registering_partner_and_nobody_else(
    world, protected, celery_eager, django_capture_on_commit_callbacks
):
    program, quanta, orbit, _deal = protected
    orbit_link = _participant(orbit).links.get(channel="direct")
    customer = ParticipantFactory(program=program, name="Dana Customer")
    dana_link = ReferralLinkFactory(participant=customer)

    with django_capture_on_commit_callbacks(execute=True):
        outcome = referral_services.signup_record(
            tenant=world.a, actor="test", email="cto@acme.io", referral_code=orbit_link.code, company="Acme"
        )
    with django_capture_on_commit_callbacks(execute=True):
        event = referral_services.conversion_event_process(
            event_id=referral_services.conversion_event_receive(
                tenant=world.a, external_event_id="pay_acme_1", kind="payment", occurred_at=timezone.now(),
                raw={"k": 1}, amount_minor=100_000, currency="USD", email="cto@acme.io", referral_code=dana_link.code,
            ).event.pk
        )  # fmt: skip

    assert outcome.referral.referrer == _participant(quanta)
    assert set(Attribution.objects.filter(conversion_event=event).values_list("participant_id", flat=True)) == {
        _participant(quanta).pk
    }
    assert set(Reward.objects.values_list("participant_id", flat=True)) == {_participant(quanta).pk}
    assert Reward.objects.get().amount_minor == 10_000


def test_another_partners_lead_for_the_protected_account_is_refused(world, protected):
    _program, _quanta, orbit, _deal = protected

    with pytest.raises(ValidationError) as refused:
        referral_services.lead_submit(
            tenant=world.a, actor="t", participant=_participant(orbit), name="Jo", email="jo@acme.io", company="Acme"
        )

    assert "company" in refused.value.message_dict
    assert not Referral.objects.exists()


def test_a_won_deal_keeps_the_account_for_the_partner_after_the_window(world, protected):
    _program, quanta, _orbit, deal = protected
    deal_stage_update(deal=deal, stage="won", actor="crm", amount_minor=1_000_00)

    later = account_owner(tenant=world.a, program=None, email="a@acme.io", at=deal.expires_at + timedelta(days=400))

    assert later.participant == _participant(quanta)
