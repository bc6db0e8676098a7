"""``rows_insert`` (referral_platform.db.sql): stores exactly what ``bulk_create`` stores, with ONE prepared
statement whatever the number of rows, and leaves the objects as ``bulk_create`` leaves them (issue 15: the
settlement, the ledger, the messages and the audit trail write their rows with it)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import DatabaseError, connection, transaction
from django.db.models.functions import Now
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from referral_platform.db.prepared import statements_sent
from referral_platform.db.sql import rows_insert
from referral_platform.tenancy import rls
from referral_platform.tenancy.models import AuditEvent
from rewards.models import AccountKind, LedgerAccount, LedgerEntry, LedgerTransaction, Reward, RewardStatus
from rewards.tests.pipeline import program_with_rules, referrer, rules_doc

MOMENT = timezone.now().replace(microsecond=123456)

# Text PostgreSQL stores (no NUL), with what an array literal must escape: quotes, backslashes, braces, commas.
texts = st.text(
    alphabet=st.one_of(
        st.sampled_from(list("\"'\\{},; ()[]NULL")),
        st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    ),
    max_size=30,
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)
audit_fields = st.fixed_dictionaries(
    {
        "actor": texts,
        "action": texts,
        "object_type": texts,
        "object_id": texts,
        "from_state": texts,
        "to_state": texts,
        "reason": texts,
        "data": st.dictionaries(texts, json_values, max_size=4),  # (the column is NOT NULL: a document, never None)
    }
)


def _stored(model, objs, *, skip=("id",)) -> list[dict]:
    by_pk = {row["id"]: row for row in model.objects.filter(pk__in=[obj.pk for obj in objs]).values()}
    return [{name: value for name, value in by_pk[obj.pk].items() if name not in skip} for obj in objs]


def _audit(tenant, fields) -> AuditEvent:
    return AuditEvent(tenant=tenant, created_at=MOMENT, **fields)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(audit_fields, min_size=1, max_size=6))
def test_audit_rows_are_stored_as_bulk_create_stores_them(world, rows):
    with rls.tenant(world.a.pk), transaction.atomic():
        ours = rows_insert(_audit(world.a, fields) for fields in rows)
        theirs = AuditEvent.objects.bulk_create([_audit(world.a, fields) for fields in rows])
    assert [type(obj) for obj in ours] == [AuditEvent] * len(rows)
    assert all(obj.pk is not None and not obj._state.adding and obj._state.db == "default" for obj in ours)
    assert len({obj.pk for obj in ours + theirs}) == 2 * len(rows)
    with rls.tenant(world.a.pk):
        assert _stored(AuditEvent, ours) == _stored(AuditEvent, theirs)
        # The objects hold what was stored (as the ORM reads it back).
        assert [obj.data for obj in ours] == [row["data"] for row in _stored(AuditEvent, ours)]


@pytest.fixture
def earner(world):
    program = program_with_rules(world.a, rules_doc(referrer=[{"kind": "flat_per_conversion", "amount_minor": 500}]))
    participant, _link = referrer(program, "Ada Brennan")
    return program, participant


def _reward(program, participant, key: str, **fields) -> Reward:
    return Reward(
        tenant=program.tenant,
        program=program,
        participant=participant,
        amount_minor=fields.pop("amount_minor", 4_900),
        currency="EUR",
        source_key=key,
        hold_until=MOMENT + timedelta(days=30),
        converted_at=MOMENT,
        created_at=MOMENT,
        **fields,
    )


def test_rewards_of_every_field_kind_are_stored_as_bulk_create_stores_them(world, earner):
    program, participant = earner
    variants = [
        {},
        {
            "status": RewardStatus.APPROVED,
            "approved_at": MOMENT,
            "coupon_percent_off": 20,
            "time_to_reward": timedelta(days=3, seconds=7),
            "explanation": {"rule": "flat", "steps": [1, "two", None, {"x": "é'\"{}"}]},
            "explanation_text": "Because: 'quoted', {braced}, back\\slash",
            "is_current": False,
            "amount_minor": 2**40,
        },
        {"description": "", "status_reason": "a\nb", "reversed_minor": 100},
    ]
    with rls.tenant(world.a.pk), transaction.atomic():
        ours = rows_insert([_reward(program, participant, f"ours:{n}", **dict(v)) for n, v in enumerate(variants)])
        theirs = Reward.objects.bulk_create(
            [_reward(program, participant, f"theirs:{n}", **dict(v)) for n, v in enumerate(variants)]
        )
        assert _stored(Reward, ours, skip=("id", "source_key")) == _stored(Reward, theirs, skip=("id", "source_key"))
        assert [obj.source_key for obj in ours] == ["ours:0", "ours:1", "ours:2"]
        # The objects are saved instances: a later save updates their rows.
        ours[0].status_reason = "saved later"
        ours[0].save(update_fields=["status_reason"])
        assert Reward.objects.get(pk=ours[0].pk).status_reason == "saved later"


def test_one_prepared_statement_whatever_the_number_of_rows(world):
    with rls.tenant(world.a.pk), transaction.atomic():
        rows_insert([_audit(world.a, {"action": "warm"})])  # prepared on this connection
        for count in (1, 7, 40):
            with CaptureQueriesContext(connection) as queries:
                rows_insert([_audit(world.a, {"action": f"n{count}", "data": {"i": i}}) for i in range(count)])
            sent = [statement for query in queries.captured_queries for statement in statements_sent(query["sql"])]
            assert len(sent) == 1, sent
            assert sent[0].startswith('INSERT INTO "tenancy_auditevent"') and "UNNEST" in sent[0]
            assert queries.captured_queries[0]["sql"].startswith("EXECUTE rp_")
            assert AuditEvent.objects.filter(action=f"n{count}").count() == count


def test_a_related_object_saved_after_the_row_was_built_lends_its_key_and_an_unsaved_one_is_refused(world, earner):
    program, participant = earner
    pending = LedgerAccount.objects.create(
        tenant=world.a, program=program, participant=participant, kind=AccountKind.PENDING, currency="EUR"
    )
    with rls.tenant(world.a.pk), transaction.atomic():
        header = LedgerTransaction(tenant=world.a, idempotency_key="late-key", kind="adjustment", memo="m")
        entry = LedgerEntry(tenant=world.a, transaction=header, account=pending, amount_minor=1, posted_at=MOMENT)
        assert entry.transaction_id is None
        header.save()
        # (One unbalanced entry: the balance trigger checks at commit, which this test never reaches.)
        with transaction.atomic():
            [stored] = rows_insert([entry])
        assert stored.transaction_id == header.pk
        assert LedgerEntry.objects.get(pk=stored.pk).transaction_id == header.pk
        transaction.set_rollback(True)
    unsaved = LedgerTransaction(tenant=world.a, idempotency_key="never-saved", kind="adjustment")
    orphan = LedgerEntry(tenant=world.a, transaction=unsaved, account=pending, amount_minor=1, posted_at=MOMENT)
    with pytest.raises(ValueError, match="unsaved related object 'transaction'"):
        rows_insert([orphan])


def test_objects_with_a_key_or_an_expression_go_through_bulk_create(world):
    with rls.tenant(world.a.pk), transaction.atomic():
        keyed = _audit(world.a, {"action": "keyed"})
        keyed.pk = AuditEvent.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
        keyed.pk += 1_000
        stamped = AuditEvent(tenant=world.a, action="stamped", created_at=Now())
        [with_key] = rows_insert([keyed])
        [with_expression] = rows_insert([stamped])
        assert AuditEvent.objects.get(pk=with_key.pk).action == "keyed"
        assert AuditEvent.objects.get(pk=with_expression.pk).created_at is not None


def test_another_workspaces_rows_are_refused_as_bulk_create_refuses_them(world):
    with rls.tenant(world.a.pk):
        for insert in (rows_insert, AuditEvent.objects.bulk_create):
            with pytest.raises(DatabaseError, match="row-level security"), transaction.atomic():
                insert([_audit(world.a, {"action": "mine"}), _audit(world.b, {"action": "theirs"})])
        assert not AuditEvent.objects.filter(action__in=["mine", "theirs"]).exists()
    with rls.bypass("test: check"):
        assert not AuditEvent.objects.filter(action__in=["mine", "theirs"]).exists()


def test_a_naive_datetime_goes_through_its_field_as_bulk_create_sends_it(world):
    naive = MOMENT.replace(tzinfo=None)
    with rls.tenant(world.a.pk), transaction.atomic():
        with pytest.warns(RuntimeWarning, match="naive datetime"):
            [ours] = rows_insert([AuditEvent(tenant=world.a, action="naive", created_at=naive)])
        with pytest.warns(RuntimeWarning, match="naive datetime"):
            [theirs] = AuditEvent.objects.bulk_create([AuditEvent(tenant=world.a, action="naive", created_at=naive)])
        assert _stored(AuditEvent, [ours]) == _stored(AuditEvent, [theirs])
        assert AuditEvent.objects.get(pk=ours.pk).created_at.tzinfo is not None
