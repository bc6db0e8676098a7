"""Deal registration rules (R-21, R-22): first to register wins, decided by PostgreSQL; near matches open
conflicts; protection windows, extensions and expiry; a won deal's commission posts once."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.core import mail
from django.core.exceptions import ValidationError
from django.db import close_old_connections, connection
from django.utils import timezone

from partners.models import (
    ConflictDecision,
    DealConflict,
    DealExtension,
    DealRegistration,
    DealStatus,
    PartnerProgramSettings,
)
from partners.services import (
    conflict_resolve,
    deal_extend,
    deal_register,
    deal_stage_update,
    deals_expire,
    deals_warn_expiring,
)
from referral_platform.tenancy.actors import system_actor
from referral_platform.tenancy.models import AuditEvent
from rewards.models import LedgerTransaction, Reward

from .builders import enrolled_partner, partner_program

NOW = timezone.now().replace(microsecond=0)


@pytest.fixture
def setup(world):
    program = partner_program(world.a)
    quanta, _ = enrolled_partner(world.a, program, name="Quanta Partners")
    orbit, _ = enrolled_partner(world.a, program, name="Orbit Resellers")
    return program, quanta, orbit


def register(tenant, partner, program, company, domain, **extra):
    return deal_register(
        tenant=tenant, partner=partner, program=program, company_name=company, domain=domain,
        actor=f"test:{partner.pk}", **extra,
    )  # fmt: skip


@pytest.mark.django_db
def test_a_first_registration_is_approved_protected_and_audited(world, setup):
    program, quanta, _ = setup

    deal = register(world.a, quanta, program, "Acme, Inc.", "https://www.Acme.co.uk/pricing")

    assert deal.status == DealStatus.APPROVED
    assert (deal.domain, deal.company_key, deal.domain_stem) == ("acme.co.uk", "acme", "acme")
    assert deal.expires_at == deal.registered_at + timedelta(days=60)
    assert AuditEvent.objects.filter(action="deal.registered", object_id=str(deal.pk), to_state="approved").exists()


@pytest.mark.django_db
def test_second_registration_for_same_domain_is_a_conflict(world, setup):
    program, quanta, orbit = setup
    first = register(world.a, quanta, program, "ACME", "www.acme.io")

    second = register(world.a, orbit, program, "Acme Inc.", "acme.io")

    assert second.status == DealStatus.CONFLICT
    conflict = DealConflict.objects.get(challenger=second)
    assert (conflict.holder, conflict.match, str(conflict.similarity)) == (first, "domain", "1.000")
    assert conflict.evidence["holder"]["deal"] == first.reference
    assert conflict.evidence["challenger"]["partner"] == "Orbit Resellers"
    first.refresh_from_db()
    assert first.status == DealStatus.APPROVED


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("first", "second", "match"),
    [
        (("ACME", "www.acme.io"), ("Acme Inc.", "acme.io"), "domain"),
        (("Globex GmbH", "globex.de"), ("Globex", "globex-corp.com"), "name"),
        (("Northwind", "northwind.com"), ("Northwind Traders", "nwtraders.com"), "similar_name"),
        (("Initrode", "initrode.com"), ("Initrode Systems", "initrode.io"), "similar_domain"),
    ],
    ids=["same-domain", "same-name-after-legal-suffix", "similar-name", "same-domain-stem-other-suffix"],
)
def test_near_matches_open_conflicts_with_a_similarity_score(world, setup, first, second, match):
    program, quanta, orbit = setup
    register(world.a, quanta, program, *first)

    deal = register(world.a, orbit, program, *second)

    conflict = DealConflict.objects.get(challenger=deal)
    assert deal.status == DealStatus.CONFLICT
    assert conflict.match == match
    assert 0.5 <= float(conflict.similarity) <= 1.0


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("Globex", "globex.com"), ("Initech", "initech.com")),
        (("Acme", "acme.com"), ("Apex", "apex.com")),
        (("Umbrella Health", "umbrella-health.com"), ("Soylent", "soylent.io")),
    ],
    ids=["globex-initech", "acme-apex", "umbrella-soylent"],
)
def test_unrelated_names_do_not_conflict(world, setup, first, second):
    program, quanta, orbit = setup
    register(world.a, quanta, program, *first)

    deal = register(world.a, orbit, program, *second)

    assert deal.status == DealStatus.APPROVED
    assert not DealConflict.objects.exists()


@pytest.mark.django_db
def test_the_same_partner_cannot_register_its_own_account_twice(world, setup):
    program, quanta, _ = setup
    first = register(world.a, quanta, program, "Acme", "acme.io")

    with pytest.raises(ValidationError) as refused:
        register(world.a, quanta, program, "ACME Inc", "sales.acme.io")

    assert first.reference in refused.value.message_dict["domain"][0]
    assert DealRegistration.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("company", "domain", "field"),
    [
        ("", "acme.io", "company_name"),
        ("Acme", "", "domain"),
        ("Acme", "not a domain", "domain"),
        ("Acme", "gmail.com", "domain"),
        ("Acme", "10.0.0.1", "domain"),
        ("!!!", "acme.io", "company_name"),
    ],
)
def test_bad_input_names_the_field_and_writes_nothing(world, setup, company, domain, field):
    program, quanta, _ = setup

    with pytest.raises(ValidationError) as refused:
        register(world.a, quanta, program, company, domain)

    assert field in refused.value.message_dict
    assert not DealRegistration.objects.exists()
    assert not AuditEvent.objects.filter(action="deal.registered").exists()


@pytest.mark.django_db
def test_a_registration_missing_required_qualification_waits_for_review(world, setup):
    program, quanta, orbit = setup
    PartnerProgramSettings.objects.create(
        tenant=world.a, program=program, required_qualification=["budget", "need"], min_deal_value_minor=10_000_00
    )

    waiting = register(world.a, quanta, program, "Hooli", "hooli.com", qualification={"budget": "50k"})
    passing = register(
        world.a, orbit, program, "Vandelay", "vandelay.com",
        qualification={"budget": "50k", "need": "ERP"}, deal_value_minor=20_000_00,
    )  # fmt: skip

    assert waiting.status == DealStatus.PENDING
    assert "need is not answered" in waiting.review_note and "deal value" in waiting.review_note
    assert passing.status == DealStatus.APPROVED
    # A pending registration holds the claim: the first registration still wins.
    assert register(world.a, orbit, program, "Hooli", "hooli.com").status == DealStatus.CONFLICT


@pytest.mark.django_db
def test_a_registration_after_expiry_is_accepted_for_the_new_partner(world, setup):
    program, quanta, orbit = setup
    old = register(world.a, quanta, program, "Acme", "acme.io", now=NOW - timedelta(days=61))

    new = register(world.a, orbit, program, "Acme", "acme.io", now=NOW)

    old.refresh_from_db()
    assert old.status == DealStatus.EXPIRED
    assert new.status == DealStatus.APPROVED and new.partner == orbit
    assert not DealConflict.objects.exists()


@pytest.mark.django_db
def test_beat_task_expires_registrations_and_warns_seven_days_ahead(world, setup, django_capture_on_commit_callbacks):
    program, quanta, orbit = setup
    lapsing = register(world.a, quanta, program, "Acme", "acme.io", now=NOW - timedelta(days=61))
    soon = register(world.a, orbit, program, "Globex", "globex.com", now=NOW - timedelta(days=54))
    later = register(world.a, orbit, program, "Initech", "initech.com", now=NOW)
    mail.outbox.clear()

    with django_capture_on_commit_callbacks(execute=True):
        assert deals_warn_expiring(now=NOW) == 1
        assert deals_warn_expiring(now=NOW) == 0  # once
        assert deals_expire(now=NOW) == 1

    lapsing.refresh_from_db(), soon.refresh_from_db(), later.refresh_from_db()
    assert (lapsing.status, soon.status, later.status) == ("expired", "approved", "approved")
    assert soon.expiry_warned_at == NOW
    subjects = [message.subject for message in mail.outbox]
    assert any("expires on" in s and "Globex" in s for s in subjects)
    assert any("expired" in s and "Acme" in s for s in subjects)


@pytest.mark.django_db
def test_extension_moves_the_expiry_and_beyond_the_limit_is_refused_with_a_clear_message(world, setup):
    program, quanta, _ = setup
    PartnerProgramSettings.objects.create(
        tenant=world.a, program=program, protection_days=60, extension_days=30, max_protection_days=100
    )
    deal = register(world.a, quanta, program, "Acme", "acme.io")
    registered = deal.registered_at

    extension = deal_extend(deal=deal, actor="test", reason="Proposal sent")

    assert extension.to_expires_at == registered + timedelta(days=90)
    deal.refresh_from_db()
    assert (deal.expires_at, deal.extensions_count) == (registered + timedelta(days=90), 1)
    with pytest.raises(ValidationError) as refused:
        deal_extend(deal=deal, actor="test", reason="Still negotiating")
    message = refused.value.message_dict["days"][0]
    assert "beyond this program's limit of 100 days" in message and "At most 10 more day(s)" in message
    deal.refresh_from_db()
    assert deal.expires_at == registered + timedelta(days=90)
    assert DealExtension.objects.count() == 1
    assert AuditEvent.objects.filter(action="deal.extended").count() == 1


@pytest.mark.django_db
def test_conflict_resolution_records_decision_and_reason_and_tells_both_partners(
    world, setup, django_capture_on_commit_callbacks
):
    program, quanta, orbit = setup
    first = register(world.a, quanta, program, "Acme", "acme.io")
    second = register(world.a, orbit, program, "Acme Inc", "acme.io")
    conflict = DealConflict.objects.get()
    mail.outbox.clear()

    with pytest.raises(ValidationError) as refused:
        conflict_resolve(conflict=conflict, decision=ConflictDecision.CHALLENGER_WINS, reason=" ", actor="m")
    assert "reason" in refused.value.message_dict

    with django_capture_on_commit_callbacks(execute=True):
        conflict_resolve(
            conflict=conflict, decision=ConflictDecision.CHALLENGER_WINS, reason="Orbit ran the demo", actor="m"
        )

    first.refresh_from_db(), second.refresh_from_db(), conflict.refresh_from_db()
    assert (first.status, second.status) == ("rejected", "approved")
    assert (conflict.status, conflict.decision, conflict.reason) == (
        "resolved",
        "challenger_wins",
        "Orbit ran the demo",
    )
    recipients = {address for message in mail.outbox for address in message.to}
    assert {"quanta@quanta-partner.example", "orbit@orbit-partner.example"} <= recipients
    assert AuditEvent.objects.filter(action="deal_conflict.resolved", reason="Orbit ran the demo").exists()


@pytest.mark.django_db
def test_both_distinct_refuses_two_claims_on_the_same_domain(world, setup):
    program, quanta, orbit = setup
    register(world.a, quanta, program, "Acme", "acme.io")
    register(world.a, orbit, program, "Acme Labs", "acme.io")
    conflict = DealConflict.objects.get()

    with pytest.raises(ValidationError) as refused:
        conflict_resolve(conflict=conflict, decision=ConflictDecision.BOTH_DISTINCT, reason="different", actor="m")

    assert "decision" in refused.value.message_dict
    conflict.refresh_from_db()
    assert conflict.status == "open"


def _in_threads(count, work):
    barrier = threading.Barrier(count)
    results, errors = [], []

    def run(index):
        try:
            barrier.wait()
            results.append(work(index))
        except Exception as error:
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    close_old_connections()
    return results, errors


@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_registrations_of_one_account_give_one_protected_and_49_conflicts(world):
    program = partner_program(world.a)
    partners = [enrolled_partner(world.a, program, name=f"Partner{index:02d} Co")[0] for index in range(50)]

    results, errors = _in_threads(
        50, lambda index: register(world.a, partners[index], program, "Acme, Inc.", f"www{index}.acme.io").status
    )

    assert not errors, errors
    assert sorted(results).count("approved") == 1 and sorted(results).count("conflict") == 49
    protected = DealRegistration.objects.get(status=DealStatus.APPROVED)
    assert DealRegistration.objects.filter(status=DealStatus.CONFLICT).count() == 49
    assert DealConflict.objects.count() == 49
    assert set(DealConflict.objects.values_list("holder_id", flat=True)) == {protected.pk}


@pytest.mark.django_db
def test_a_won_deal_posts_the_commission_once_through_the_ledger(world, setup):
    program, quanta, _ = setup
    deal = register(world.a, quanta, program, "Acme", "acme.io", deal_value_minor=50_000_00)

    deal_stage_update(deal=deal, stage="proposal", actor="crm")
    deal_stage_update(deal=deal, stage="won", actor="crm", amount_minor=40_000_00)
    deal_stage_update(deal=deal, stage="won", actor="crm", amount_minor=40_000_00)  # the CRM repeats itself

    deal.refresh_from_db()
    reward = Reward.objects.get()
    assert (deal.status, deal.stage, deal.won_amount_minor, deal.commission_reward) == ("won", "won", 40_000_00, reward)
    assert (reward.participant_id, reward.amount_minor) == (deal.participant_id, 12_000_00)  # reseller default: 30 %
    assert "won for 40,000.00 USD x 30 % commission = 12,000.00 USD" in reward.explanation_text
    assert LedgerTransaction.objects.filter(reward=reward, kind="accrual").count() == 1
    with pytest.raises(ValidationError) as refused:
        deal_stage_update(deal=deal, stage="lost", actor="crm")
    assert "already won" in refused.value.message_dict["stage"][0]


@pytest.mark.django_db(transaction=True)
def test_concurrent_won_updates_post_the_commission_once(world):
    program = partner_program(world.a)
    quanta, _ = enrolled_partner(world.a, program, name="Quanta Partners")
    deal = register(world.a, quanta, program, "Acme", "acme.io", deal_value_minor=10_000_00)

    results, errors = _in_threads(
        12, lambda _: deal_stage_update(deal=DealRegistration.objects.get(pk=deal.pk), stage="won", actor="crm").status
    )

    assert not errors, errors
    assert results == ["won"] * 12
    assert Reward.objects.count() == 1
    reward = Reward.objects.get()
    assert reward.amount_minor == 3_000_00
    assert LedgerTransaction.objects.filter(reward=reward).count() == 1
    assert AuditEvent.objects.filter(action="deal.won").count() == 1


@pytest.mark.django_db
def test_won_without_an_amount_names_amount_minor_and_changes_nothing(world, setup):
    program, quanta, _ = setup
    deal = register(world.a, quanta, program, "Acme", "acme.io")

    with pytest.raises(ValidationError) as refused:
        deal_stage_update(deal=deal, stage="won", actor=system_actor(world.a))

    assert "amount_minor" in refused.value.message_dict
    deal.refresh_from_db()
    assert deal.status == "approved" and not Reward.objects.exists()
