"""A new referral's velocity and duplicate-company checks read in ONE statement (issue 15:
``velocity_and_company_rows``; with the referrer's own visitors too, ``screen_rows``) give exactly the signals
and evidence the checks give with their own reads: for a referral that trips both, one, or neither; another
workspace's and another program's rows never count."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from referrals.fraud import check_duplicate_company, check_velocity, referral_fraud_signals
from referrals.models import FraudSignalCode
from tests import factories as f

pytestmark = pytest.mark.django_db

NOW = timezone.now().replace(microsecond=0)


def both_checks(program, **thresholds):
    return f.FraudPolicyFactory(
        program=program,
        self_referral_enabled=False,
        own_company_enabled=False,
        disposable_email_enabled=False,
        velocity_enabled=True,
        duplicate_company_enabled=True,
        **thresholds,
    )


def _ref(referrer, company, email, minutes_ago):
    at = NOW - timedelta(minutes=minutes_ago)
    return f.ReferralFactory(referrer=referrer, referred_company=company, referred_email=email, created_at=at)


@pytest.fixture
def scene(world):
    """A referrer's burst of five referrals in an hour (limit 3), earlier referrals of the same companies by
    someone else, and the same rows in another program and in another workspace (which must never count)."""
    program = f.ProgramFactory(tenant=world.a)
    policy = both_checks(program, velocity_max_per_hour=3)
    busy, other = f.ParticipantFactory(program=program), f.ParticipantFactory(program=program)
    _ref(other, "Acme, Inc.", "cto@acme.example", 60 * 24 * 3)
    _ref(other, "Someone", "jo.smith+1@gmail.com", 60 * 24 * 2)
    _ref(other, "Hooli", "x@hooli.example", 60 * 24 * 95)  # outside the 90-day window
    for tenant in (world.a, world.b):  # the same companies elsewhere: another program, another workspace
        elsewhere = f.ParticipantFactory(program=f.ProgramFactory(tenant=tenant))
        for minutes in (50, 30, 10):
            _ref(elsewhere, "Acme Inc", f"ceo{minutes}@acme.example", minutes)
    burst = [
        _ref(busy, "ACME inc", "buyer@acme.example", 55),  # same name and company domain as the first
        _ref(busy, "Globex", "a@globex.example", 45),
        _ref(busy, "Other", "josmith@gmail.com", 35),  # the same mailbox as the second
        _ref(busy, "Hooli XYZ", "y@hooli.example", 20),  # velocity: 4 in the hour
        _ref(busy, "Globex EMEA", "b@globex.example", 0),  # velocity: 5, and Globex's domain again
    ]
    return policy, burst


def _alone(referral, policy):
    """The two checks with their own reads."""
    signals = [
        check_velocity(referral=referral, policy=policy),
        check_duplicate_company(referral=referral, policy=policy),
    ]
    return {signal.code: (signal.message, signal.evidence) for signal in signals if signal is not None}


def _screened(referral, policy) -> dict:
    """The policy's screen (its one-statement reads) as {code: (message, evidence)}."""
    return {
        signal.code: (signal.message, signal.evidence)
        for signal in referral_fraud_signals(referral=referral, policy=policy)
    }


def test_one_read_gives_the_same_signals_and_evidence_as_the_two_checks_alone(scene):
    policy, burst = scene
    expected = {
        0: {FraudSignalCode.DUPLICATE_COMPANY},
        1: set(),
        2: {FraudSignalCode.DUPLICATE_COMPANY},
        3: {FraudSignalCode.VELOCITY},
        4: {FraudSignalCode.VELOCITY, FraudSignalCode.DUPLICATE_COMPANY},
    }
    for index, referral in enumerate(burst):
        together = _screened(referral, policy)
        assert together == _alone(referral, policy), index
        assert set(together) == expected[index], index
    velocity = referral_fraud_signals(referral=burst[4], policy=policy)[0]
    assert velocity.evidence["params"]["count"] == 5  # the other program's and workspace's rows not counted
    duplicate = referral_fraud_signals(referral=burst[0], policy=policy)[0]
    assert [row["details"]["company"] for row in duplicate.evidence["rows"]] == ["Acme, Inc."]


