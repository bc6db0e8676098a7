"""The ledger: balanced, append-only, idempotent; PostgreSQL refuses raw SQL that would break it."""

from __future__ import annotations

import threading

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction

from rewards.ledger import (
    LedgerIdempotencyError,
    Line,
    expense_account,
    ledger_account,
    ledger_post,
    participant_account,
    participant_balances,
    unbalanced_transactions,
)
from rewards.models import AccountKind, EntryKind, LedgerAccount, LedgerEntry, LedgerTransaction
from tests import factories as f
from tests.app_role import as_table_owner


@pytest.fixture
def accounts(db):
    participant = f.ParticipantFactory(program=f.ProgramFactory(currency="USD"))
    return (
        participant,
        expense_account(participant.program, "USD"),
        participant_account(participant, AccountKind.PENDING, "USD"),
    )


def _post(participant, expense, pending, key="k1", amount=1_000):
    return ledger_post(
        tenant=participant.tenant,
        idempotency_key=key,
        kind=EntryKind.ACCRUAL,
        lines=[Line(expense, amount), Line(pending, -amount)],
        memo="test",
    )


def test_posting_writes_a_balanced_transaction_and_balances_derive_from_entries(accounts):
    participant, expense, pending = accounts

    tx = _post(participant, expense, pending)

    assert sorted(tx.entries.values_list("amount_minor", flat=True)) == [-1_000, 1_000]
    assert participant_balances(participant.tenant, participant=participant, currency="USD")["pending"] == 1_000
    assert unbalanced_transactions(participant.tenant) == []


def test_same_key_and_lines_returns_the_first_transaction(accounts):
    participant, expense, pending = accounts
    first = _post(participant, expense, pending)

    again = _post(participant, expense, pending)

    assert again.pk == first.pk
    assert LedgerEntry.objects.count() == 2


def test_same_key_with_different_lines_raises_and_writes_nothing(accounts):
    participant, expense, pending = accounts
    _post(participant, expense, pending)

    with pytest.raises(LedgerIdempotencyError) as error:
        _post(participant, expense, pending, amount=999)

    assert "idempotency_key" in error.value.message_dict
    assert LedgerTransaction.objects.count() == 1 and LedgerEntry.objects.count() == 2


@pytest.mark.parametrize(
    ("lines", "field"),
    [
        (lambda e, p: [Line(e, 100), Line(p, -99)], "lines"),
        (lambda e, p: [Line(e, 100)], "lines"),
        (lambda e, p: [Line(e, 0), Line(p, 0)], "lines"),
        (lambda e, p: [Line(e, 1.5), Line(p, -1.5)], "lines"),
    ],
    ids=["unbalanced", "single-line", "zero", "float"],
)
def test_bad_lines_are_refused_naming_the_field_and_nothing_is_written(accounts, lines, field):
    participant, expense, pending = accounts

    with pytest.raises(ValidationError) as error:
        ledger_post(
            tenant=participant.tenant, idempotency_key="bad", kind=EntryKind.ADJUSTMENT, lines=lines(expense, pending)
        )

    assert field in error.value.message_dict
    assert not LedgerTransaction.objects.exists() and not LedgerEntry.objects.exists()


def test_an_account_of_another_tenant_is_refused(accounts):
    participant, expense, _ = accounts
    other = f.ParticipantFactory()
    foreign = participant_account(other, AccountKind.PENDING, "USD")

    with pytest.raises(ValidationError) as error:
        ledger_post(
            tenant=participant.tenant,
            idempotency_key="x",
            kind=EntryKind.ADJUSTMENT,
            lines=[Line(expense, 5), Line(foreign, -5)],
        )

    assert "lines" in error.value.message_dict
    assert not LedgerEntry.objects.exists()


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE rewards_ledgerentry SET amount_minor = amount_minor + 1",
        "DELETE FROM rewards_ledgerentry",
        "UPDATE rewards_ledgertransaction SET memo = 'rewritten'",
        "DELETE FROM rewards_ledgertransaction",
        "UPDATE rewards_ledgeraccount SET currency = 'EUR'",
    ],
    ids=["update-entry", "delete-entry", "update-transaction", "delete-transaction", "update-account"],
)
def test_postgres_refuses_update_and_delete_of_ledger_rows(accounts, sql):
    participant, expense, pending = accounts
    _post(participant, expense, pending)

    # The trigger wall holds even for the tables' owner (the app role is refused earlier, by its grants:
    # tests/test_db_roles.py).
    owner, refused = as_table_owner(), pytest.raises(IntegrityError, match="append-only")
    with owner, refused, transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql)

    assert sorted(LedgerEntry.objects.values_list("amount_minor", flat=True)) == [-1_000, 1_000]
    assert LedgerTransaction.objects.get().memo == "test"


