"""Audit rows deferred to the end of a batch (referral_platform.tenancy.services.audit_rows_deferred, issue 15):
written in one INSERT when the block ends, in the same transaction; a row recorded inside a savepoint that is
rolled back goes with it (whether or not a statement ran inside it); each row is written under the
row-level-security state it was recorded in, so workspace A's binding never writes B's rows nor the reverse."""

from __future__ import annotations

import pytest
from django.db import ProgrammingError, connection, transaction
from django.test.utils import CaptureQueriesContext

from referral_platform.tenancy import rls
from referral_platform.tenancy.models import AuditEvent
from referral_platform.tenancy.services import audit_record, audit_rows_deferred

pytestmark = pytest.mark.django_db(transaction=True)


def record(tenant, action: str):
    return audit_record(tenant=tenant, actor="system: test", action=action, obj=tenant)


def actions(tenant) -> list[str]:
    rows = AuditEvent.objects.filter(tenant=tenant, object_type="tenancy.tenant")
    return sorted(rows.values_list("action", flat=True))


def test_rows_are_written_once_when_the_block_ends_and_rolled_back_savepoints_take_theirs(world):
    with transaction.atomic(), rls.tenant(world.a.pk):
        with audit_rows_deferred():
            with CaptureQueriesContext(connection) as recorded:
                record(world.a, "kept.before")
                try:
                    with transaction.atomic():  # no statement runs inside: the savepoint is never sent
                        record(world.a, "dropped.unsent")
                        raise RuntimeError
                except RuntimeError:
                    pass
                try:
                    with transaction.atomic():  # a statement runs inside: the savepoint is sent, then rolled back
                        record(world.a, "dropped.sent")
                        AuditEvent.objects.filter(tenant=world.a).count()
                        raise RuntimeError
                except RuntimeError:
                    pass
                with transaction.atomic():
                    record(world.a, "kept.inner")
            assert not any("INSERT" in query["sql"] for query in recorded), "nothing written while recording"
        assert actions(world.a) == ["kept.before", "kept.inner"]


def test_a_block_that_raises_writes_its_rows_if_the_transaction_goes_on_and_none_if_it_is_rolled_back(world):
    with transaction.atomic(), rls.tenant(world.a.pk):
        try:
            with audit_rows_deferred():
                record(world.a, "kept")
                raise ValueError("the caller catches it and commits")
        except ValueError:
            pass
    assert actions(world.a) == ["kept"]
    with pytest.raises(ValueError), transaction.atomic(), rls.tenant(world.a.pk), audit_rows_deferred():
        record(world.a, "rolled.back")
        raise ValueError
    assert actions(world.a) == ["kept"]


def test_outside_a_transaction_nothing_is_deferred(world):
    with rls.tenant(world.a.pk), audit_rows_deferred():
        row = record(world.a, "at.once")
        assert row.pk is not None and actions(world.a) == ["at.once"]


def test_each_row_is_written_under_the_binding_it_was_recorded_in(world):
    with transaction.atomic(), audit_rows_deferred():
        with rls.tenant(world.a.pk):
            record(world.a, "a.row")
        with rls.tenant(world.b.pk):
            record(world.b, "b.row")
    assert (actions(world.a), actions(world.b)) == (["a.row"], ["b.row"])
    # A row for B recorded while bound to A is refused by row-level security, as its direct INSERT would be.
    refused = pytest.raises(ProgrammingError, match="row-level security")
    with refused, transaction.atomic(), audit_rows_deferred(), rls.tenant(world.a.pk):
        record(world.b, "b.from.a")
    assert actions(world.b) == ["b.row"]