def test_a_new_referral_without_a_velocity_breach_is_screened_by_both_checks_in_one_statement(scene):
    policy, burst = scene
    with CaptureQueriesContext(connection) as captured:
        signals = referral_fraud_signals(referral=burst[2], policy=policy)
    assert [signal.code for signal in signals] == [FraudSignalCode.DUPLICATE_COMPANY]
    assert len(captured.captured_queries) == 1
    with CaptureQueriesContext(connection) as captured:  # a breach reads its evidence rows as well
        referral_fraud_signals(referral=burst[4], policy=policy)
    assert len(captured.captured_queries) == 2


# --- the whole screen in one statement: the referrer's own visitors too (``screen_rows``) -------------------
def _alone_with_own_visitors(referral, policy):
    from referrals.fraud import check_self_referral_device, check_self_referral_visitor, referrer_visitor_ids

    own = referrer_visitor_ids(referral=referral)
    signals = [
        check_self_referral_visitor(referral=referral, own_visitors=own),
        check_self_referral_device(referral=referral, own_visitors=own, policy=policy),
    ]
    return {signal.code: (signal.message, signal.evidence) for signal in signals if signal} | _alone(referral, policy)


@pytest.fixture
def screened(world):
    """A referrer seen as a visitor on their own sign-up (as someone's referred person), on their own payment
    event and in the identity graph; a burst of referrals of theirs, one from their own browser; the same rows
    in another workspace."""
    from referrals.services import identity_link

    program = f.ProgramFactory(tenant=world.a)
    policy = f.FraudPolicyFactory(
        program=program,
        self_referral_enabled=True,
        own_company_enabled=False,
        disposable_email_enabled=False,
        velocity_enabled=True,
        duplicate_company_enabled=True,
        velocity_max_per_hour=3,
    )
    referrer = f.ParticipantFactory(program=program, email="Pat.Owner@partner.example", external_id="cus_pat")
    other = f.ParticipantFactory(program=program)
    f.ReferralFactory(
        referrer=other, referred_email="pat.owner@partner.example", visitor_id="v-own-signup", created_at=NOW
    )
    f.ConversionEventFactory(
        tenant=world.a, email="pat.owner@partner.example", visitor_id="v-own-event", customer_external_id="cus_x"
    )
    identity_link(tenant=world.a, source="test", visitor_id="v-own-graph", customer_external_id="cus_pat")
    theirs = f.ParticipantFactory(
        program=f.ProgramFactory(tenant=world.b), email="pat.owner@partner.example", external_id="cus_pat"
    )
    f.ReferralFactory(referrer=theirs, referred_email="pat.owner@partner.example", visitor_id="v-theirs")
    burst = [
        f.ReferralFactory(
            referrer=referrer,
            referred_company=company,
            referred_email=email,
            visitor_id=visitor,
            created_at=NOW - timedelta(minutes=minutes),
        )
        for company, email, visitor, minutes in (
            ("Acme", "a@acme.example", "v-own-event", 40),  # from the referrer's own browser
            ("Globex", "g@globex.example", "v-1", 30),
            ("Acme Inc.", "b@acme.example", "v-2", 20),  # the same company as the first
            ("Hooli", "h@hooli.example", "v-3", 10),  # velocity: 4 in the hour
        )
    ]
    return policy, burst


def test_the_whole_screen_in_one_statement_gives_the_same_signals_and_evidence_as_each_check_alone(screened):
    from referrals.fraud import referrer_visitor_ids, screen_rows

    policy, burst = screened
    expected = [
        {FraudSignalCode.SELF_REFERRAL_VISITOR},
        set(),
        {FraudSignalCode.DUPLICATE_COMPANY},
        {FraudSignalCode.VELOCITY},
    ]
    for index, referral in enumerate(burst):
        together = _screened(referral, policy)
        assert together == _alone_with_own_visitors(referral, policy), index
        assert set(together) == expected[index], index
        own, _count, _earlier = screen_rows(referral=referral, policy=policy)
        assert own == referrer_visitor_ids(referral=referral), index
    own, count, _earlier = screen_rows(referral=burst[3], policy=policy)
    assert sorted(visitor.visitor_id for visitor in own) == ["v-own-event", "v-own-graph", "v-own-signup"]
    assert count == 4  # another workspace's rows never count


def test_a_screen_without_breach_is_one_statement(screened):
    policy, burst = screened
    referral = burst[1]
    referral.visitor_id = ""  # no visitor: the device check has no click to compare
    with CaptureQueriesContext(connection) as captured:
        signals = referral_fraud_signals(referral=referral, policy=policy)
    assert signals == [] and len(captured.captured_queries) == 1