def _raw_transaction(tenant_id: int, key: str, amounts: list[tuple[int, int]]) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO rewards_ledgertransaction (tenant_id, idempotency_key, kind, memo, lines_fingerprint, "
            "posted_at) VALUES (%s, %s, 'adjustment', 'raw', '', now()) RETURNING id",
            [tenant_id, key],
        )
        tx_id = cursor.fetchone()[0]
        for account_id, amount in amounts:
            cursor.execute(
                "INSERT INTO rewards_ledgerentry (tenant_id, transaction_id, account_id, amount_minor, posted_at) "
                "VALUES (%s, %s, %s, %s, now())",
                [tenant_id, tx_id, account_id, amount],
            )


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("amounts", "message"),
    [
        (lambda e, p: [(e.pk, 500), (p.pk, -400)], "does not balance"),
        (lambda e, p: [], "has no entries"),
    ],
    ids=["unbalanced", "no-entries"],
)
def test_postgres_refuses_at_commit_a_raw_transaction_that_does_not_balance(amounts, message):
    participant = f.ParticipantFactory(program=f.ProgramFactory(currency="USD"))
    expense = expense_account(participant.program, "USD")
    pending = participant_account(participant, AccountKind.PENDING, "USD")

    with pytest.raises(IntegrityError, match=message), transaction.atomic():
        _raw_transaction(participant.tenant_id, "raw-1", amounts(expense, pending))

    assert not LedgerTransaction.objects.exists() and not LedgerEntry.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_postgres_refuses_entries_balanced_only_across_currencies():
    participant = f.ParticipantFactory(program=f.ProgramFactory(currency="USD"))
    usd = expense_account(participant.program, "USD")
    eur = participant_account(participant, AccountKind.PENDING, "EUR")

    with pytest.raises(IntegrityError, match="does not balance"), transaction.atomic():
        _raw_transaction(participant.tenant_id, "raw-fx", [(usd.pk, 100), (eur.pk, -100)])

    assert not LedgerEntry.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_balanced_raw_transaction_commits():
    participant = f.ParticipantFactory(program=f.ProgramFactory(currency="USD"))
    expense = expense_account(participant.program, "USD")
    pending = participant_account(participant, AccountKind.PENDING, "USD")

    with transaction.atomic():
        _raw_transaction(participant.tenant_id, "raw-ok", [(expense.pk, 700), (pending.pk, -700)])

    assert participant_balances(participant.tenant, participant=participant, currency="USD")["pending"] == 700


@pytest.mark.django_db(transaction=True)
def test_concurrent_posts_of_one_key_make_one_transaction():
    participant = f.ParticipantFactory(program=f.ProgramFactory(currency="USD"))
    expense = expense_account(participant.program, "USD")
    pending = participant_account(participant, AccountKind.PENDING, "USD")
    barrier = threading.Barrier(8)
    results, errors = [], []

    def post():
        try:
            barrier.wait()
            results.append(_post(participant, expense, pending, key="same").pk)
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=post) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert not errors
    assert len(set(results)) == 1
    assert LedgerTransaction.objects.count() == 1 and LedgerEntry.objects.count() == 2


def test_accounts_are_created_once_per_owner_kind_and_currency(accounts):
    participant, expense, pending = accounts

    assert participant_account(participant, AccountKind.PENDING, "usd").pk == pending.pk
    assert expense_account(participant.program, "USD").pk == expense.pk
    assert LedgerAccount.objects.count() == 2


def test_the_process_memory_of_committed_accounts_is_per_database(monkeypatch):
    """One process may use several databases in turn (`make bench`: each benchmark in a scratch database of
    its own, ids starting at 1 again): an account remembered in one is never another's."""
    from rewards.ledger import _account_key

    here = _account_key(1, 1, 1, AccountKind.PENDING, "usd")
    monkeypatch.setitem(connection.settings_dict, "NAME", "another_scratch_database")
    elsewhere = _account_key(1, 1, 1, AccountKind.PENDING, "USD")

    assert here != elsewhere and here[2:] == elsewhere[2:]


def test_accounts_read_many_at_once_are_the_ones_asked_for_and_the_missing_ones_made_once(world):
    """``ledger_accounts_many`` reads the accounts it does not remember with ONE prepared statement (issue 15): a
    participant's by its id, a program's own (no participant) by ``IS NULL`` — each key gets its own row, whatever
    the other keys and the other workspace's accounts; the missing ones are made once and read back."""
    from rewards import ledger

    program = f.ProgramFactory(tenant=world.a)
    dana, ravi = (f.ParticipantFactory(program=program) for _ in range(2))
    other = f.ProgramFactory(tenant=world.b)
    theirs = f.ParticipantFactory(program=other)
    existing = {
        (dana, "pending", "USD"): ledger_account(
            tenant=world.a, program=program, participant=dana, kind="pending", currency="USD"
        ),
        (None, "expense", "USD"): ledger_account(tenant=world.a, program=program, kind="expense", currency="USD"),
        (dana, "pending", "EUR"): ledger_account(
            tenant=world.a, program=program, participant=dana, kind="pending", currency="EUR"
        ),
    }
    ledger_account(tenant=world.b, program=other, participant=theirs, kind="pending", currency="USD")
    ledger._COMMITTED_ACCOUNTS.clear()  # nothing remembered: every key is read
    wanted = [
        (program, dana, "pending", "usd"),
        (program, None, "expense", "USD"),
        (program, dana, "pending", "EUR"),
        (program, ravi, "pending", "USD"),  # missing: made
        (program, None, "expense", "EUR"),  # missing: made
        (program, dana, "payable", "USD"),  # missing: made
        (program, dana, "pending", "USD"),  # asked twice
    ]
    before = LedgerAccount.objects.count()

    found = ledger.ledger_accounts_many(tenant=world.a, wanted=wanted)

    assert LedgerAccount.objects.count() == before + 3
    for program_, participant, kind, currency in wanted:
        account = found[(program_.pk, participant.pk if participant else None, kind, currency.upper())]
        stored = LedgerAccount.objects.get(
            tenant=world.a, program=program_, participant=participant, kind=kind, currency=currency.upper()
        )
        assert account.pk == stored.pk and (account.participant_id, account.kind) == (stored.participant_id, kind)
    for (participant, kind, currency), account in existing.items():
        assert found[(program.pk, participant.pk if participant else None, kind, currency)].pk == account.pk
    assert not LedgerAccount.objects.filter(tenant=world.b).exclude(participant=theirs).exists()
