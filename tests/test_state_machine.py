"""The one state machine (referral_platform/state.py): every status of the product moves through
``transition``, which locks the row through its tenant, checks the move, stamps the time, saves, audits
and refreshes the caller's object."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from programs.models import Participant, ParticipantStatus, Program, ProgramStatus
from referral_platform.db.prepared import statements_sent
from referral_platform.db.sql import save_fields
from referral_platform.state import IllegalMove, StateMachine, allowed_moves, check_move, machine_of, transition
from referral_platform.tenancy.actors import system_actor
from referral_platform.tenancy.models import AuditEvent
from referrals.models import FraudReview, Referral, ReferralStatus, ReviewStatus
from rewards.models import Payout, PayoutStatus, Reward, RewardStatus
from tests import factories as f

pytestmark = pytest.mark.django_db


def audits(obj, prefix=""):
    return list(
        AuditEvent.objects.filter(object_id=str(obj.pk), object_type=obj._meta.label_lower, action__startswith=prefix)
        .order_by("pk")
        .values_list("action", "from_state", "to_state", "reason")
    )


# --- the declarations ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "field", "states"),
    [
        (Program, "status", ProgramStatus.values),
        (Participant, "status", ParticipantStatus.values),
        (Referral, "status", ReferralStatus.values),
        (Reward, "status", RewardStatus.values),
        (Payout, "status", PayoutStatus.values),
    ],
    ids=["program", "participant", "referral", "reward", "payout"],
)
def test_every_status_of_the_product_declares_its_moves_over_its_choices(model, field, states):
    machine = machine_of(model)

    assert machine.field == field
    assert machine.states == frozenset(states)
    assert set(machine.timestamps.values()) <= {f.name for f in model._meta.fields}


def test_the_fraud_review_is_a_second_machine_of_referrals_on_its_own_field():
    assert Referral.review_machine.field == "review_status"
    assert Referral.review_machine.states == frozenset(ReviewStatus.values)
    assert Referral.review_machine.allowed(ReviewStatus.FLAGGED) == [ReviewStatus.CLEARED, ReviewStatus.REJECTED]
    assert Referral.status_machine.allowed(ReferralStatus.CONVERTED) == [ReferralStatus.CHURNED]


def test_a_model_without_a_machine_is_refused():
    with pytest.raises(TypeError):
        allowed_moves(f.TenantFactory.build())


# --- transition ------------------------------------------------------------------------------------


def test_transition_locks_checks_stamps_saves_audits_and_refreshes_the_callers_object(world):
    referral = f.ReferralFactory(referrer=f.ParticipantFactory(program=f.ProgramFactory(tenant=world.a)))
    caller = Referral.objects.get(pk=referral.pk)  # the object a view or service holds
    at = timezone.now() - timedelta(days=2)

    with CaptureQueriesContext(connection) as queries:
        moved = transition(
            caller, to=ReferralStatus.SIGNED_UP, actor=system_actor(world.a), reason="  signed up  ", at=at
        )

    locks = [q["sql"] for q in queries.captured_queries if "FOR NO KEY UPDATE" in q["sql"]]
    assert len(locks) == 1 and 'FOR NO KEY UPDATE OF "referrals_referral"' in locks[0]
    assert f'"referrals_referral"."tenant_id" = {world.a.pk}' in locks[0]
    stored = Referral.objects.get(pk=referral.pk)
    assert (stored.status, stored.signed_up_at) == (ReferralStatus.SIGNED_UP, at)
    assert (caller.status, caller.signed_up_at) == (ReferralStatus.SIGNED_UP, at)
    assert moved.pk == caller.pk and moved.status == ReferralStatus.SIGNED_UP
    [event] = AuditEvent.objects.filter(object_id=str(referral.pk), action="referral.signed_up")
    assert (event.from_state, event.to_state, event.reason) == ("clicked", "signed_up", "signed up")
    assert event.actor == system_actor(world.a).label and event.tenant == world.a


def test_transition_saves_only_the_status_the_stamp_and_the_changes_it_is_given(world):
    referral = f.ReferralFactory(referrer=f.ParticipantFactory(program=f.ProgramFactory(tenant=world.a)))
    stale = Referral.objects.get(pk=referral.pk)
    Referral.objects.filter(pk=referral.pk).update(referred_name="Written meanwhile")
    stale.referred_company = "Never saved"

    with CaptureQueriesContext(connection) as queries:
        transition(stale, to=ReferralStatus.QUALIFIED, actor="tester", changes={"how_did_you_hear": "a podcast"})

    [update] = [sql for q in queries.captured_queries for sql in statements_sent(q["sql"]) if sql.startswith("UPDATE")]
    assert '"status"' in update and '"qualified_at"' in update and '"how_did_you_hear"' in update
    assert '"referred_name"' not in update and '"referred_company"' not in update
    stored = Referral.objects.get(pk=referral.pk)
    assert stored.referred_name == "Written meanwhile" and stored.referred_company == referral.referred_company
    assert stored.how_did_you_hear == "a podcast" and stale.how_did_you_hear == "a podcast"


def test_a_refused_move_changes_nothing_and_names_both_states(world):
    program = f.ProgramFactory(tenant=world.a, status=ProgramStatus.ARCHIVED)

    with pytest.raises(IllegalMove) as refused:
        transition(program, to=ProgramStatus.ACTIVE, actor=system_actor(world.a))

    assert refused.value.message_dict == {"status": ["A archived program cannot become active."]}
    assert isinstance(refused.value, ValidationError)
    assert Program.objects.get(pk=program.pk).status == ProgramStatus.ARCHIVED
    assert program.status == ProgramStatus.ARCHIVED
    assert audits(program) == []


def test_the_move_is_checked_against_the_row_as_locked_not_as_the_caller_read_it(world):
    referral = f.ReferralFactory(referrer=f.ParticipantFactory(program=f.ProgramFactory(tenant=world.a)))
    stale = Referral.objects.get(pk=referral.pk)
    Referral.objects.filter(pk=referral.pk).update(status=ReferralStatus.REJECTED)

    check_move(stale, ReferralStatus.QUALIFIED)  # as read, the move looks fine
    with pytest.raises(IllegalMove) as refused:
        transition(stale, to=ReferralStatus.QUALIFIED, actor="tester")

    assert refused.value.message_dict == {"status": ["A referral cannot move from Rejected to Qualified."]}
    assert Referral.objects.get(pk=referral.pk).qualified_at is None and audits(referral) == []


@pytest.mark.parametrize("reason", ["", "   "], ids=["empty", "blank"])
def test_a_state_that_needs_a_reason_is_refused_without_one(world, reason):
    reward = f.make_ledger_reward(f.ParticipantFactory(program=f.ProgramFactory(tenant=world.a)))

    with pytest.raises(ValidationError) as refused:
        transition(reward, to=RewardStatus.REJECTED, actor="tester", reason=reason)

    assert list(refused.value.message_dict) == ["reason"]
    stored = Reward.objects.get(pk=reward.pk)
    assert (stored.status, stored.rejected_at) == (RewardStatus.PENDING, None)
    assert audits(reward, "reward.rejected") == []


def test_a_cross_tenant_object_cannot_be_moved_through_another_tenants_lock(world):
    program = f.ProgramFactory(tenant=world.a, status=ProgramStatus.ACTIVE)
    forged = Program.objects.get(pk=program.pk)
    forged.tenant_id = world.b.pk  # tenant B's request holding tenant A's row
    audit_rows = AuditEvent.objects.count()

    with pytest.raises(Program.DoesNotExist):
        transition(forged, to=ProgramStatus.PAUSED, actor=system_actor(world.b))

    assert Program.objects.get(pk=program.pk).status == ProgramStatus.ACTIVE
    assert AuditEvent.objects.count() == audit_rows


def test_a_second_machine_moves_its_own_field_with_its_own_words(world):
    referral = f.ReferralFactory(
        referrer=f.ParticipantFactory(program=f.ProgramFactory(tenant=world.a)), review_status=ReviewStatus.FLAGGED
    )

    cleared = transition(
        referral, to=ReviewStatus.CLEARED, actor="tester", reason="known customer", machine=Referral.review_machine
    )
    with pytest.raises(IllegalMove) as refused:
        transition(referral, to=ReviewStatus.REJECTED, actor="tester", reason="x", machine=Referral.review_machine)

    assert refused.value.message_dict == {"review_status": ["This referral is already cleared; it cannot be rejected."]}
    assert cleared.review_status == referral.review_status == ReviewStatus.CLEARED
    assert referral.status == ReferralStatus.CLICKED and referral.reviewed_at is not None
    assert audits(referral) == [("referral.review.cleared", "flagged", "cleared", "known customer")]
    assert allowed_moves(referral, machine=Referral.review_machine) == [ReviewStatus.FLAGGED]
    assert allowed_moves(referral) == Referral.status_machine.allowed(ReferralStatus.CLICKED)


def test_a_proxy_is_moved_and_audited_as_its_concrete_model(world):
    referral = f.ReferralFactory(
        referrer=f.ParticipantFactory(program=f.ProgramFactory(tenant=world.a)), review_status=ReviewStatus.FLAGGED
    )
    in_the_queue = FraudReview.objects.get(pk=referral.pk)  # what the admin's review queue holds

    moved = transition(
        in_the_queue, to=ReviewStatus.REJECTED, actor="tester", reason="fake", machine=Referral.review_machine
    )

    assert type(moved) is Referral and in_the_queue.review_status == ReviewStatus.REJECTED
    [event] = AuditEvent.objects.filter(action="referral.review.rejected")
    assert (event.object_type, event.object_id) == ("referrals.referral", str(referral.pk))


def test_re_entering_a_state_the_machine_allows_saves_the_changes_without_an_audit_row(world):
    participant = f.ParticipantFactory(program=f.ProgramFactory(tenant=world.a))
    payout = f.PayoutFactory(participant=participant, status=PayoutStatus.PROCESSING, attempts=1)

    transition(payout, to=PayoutStatus.PROCESSING, actor="payout run", changes={"attempts": 2})

    assert Payout.objects.get(pk=payout.pk).attempts == 2 and payout.attempts == 2
    assert audits(payout) == []
    with pytest.raises(IllegalMove):
        transition(payout, to=PayoutStatus.PENDING, actor="payout run")


def test_allowed_moves_is_what_the_declaration_lists_from_the_current_state():
    machine = StateMachine(field="status", moves={"a": {"b", "c"}, "b": {"c"}}, audit_prefix="thing")

    assert machine.allowed("a") == ["b", "c"] and machine.allowed("c") == []
    assert machine.can("b", "c") and not machine.can("c", "a") and not machine.can("unknown", "a")
    assert machine.states == frozenset({"a", "b", "c"})


@pytest.mark.django_db(transaction=True)
def test_concurrent_moves_of_one_row_are_serialised_by_its_lock(world):
    referral = f.ReferralFactory(
        referrer=f.ParticipantFactory(program=f.ProgramFactory(tenant=world.a)), status=ReferralStatus.CONVERTED
    )
    barrier = threading.Barrier(4)
    outcomes = []

    def churn(n):
        from django.db import connection as thread_connection

        try:
            barrier.wait()
            transition(
                Referral.objects.get(pk=referral.pk), to=ReferralStatus.CHURNED, actor=f"worker {n}", reason="cancel"
            )
            outcomes.append("moved")
        except IllegalMove:
            outcomes.append("refused")
        finally:
            thread_connection.close()

    threads = [threading.Thread(target=churn, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes) == ["moved", "refused", "refused", "refused"]
    assert audits(referral) == [("referral.churned", "converted", "churned", "cancel")]


# --- the move's save (``save_fields``, issue 15) --------------------------------------------------------------


def _sent(queries) -> list[str]:
    return [sql for q in queries.captured_queries for sql in statements_sent(q["sql"])]


def test_a_move_is_saved_by_one_prepared_update_of_its_fields_only(world):
    referral = f.ReferralFactory(referrer=f.ParticipantFactory(program=f.ProgramFactory(tenant=world.a)))
    at = timezone.now() - timedelta(hours=3)

    with CaptureQueriesContext(connection) as queries:
        transition(referral, to=ReferralStatus.CONVERTED, actor="tester", at=at)

    updates = [sql for sql in _sent(queries) if sql.startswith("UPDATE")]
    assert updates == ['UPDATE "referrals_referral" SET "status" = $1, "converted_at" = $2 WHERE "id" = $3']
    assert any(q["sql"].lstrip().startswith(("PREPARE rp_", "EXECUTE rp_")) for q in queries.captured_queries)
    stored = Referral.objects.get(pk=referral.pk)
    assert (stored.status, stored.converted_at) == (ReferralStatus.CONVERTED, at)


def test_a_save_that_derives_or_notifies_goes_through_the_models_own_save(world):
    """The referral's company key is derived by ``save()`` from the company: saving the company goes through it (the
    key follows). A participant's saves are listened to (the link cache): its moves go through ``save()`` too."""
    referral = f.ReferralFactory(referrer=f.ParticipantFactory(program=f.ProgramFactory(tenant=world.a)))
    referral.referred_company = "Globex Corporation"
    save_fields(referral, ["referred_company"])
    stored = Referral.objects.get(pk=referral.pk)
    assert (
        stored.referred_company == "Globex Corporation" and stored.referred_company_key == referral.referred_company_key
    )
    assert stored.referred_company_key and stored.referred_company_key != f.ReferralFactory.build().referred_company_key

    participant = f.ParticipantFactory(program=f.ProgramFactory(tenant=world.a))
    with CaptureQueriesContext(connection) as queries:
        transition(participant, to=ParticipantStatus.REMOVED, actor="tester", reason="left the company")
    [update] = [sql for sql in _sent(queries) if sql.startswith("UPDATE")]
    assert update.startswith('UPDATE "programs_participant" SET') and "$1" not in update  # the ORM's own UPDATE
    assert Participant.objects.get(pk=participant.pk).status == ParticipantStatus.REMOVED


def test_a_row_gone_before_its_save_raises_as_the_orms_save_does(world):
    from django.db import DatabaseError

    referral = f.ReferralFactory(referrer=f.ParticipantFactory(program=f.ProgramFactory(tenant=world.a)))
    Referral.objects.filter(pk=referral.pk).delete()
    referral.status = ReferralStatus.SIGNED_UP
    with pytest.raises(DatabaseError, match="did not affect any rows"):
        save_fields(referral, ["status"])
