"""Referral creation and the funnel: one service per move, an allowed-moves map, an audit row each."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.core.exceptions import ValidationError

from programs.models import ParticipantStatus, ProgramStatus
from referral_platform.tenancy.actors import system_actor
from referral_platform.tenancy.models import AuditEvent
from referrals import services
from referrals.models import Referral, ReferralSource, ReferralStatus
from tests.factories import ParticipantFactory, ProgramFactory, ProgramVersionFactory, ReferralFactory

S = ReferralStatus
WHEN = datetime(2026, 2, 1, 9, 30, tzinfo=UTC)


def _audits(referral):
    return list(AuditEvent.objects.filter(object_type="referrals.referral", object_id=str(referral.pk)).order_by("pk"))


@pytest.fixture
def referrer(db):
    return ParticipantFactory(program=ProgramFactory())


def _create(referrer, **extra):
    return services.referral_create(
        tenant=referrer.tenant,
        program=referrer.program,
        referrer=referrer,
        actor=system_actor(referrer.tenant),
        source=ReferralSource.SIGNUP_API,
        **{"email": "Lead@Prospect.example", **extra},
    )


def test_a_new_referral_records_the_programs_current_rule_version(referrer):
    referral = _create(referrer)

    assert referral.status == S.CLICKED
    assert referral.referred_email == "lead@prospect.example"
    assert referral.rule_version.number == 1
    assert [a.action for a in _audits(referral)] == ["referral.created"]


def test_a_rule_change_does_not_change_the_version_of_existing_referrals(referrer):
    old = _create(referrer, email="first@prospect.example")
    ProgramVersionFactory(program=referrer.program, number=2, rules={"attribution_model": "first_touch"})

    new = _create(referrer, email="second@prospect.example")
    old.refresh_from_db()

    assert old.rule_version.number == 1
    assert new.rule_version.number == 2


def test_the_same_email_cannot_be_referred_twice_to_one_program(referrer):
    _create(referrer)
    with pytest.raises(ValidationError) as error:
        _create(referrer, email="lead@prospect.example")
    assert "email" in error.value.message_dict
    assert Referral.objects.filter(program=referrer.program).count() == 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda r: setattr(r.program, "status", ProgramStatus.PAUSED), "program"),
        (lambda r: setattr(r, "status", ParticipantStatus.REMOVED), "referrer"),
    ],
    ids=["paused-program", "removed-referrer"],
)
def test_no_referral_for_a_paused_program_or_inactive_referrer(referrer, change, field):
    change(referrer)
    referrer.program.save()
    referrer.save()
    with pytest.raises(ValidationError) as error:
        _create(referrer)
    assert field in error.value.message_dict
    assert not Referral.objects.exists()


def test_the_screening_hook_runs_inside_creation_and_can_refuse(referrer, monkeypatch):
    seen = []

    def refuse(*, referral, actor):
        seen.append(referral.pk)
        raise ValidationError({"email": "Flagged by screening."})

    monkeypatch.setattr(services.stages, "referral_screen", refuse)
    with pytest.raises(ValidationError):
        _create(referrer)

    assert seen and not Referral.objects.filter(pk=seen[0]).exists()  # rolled back with the refusal


FULL_FUNNEL = [
    (services.referral_sign_up, S.SIGNED_UP, "signed_up_at"),
    (services.referral_qualify, S.QUALIFIED, "qualified_at"),
    (services.referral_convert, S.CONVERTED, "converted_at"),
    (services.referral_churn, S.CHURNED, "churned_at"),
]


@pytest.mark.parametrize("start", [S.CLICKED, S.SIGNED_UP, S.QUALIFIED])
def test_a_cancellation_churns_a_referral_at_any_open_stage(referrer, start):
    # A customer who cancels before paying stays churned, whatever order their events arrive in.
    referral = ReferralFactory(referrer=referrer, status=start)

    referral = services.referral_churn(referral=referral, actor="tester", at=WHEN, reason="cancelled")

    assert (referral.status, referral.churned_at) == (S.CHURNED, WHEN)
    assert [(a.from_state, a.to_state) for a in _audits(referral)][-1] == (start, "churned")


def test_walk_the_whole_funnel_with_a_timestamp_and_audit_row_per_stage(referrer):
    referral = _create(referrer)
    for service, status, stamp in FULL_FUNNEL:
        referral = service(referral=referral, actor="tester", at=WHEN, reason=f"to {status}")
        assert referral.status == status
        assert getattr(referral, stamp) == WHEN

    audits = _audits(referral)
    assert [(a.from_state, a.to_state) for a in audits[1:]] == [
        ("clicked", "signed_up"),
        ("signed_up", "qualified"),
        ("qualified", "converted"),
        ("converted", "churned"),
    ]
    assert all(a.actor == "tester" for a in audits[1:])


ILLEGAL = [
    (S.CONVERTED, services.referral_sign_up),
    (S.CONVERTED, services.referral_qualify),
    (S.QUALIFIED, services.referral_sign_up),
    (S.REJECTED, services.referral_churn),
    (S.REJECTED, services.referral_convert),
    (S.CHURNED, services.referral_convert),
    (S.CONVERTED, services.referral_convert),
]


@pytest.mark.parametrize(("start", "service"), ILLEGAL, ids=[f"{s}-via-{f.__name__}" for s, f in ILLEGAL])
def test_illegal_moves_are_refused_and_change_nothing(referrer, start, service):
    referral = ReferralFactory(referrer=referrer, status=start)
    audit_count = AuditEvent.objects.count()

    with pytest.raises(ValidationError) as error:
        service(referral=referral, actor="tester")

    assert "status" in error.value.message_dict
    referral.refresh_from_db()
    assert referral.status == start
    assert AuditEvent.objects.count() == audit_count


def test_stages_may_be_skipped_forward(referrer):
    referral = ReferralFactory(referrer=referrer, status=S.CLICKED)
    referral = services.referral_convert(referral=referral, actor="tester", at=WHEN)
    assert referral.status == S.CONVERTED and referral.signed_up_at is None and referral.converted_at == WHEN


def test_rejection_needs_a_reason_and_is_final(referrer):
    referral = ReferralFactory(referrer=referrer, status=S.SIGNED_UP)
    with pytest.raises(ValidationError) as error:
        services.referral_reject(referral=referral, actor="tester", reason=" ")
    assert "reason" in error.value.message_dict

    referral = services.referral_reject(referral=referral, actor="tester", reason="Existing customer")
    assert referral.status == S.REJECTED and referral.rejected_at is not None
    assert _audits(referral)[-1].reason == "Existing customer"
    assert Referral.status_machine.allowed(S.REJECTED) == []


def _row(referral) -> dict:
    """Every stored column of a referral but the ones a second insert cannot share (id, moments)."""
    values = Referral.objects.filter(pk=referral.pk).values().get()
    return {
        name: value
        for name, value in values.items()
        if name not in ("id", "created_at", "updated_at", "established_at", "fraud_screened_at", "referred_email")
    }


def test_a_new_referral_is_stored_as_the_orms_create_stores_it(referrer):
    """``referral_create`` writes its row with one prepared INSERT (issue 15) instead of ``Referral.objects.create``:
    the same columns — defaults, the company key ``save()`` computes, the mailbox keys the database generates
    (read back onto the object) — as the ORM stores for the same values."""
    fields = {
        "visitor_id": "V-Mixed-Case",
        "name": " Lee Park ",
        "company": "  Acme GmbH & Co. KG ",
        "company_size": "51-200",
        "external_id": "cus_9",
        "how_did_you_hear": "podcast",
        "qualification": {"budget": "yes", "notes": "ünïcode"},
        "industry": "Software",
        "employees": 120,
        "annual_revenue_minor": 5_000_000_00,
        "clicked_at": WHEN,
    }
    created = _create(referrer, email="Lee.Park+promo@Prospect.example", **fields)
    given = {
        field.attname: getattr(created, field.attname)
        for field in Referral._meta.concrete_fields
        if not field.primary_key and not field.generated and field.name != "referred_company_key"
    }
    orm = Referral.objects.create(**{**given, "referred_email": "kim.park+promo@prospect.example"})

    stored, expected = _row(created), _row(orm)
    assert stored["referred_mailbox"] == "lee.park@prospect.example" != expected["referred_mailbox"]
    assert stored["referred_company_key"] and stored["referred_mailbox_domain"] == "prospect.example"
    assert {k: v for k, v in stored.items() if k != "referred_mailbox"} == {
        k: v for k, v in expected.items() if k != "referred_mailbox"
    }
    # what the object says is what is stored (generated columns read back; the row is saved, not "adding")
    fresh = Referral.objects.get(pk=created.pk)
    for field in Referral._meta.concrete_fields:
        assert getattr(created, field.attname) == getattr(fresh, field.attname), field.name
    assert created._state.adding is False and created._state.db == "default"


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_creations_of_one_email_make_one_referral_and_one_refusal():
    """Two transactions create the same e-mail's referral at once: the constraint's ``ON CONFLICT DO NOTHING`` lets
    the second wait for the first and then refuses it with the e-mail named; exactly one referral, one audit row."""
    import threading
    import time

    from django.db import connection, transaction

    referrer = ParticipantFactory(program=ProgramFactory())
    barrier = threading.Barrier(2)
    outcomes: list = []

    def create():
        try:
            with transaction.atomic():
                barrier.wait(10)
                referral = _create(referrer, email="race@prospect.example")
                time.sleep(0.3)  # held uncommitted: the other's INSERT waits for this commit
                outcomes.append(referral.pk)
        except ValidationError as error:
            outcomes.append(error.message_dict)
        finally:
            connection.close()

    threads = [threading.Thread(target=create) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    made = Referral.objects.filter(referred_email="race@prospect.example")
    assert made.count() == 1
    assert sorted(outcomes, key=str) == sorted(
        [made.get().pk, {"email": ["race@prospect.example has already been referred to this program."]}], key=str
    )
    assert AuditEvent.objects.filter(action="referral.created", object_id=str(made.get().pk)).count() == 1
