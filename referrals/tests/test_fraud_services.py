"""Screening stores flags once and puts referrals in review; review moves are audited services."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection
from django.utils import timezone

from referral_platform.tenancy.actors import Actor, system_actor
from referral_platform.tenancy.models import AuditEvent, Role
from referrals.fraud import referral_is_rewardable, rewardable_referrals_q
from referrals.fraud_services import (
    fraud_policy_get_or_create,
    referral_review_clear,
    referral_review_reject,
    referral_screen,
)
from referrals.models import FraudFlag, FraudPolicy, FraudSignalCode, Referral, ReferralStatus, ReviewStatus
from tests import factories as f

NOW = timezone.now()


def member(world, user, tenant, role=Role.MARKETER) -> Actor:
    return Actor(kind="member", tenant=tenant, user=user, role=role)


def review_audits(referral):
    audits = AuditEvent.objects.filter(
        object_type="referrals.referral", object_id=str(referral.pk), action__startswith="referral.review."
    )
    return list(audits.order_by("pk").values_list("action", "from_state", "to_state"))


@pytest.fixture
def program(world):
    return f.ProgramFactory(tenant=world.a)


@pytest.fixture
def flagged(program):
    """A referral to a disposable mailbox, screened: flagged."""
    referral = f.ReferralFactory(referrer=f.ParticipantFactory(program=program), referred_email="x@mailinator.com")
    referral_screen(referral=referral)
    return Referral.objects.get(pk=referral.pk)


# --- screening -------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_screening_stores_one_flag_per_signal_and_flags_the_referral(world, program):
    referrer = f.ParticipantFactory(program=program, email="ann@acme.example")
    referral = f.ReferralFactory(referrer=referrer, referred_email="ann+2@acme.example", referred_company="Acme")

    signals = referral_screen(referral=referral, actor=system_actor(world.a))

    flags = FraudFlag.objects.for_tenant(world.a).filter(referral=referral)
    assert {s.code for s in signals} == {FraudSignalCode.SELF_REFERRAL_EMAIL}
    assert [(flag.code, flag.message, flag.evidence) for flag in flags] == [
        (s.code, s.message, s.evidence) for s in signals
    ]
    assert referral.review_status == ReviewStatus.FLAGGED  # the caller's instance follows
    stored = Referral.objects.get(pk=referral.pk)
    assert stored.review_status == ReviewStatus.FLAGGED and stored.fraud_screened_at is not None
    assert review_audits(referral) == [("referral.review.flagged", "clear", "flagged")]
    audit = AuditEvent.objects.get(action="referral.review.flagged", object_id=str(referral.pk))
    assert audit.data == {"codes": ["self_referral_email"]} and audit.actor == "system"
    assert audit.tenant == world.a


@pytest.mark.django_db
def test_a_clean_referral_stays_clear_and_unaudited(world, program):
    referral = f.ReferralFactory(referrer=f.ParticipantFactory(program=program), referred_email="cfo@globex.example")

    assert referral_screen(referral=referral) == []

    stored = Referral.objects.get(pk=referral.pk)
    assert stored.review_status == ReviewStatus.CLEAR and stored.fraud_screened_at is not None
    assert not FraudFlag.objects.filter(referral=referral).exists()
    assert review_audits(referral) == []


@pytest.mark.django_db
def test_screening_creates_the_programs_policy_with_defaults_once(world, program):
    referral = f.ReferralFactory(referrer=f.ParticipantFactory(program=program))

    referral_screen(referral=referral)
    referral_screen(referral=referral)

    policy = FraudPolicy.objects.get(program=program)
    assert policy.tenant == world.a and policy.velocity_max_per_hour == 5
    assert fraud_policy_get_or_create(program=program) == policy


@pytest.mark.django_db
def test_screening_again_is_idempotent(flagged):
    before = list(FraudFlag.objects.filter(referral=flagged).values_list("pk", "code", "created_at"))

    again = referral_screen(referral=flagged)

    assert [s.code for s in again] == [FraudSignalCode.DISPOSABLE_EMAIL]
    assert list(FraudFlag.objects.filter(referral=flagged).values_list("pk", "code", "created_at")) == before
    assert review_audits(flagged) == [("referral.review.flagged", "clear", "flagged")]


@pytest.mark.django_db
def test_a_cleared_referral_returns_to_review_only_for_a_new_signal(world, program, flagged):
    referral_review_clear(referral=flagged, actor=member(world, world.marketer_a, world.a), reason="Known buyer")

    referral_screen(referral=flagged)  # same signal: the marketer has seen it
    assert Referral.objects.get(pk=flagged.pk).review_status == ReviewStatus.CLEARED

    f.ReferralFactory(
        referrer=f.ParticipantFactory(program=program),
        referred_company=flagged.referred_company,
        created_at=flagged.created_at - timedelta(days=1),
    )
    referral_screen(referral=flagged)  # a new signal: back to review

    assert Referral.objects.get(pk=flagged.pk).review_status == ReviewStatus.FLAGGED
    assert review_audits(flagged) == [
        ("referral.review.flagged", "clear", "flagged"),
        ("referral.review.cleared", "flagged", "cleared"),
        ("referral.review.flagged", "cleared", "flagged"),
    ]
    assert set(FraudFlag.objects.filter(referral=flagged).values_list("code", flat=True)) == {
        FraudSignalCode.DISPOSABLE_EMAIL,
        FraudSignalCode.DUPLICATE_COMPANY,
    }


@pytest.mark.django_db
def test_a_rejected_referral_stays_rejected_when_new_signals_arrive(world, program, flagged):
    referral_review_reject(referral=flagged, actor=member(world, world.marketer_a, world.a), reason="Fake")
    f.ReferralFactory(
        referrer=f.ParticipantFactory(program=program),
        referred_company=flagged.referred_company,
        created_at=flagged.created_at - timedelta(days=1),
    )

    referral_screen(referral=flagged)

    assert Referral.objects.get(pk=flagged.pk).review_status == ReviewStatus.REJECTED
    assert FraudFlag.objects.filter(referral=flagged, code=FraudSignalCode.DUPLICATE_COMPANY).exists()


@pytest.mark.django_db(transaction=True)
def test_two_threads_screening_the_same_referral_store_one_flag_per_code():
    from tests.conftest import TenantWorld

    world = TenantWorld()
    program = f.ProgramFactory(tenant=world.a)
    referrer = f.ParticipantFactory(program=program, email="bob@acme.example")
    f.ReferralFactory(referrer=referrer, referred_company="Initech", created_at=NOW - timedelta(days=1))
    referral = f.ReferralFactory(
        referrer=referrer, referred_email="bob+1@acme.example", referred_company="Initech", created_at=NOW
    )
    start = threading.Barrier(2)
    errors = []

    def screen():
        try:
            start.wait()
            referral_screen(referral=Referral.objects.get(pk=referral.pk))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=screen) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    codes = list(FraudFlag.objects.filter(referral=referral).values_list("code", flat=True))
    assert sorted(codes) == sorted({FraudSignalCode.SELF_REFERRAL_EMAIL, FraudSignalCode.DUPLICATE_COMPANY})
    assert review_audits(referral) == [("referral.review.flagged", "clear", "flagged")]
    assert FraudPolicy.objects.filter(program=program).count() == 1


# --- review transitions ----------------------------------------------------------------------------
@pytest.mark.django_db
@pytest.mark.parametrize(
    ("service", "to"),
    [(referral_review_clear, ReviewStatus.CLEARED), (referral_review_reject, ReviewStatus.REJECTED)],
    ids=["clear", "reject"],
)
def test_a_marketer_decides_a_flagged_referral_with_a_reason_and_an_audit_row(world, flagged, service, to):
    actor = member(world, world.marketer_a, world.a)

    service(referral=flagged, actor=actor, reason="  Checked with the account owner  ")

    stored = Referral.objects.get(pk=flagged.pk)
    assert stored.review_status == to
    assert stored.reviewed_by == world.marketer_a and stored.reviewed_at is not None
    assert stored.review_reason == "Checked with the account owner"
    audit = AuditEvent.objects.get(action=f"referral.review.{to}", object_id=str(flagged.pk))
    assert (audit.from_state, audit.to_state, audit.reason) == ("flagged", to, "Checked with the account owner")
    assert audit.actor == actor.label and audit.data == {"codes": ["disposable_email"]}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("start", "service"),
    [
        (ReviewStatus.CLEAR, referral_review_clear),
        (ReviewStatus.CLEAR, referral_review_reject),
        (ReviewStatus.CLEARED, referral_review_clear),
        (ReviewStatus.REJECTED, referral_review_clear),
        (ReviewStatus.REJECTED, referral_review_reject),
    ],
    ids=["clear-unflagged", "reject-unflagged", "clear-twice", "clear-rejected", "reject-twice"],
)
def test_illegal_review_moves_are_refused_and_write_nothing(world, program, start, service):
    referral = f.ReferralFactory(referrer=f.ParticipantFactory(program=program), review_status=start)

    with pytest.raises(ValidationError) as error:
        service(referral=referral, actor=member(world, world.marketer_a, world.a), reason="Because")

    assert "review_status" in error.value.message_dict
    stored = Referral.objects.get(pk=referral.pk)
    assert stored.review_status == start and stored.reviewed_by is None and stored.review_reason == ""
    assert review_audits(referral) == []


@pytest.mark.django_db
@pytest.mark.parametrize("reason", ["", "   ", "x" * 2001], ids=["empty", "blank", "too-long"])
def test_a_decision_needs_a_reason(world, flagged, reason):
    with pytest.raises(ValidationError) as error:
        referral_review_clear(referral=flagged, actor=member(world, world.marketer_a, world.a), reason=reason)

    assert list(error.value.message_dict) == ["reason"]
    assert Referral.objects.get(pk=flagged.pk).review_status == ReviewStatus.FLAGGED
    assert review_audits(flagged) == [("referral.review.flagged", "clear", "flagged")]


@pytest.mark.django_db
def test_another_tenants_member_or_a_viewer_cannot_decide(world, flagged):
    with pytest.raises(PermissionDenied):
        referral_review_clear(referral=flagged, actor=member(world, world.marketer_b, world.b), reason="Mine now")
    with pytest.raises(PermissionDenied):
        referral_review_clear(
            referral=flagged, actor=member(world, world.viewer_a, world.a, Role.VIEWER), reason="Looks fine"
        )

    assert Referral.objects.get(pk=flagged.pk).review_status == ReviewStatus.FLAGGED
    assert review_audits(flagged) == [("referral.review.flagged", "clear", "flagged")]


# --- the rewards predicate -------------------------------------------------------------------------
@pytest.mark.django_db
def test_a_flagged_referral_is_not_rewardable_until_a_marketer_clears_it(world, flagged):
    Referral.objects.filter(pk=flagged.pk).update(status=ReferralStatus.CONVERTED)
    flagged.refresh_from_db()
    rewardable = Referral.objects.for_tenant(world.a).filter(rewardable_referrals_q())

    assert referral_is_rewardable(flagged) is False
    assert not rewardable.filter(pk=flagged.pk).exists()

    referral_review_clear(referral=flagged, actor=member(world, world.marketer_a, world.a), reason="Real buyer")
    flagged.refresh_from_db()

    assert referral_is_rewardable(flagged) is True
    assert rewardable.filter(pk=flagged.pk).exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("status", "review_status", "expected"),
    [
        (ReferralStatus.CONVERTED, ReviewStatus.CLEAR, True),
        (ReferralStatus.CONVERTED, ReviewStatus.CLEARED, True),
        (ReferralStatus.CONVERTED, ReviewStatus.FLAGGED, False),
        (ReferralStatus.CONVERTED, ReviewStatus.REJECTED, False),
        (ReferralStatus.QUALIFIED, ReviewStatus.CLEAR, False),
        (ReferralStatus.CHURNED, ReviewStatus.CLEARED, False),
    ],
    ids=["converted-clear", "converted-cleared", "converted-flagged", "converted-rejected", "qualified", "churned"],
)
def test_rewardable_means_converted_and_not_held_by_review(world, program, status, review_status, expected):
    referral = f.ReferralFactory(
        referrer=f.ParticipantFactory(program=program), status=status, review_status=review_status
    )

    assert referral_is_rewardable(referral) is expected
    assert Referral.objects.filter(rewardable_referrals_q(), pk=referral.pk).exists() is expected
