"""The double-entry ledger: accounts, posting balanced transactions, and balances derived from entries.

Sign convention: an entry's ``amount_minor`` is positive for a debit, negative for a credit. The
program's expense account is debit-normal; a participant's pending / payable / paid accounts are
credit-normal (what the program owes or has paid them) and their receivable account (clawbacks the
participant owes back) is debit-normal. ``participant_balances`` presents every account as a positive
figure in its normal direction. PostgreSQL refuses unbalanced transactions and any UPDATE / DELETE.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import Sum

from programs.models import Participant, Program
from referral_platform.db.prepared import execute_prepared
from referral_platform.db.sql import model_from_row, rows_insert
from referral_platform.tenancy.models import Tenant

from .models import (
    PARTICIPANT_ACCOUNT_KINDS,
    AccountKind,
    EntryKind,
    LedgerAccount,
    LedgerEntry,
    LedgerTransaction,
)

# Credit-normal accounts are shown negated so every balance reads as a positive amount.
CREDIT_NORMAL = frozenset({AccountKind.PENDING, AccountKind.PAYABLE, AccountKind.PAID})


class LedgerIdempotencyError(ValidationError):
    """An idempotency key was reused with different lines."""


@dataclass(frozen=True)
class Line:
    account: LedgerAccount
    amount_minor: int


# Ledger accounts are append-only (a trigger refuses UPDATE and DELETE), so an account row, once
# committed, is the same row forever: each process keeps the ones it has seen committed (an account
# created by a transaction is remembered only when that transaction commits, never when it rolls back).
# Saves the account look-ups of every posting (issue 15).
_COMMITTED_ACCOUNTS: dict[tuple, LedgerAccount] = {}
_COMMITTED_ACCOUNTS_MAX = 20_000


def _account_key(tenant_id: int, program_id: int, participant_id: int | None, kind: str, currency: str) -> tuple:
    # The database's name too: one process may use several databases in turn (`make bench` runs every
    # benchmark in one process, each in a scratch database of its own whose ids start at 1 again).
    database = (connection.alias, connection.settings_dict.get("NAME"))
    return (*database, tenant_id, program_id, participant_id, kind, currency.upper())


def _remember(key: tuple, account: LedgerAccount) -> None:
    def remember() -> None:
        if len(_COMMITTED_ACCOUNTS) >= _COMMITTED_ACCOUNTS_MAX:
            _COMMITTED_ACCOUNTS.clear()
        _COMMITTED_ACCOUNTS[key] = account

    transaction.on_commit(remember)


def ledger_account(
    *, tenant: Tenant, program: Program, kind: str, currency: str, participant: Participant | None = None
) -> LedgerAccount:
    """The account (created on first use; concurrent first uses get the same row)."""
    if kind not in AccountKind.values:
        raise ValidationError({"kind": f"Unknown account kind {kind!r}."})
    if (kind == AccountKind.EXPENSE) != (participant is None):
        raise ValidationError({"participant": "Expense accounts belong to a program; the others to a participant."})
    if program.tenant_id != tenant.pk or (participant is not None and participant.tenant_id != tenant.pk):
        raise ValidationError({"program": "Program and participant must belong to the tenant."})
    key = _account_key(tenant.pk, program.pk, participant.pk if participant else None, kind, currency)
    known = _COMMITTED_ACCOUNTS.get(key)
    if known is not None:
        return known
    lookup = {
        "tenant": tenant,
        "program": program,
        "participant": participant,
        "kind": kind,
        "currency": currency.upper(),
    }
    account = LedgerAccount.objects.filter(**lookup).first()
    if account is None:
        try:
            with transaction.atomic():
                account = LedgerAccount.objects.create(**lookup)
        except IntegrityError:
            account = LedgerAccount.objects.get(**lookup)
    _remember(key, account)
    return account


def participant_account(participant: Participant, kind: str, currency: str) -> LedgerAccount:
    if participant.tenant_id is not None and kind != AccountKind.EXPENSE:
        known = _COMMITTED_ACCOUNTS.get(
            _account_key(participant.tenant_id, participant.program_id, participant.pk, kind, currency)
        )
        if known is not None:  # no need to read the participant's tenant and program
            return known
    return ledger_account(
        tenant=participant.tenant, program=participant.program, participant=participant, kind=kind, currency=currency
    )


def expense_account(program: Program, currency: str) -> LedgerAccount:
    known = _COMMITTED_ACCOUNTS.get(_account_key(program.tenant_id, program.pk, None, AccountKind.EXPENSE, currency))
    if known is not None:
        return known
    return ledger_account(tenant=program.tenant, program=program, kind=AccountKind.EXPENSE, currency=currency)


def _fingerprint(lines: Sequence[Line]) -> str:
    canonical = sorted((line.account.pk, int(line.amount_minor)) for line in lines)
    return hashlib.sha256(json.dumps(canonical).encode()).hexdigest()


def _validate_lines(tenant: Tenant, kind: str, lines: Sequence[Line]) -> None:
    if kind not in EntryKind.values:
        raise ValidationError({"kind": f"Unknown entry kind {kind!r}."})
    if len(lines) < 2:
        raise ValidationError({"lines": "A transaction needs at least two entries."})
    totals: dict[str, int] = {}
    for line in lines:
        if not isinstance(line.amount_minor, int) or isinstance(line.amount_minor, bool):
            raise ValidationError({"lines": "Amounts are integers in minor units."})
        if line.amount_minor == 0:
            raise ValidationError({"lines": "An entry cannot be zero."})
        if line.account.tenant_id != tenant.pk:
            raise ValidationError({"lines": "Every account must belong to the tenant."})
        totals[line.account.currency] = totals.get(line.account.currency, 0) + line.amount_minor
    unbalanced = {currency: total for currency, total in totals.items() if total != 0}
    if unbalanced:
        raise ValidationError({"lines": f"Entries must sum to zero per currency; off by {unbalanced}."})


@transaction.atomic
def ledger_post(
    *,
    tenant: Tenant,
    idempotency_key: str,
    kind: str,
    lines: Sequence[Line],
    memo: str = "",
    reward=None,
    payout=None,
    posted_at: datetime | None = None,
) -> LedgerTransaction:
    """Post a balanced transaction once per ``idempotency_key``.

    Reposting the same key with the same lines returns the existing transaction (nothing written);
    the same key with different lines raises ``LedgerIdempotencyError``. Concurrent posts of one key
    end with one transaction: the loser waits on the unique index, then sees the winner's row.
    """
    if not idempotency_key:
        raise ValidationError({"idempotency_key": "An idempotency key is required."})
    _validate_lines(tenant, kind, lines)
    fingerprint = _fingerprint(lines)
    existing = LedgerTransaction.objects.for_tenant(tenant).filter(idempotency_key=idempotency_key).first()
    if existing is None:
        extra = {"posted_at": posted_at} if posted_at else {}
        try:
            with transaction.atomic():
                created = LedgerTransaction.objects.create(
                    tenant=tenant,
                    idempotency_key=idempotency_key,
                    kind=kind,
                    memo=memo[:500],
                    lines_fingerprint=fingerprint,
                    reward=reward,
                    payout=payout,
                    **extra,
                )
                rows_insert(
                    LedgerEntry(
                        tenant=tenant,
                        transaction=created,
                        account=line.account,
                        amount_minor=line.amount_minor,
                        posted_at=created.posted_at,
                    )
                    for line in lines
                )
                return created
        except IntegrityError:
            existing = LedgerTransaction.objects.for_tenant(tenant).get(idempotency_key=idempotency_key)
    if existing.lines_fingerprint != fingerprint:
        raise LedgerIdempotencyError(
            {"idempotency_key": f"Key {idempotency_key!r} was already used for a different transaction."}
        )
    return existing


@dataclass(frozen=True)
class Posting:
    """One balanced transaction for ``ledger_post_many`` (the arguments of ``ledger_post``)."""

    idempotency_key: str
    kind: str
    lines: Sequence[Line]
    memo: str = ""
    reward: object = None


def ledger_post_many(*, tenant: Tenant, postings: Sequence[Posting]) -> list[LedgerTransaction]:
    """``ledger_post`` for many transactions with three statements: the keys already used (one read), the
    new transactions (one INSERT) and all their entries (one INSERT). Same guarantees: validated lines,
    one transaction per key (a key already posted with the same lines returns that transaction, with
    different lines raises), balanced and append-only (the database's triggers check each transaction at
    commit). A key another transaction posts at the same moment makes the INSERT fail: then every posting
    goes through ``ledger_post`` one by one, which waits for the winner and returns its row."""
    if not postings:
        return []
    for posting in postings:
        if not posting.idempotency_key:
            raise ValidationError({"idempotency_key": "An idempotency key is required."})
        _validate_lines(tenant, posting.kind, posting.lines)
    keys = [posting.idempotency_key for posting in postings]
    if len(set(keys)) != len(keys):
        raise ValidationError({"idempotency_key": "Each posting of a batch needs its own key."})
    fingerprints = {posting.idempotency_key: _fingerprint(posting.lines) for posting in postings}
    existing = {
        row.idempotency_key: row
        for row in LedgerTransaction.objects.for_tenant(tenant).filter(idempotency_key__in=keys)
    }
    for key, row in existing.items():
        if row.lines_fingerprint != fingerprints[key]:
            raise LedgerIdempotencyError(
                {"idempotency_key": f"Key {key!r} was already used for a different transaction."}
            )
    fresh = [posting for posting in postings if posting.idempotency_key not in existing]
    try:
        with transaction.atomic():
            created = rows_insert(
                LedgerTransaction(
                    tenant=tenant,
                    idempotency_key=posting.idempotency_key,
                    kind=posting.kind,
                    memo=posting.memo[:500],
                    lines_fingerprint=fingerprints[posting.idempotency_key],
                    reward=posting.reward,
                )
                for posting in fresh
            )
            rows_insert(
                LedgerEntry(
                    tenant=tenant,
                    transaction=row,
                    account=line.account,
                    amount_minor=line.amount_minor,
                    posted_at=row.posted_at,
                )
                for posting, row in zip(fresh, created, strict=True)
                for line in posting.lines
            )
    except IntegrityError:
        return [
            ledger_post(
                tenant=tenant,
                idempotency_key=posting.idempotency_key,
                kind=posting.kind,
                lines=posting.lines,
                memo=posting.memo,
                reward=posting.reward,
            )
            for posting in postings
        ]
    by_key = {**existing, **{row.idempotency_key: row for row in created}}
    return [by_key[key] for key in keys]


def ledger_accounts_many(*, tenant: Tenant, wanted: Iterable[tuple[Program, Participant | None, str, str]]):
    """The accounts ``ledger_account`` would give for each (program, participant or None, kind, currency), read
    with one query (those not remembered yet) and the missing ones created with one INSERT … ON CONFLICT
    DO NOTHING and read again. Returns {(program id, participant id or None, kind, CURRENCY): account}."""
    found: dict[tuple, LedgerAccount] = {}
    missing: dict[tuple, dict] = {}
    for program, participant, kind, currency in wanted:
        participant_id = participant.pk if participant is not None else None
        short = (program.pk, participant_id, kind, currency.upper())
        if short in found or short in missing:
            continue
        if program.tenant_id != tenant.pk or (participant is not None and participant.tenant_id != tenant.pk):
            raise ValidationError({"program": "Program and participant must belong to the tenant."})
        known = _COMMITTED_ACCOUNTS.get(_account_key(tenant.pk, *short))
        if known is not None:
            found[short] = known
        else:
            missing[short] = {
                "tenant": tenant,
                "program": program,
                "participant": participant,
                "kind": kind,
                "currency": currency.upper(),
            }
    if missing:
        rows = _accounts_matching(tenant, missing)
        absent = [lookup for short, lookup in missing.items() if short not in rows]
        if absent:
            LedgerAccount.objects.bulk_create([LedgerAccount(**lookup) for lookup in absent], ignore_conflicts=True)
            rows = _accounts_matching(tenant, missing)
        for short, account in rows.items():
            found[short] = account
            _remember(_account_key(tenant.pk, *short), account)
    return found


@functools.cache
def _accounts_sql() -> str:
    """``_accounts_matching``'s statement (built once per process)."""
    quote = connection.ops.quote_name
    fields = LedgerAccount._meta.concrete_fields
    columns = ", ".join(f"a.{quote(field.column)}" for field in fields)
    table = quote(LedgerAccount._meta.db_table)
    wanted = (
        "unnest(%(programs)s::bigint[], %(participants)s::bigint[], %(kinds)s::text[], %(currencies)s::text[]) "
        "AS w(program, participant, kind, currency)"
    )
    same = (
        f"a.{quote('tenant_id')} = %(tenant)s AND a.{quote('program_id')} = w.program "
        f"AND a.{quote('kind')} = w.kind AND a.{quote('currency')} = w.currency"
    )
    # Identifiers come from the model's metadata and are quoted; every value is a parameter.
    sql = (
        f"SELECT {columns} FROM {wanted} JOIN {table} a ON {same} "  # noqa: S608
        f"AND a.{quote('participant_id')} = w.participant "
        f"UNION ALL SELECT {columns} FROM {wanted} JOIN {table} a ON {same} "
        f"AND w.participant IS NULL AND a.{quote('participant_id')} IS NULL"
    )
    return sql


def _accounts_matching(tenant: Tenant, lookups: dict[tuple, dict]) -> dict[tuple, LedgerAccount]:
    """The tenant's accounts of ``lookups`` ((program id, participant id or None, kind, CURRENCY) keys), read with ONE
    prepared statement: the wanted keys as arrays, joined by the unique key's columns — a participant's accounts by
    equality, the accounts without participant by ``IS NULL`` (each arm answered by the unique index). Instead of an ORM
    filter OR-ing one condition per key (issue 15: a first month's settlement chunk wants hundreds of new accounts,
    and building that query cost more than running it)."""
    keys = list(lookups)
    params = {
        "programs": [key[0] for key in keys],
        "participants": [key[1] for key in keys],
        "kinds": [key[2] for key in keys],
        "currencies": [key[3] for key in keys],
        "tenant": tenant.pk,
    }
    with connection.cursor() as cursor:
        execute_prepared(cursor, _accounts_sql(), params)
        rows = [model_from_row(LedgerAccount, row, 0, connection) for row in cursor.fetchall()]
    return {(row.program_id, row.participant_id, row.kind, row.currency): row for row in rows}


# --- selectors ---------------------------------------------------------------------------------


def account_balance(account: LedgerAccount, *, before: datetime | None = None) -> int:
    """Raw signed sum of the account's entries (debits positive), optionally only those before ``before``."""
    entries = LedgerEntry.objects.for_tenant(account.tenant_id).filter(account=account)
    if before is not None:
        entries = entries.filter(posted_at__lt=before)
    return entries.aggregate(total=Sum("amount_minor"))["total"] or 0


def presented(kind: str, raw: int) -> int:
    """A raw signed balance in the account's normal direction (positive when normal)."""
    return -raw if kind in CREDIT_NORMAL else raw


def participant_balances(
    tenant: Tenant, *, participant: Participant, currency: str, before: datetime | None = None
) -> dict[str, int]:
    """{pending, payable, paid, receivable}: each derived from the ledger entries, positive when normal."""
    entries = LedgerEntry.objects.for_tenant(tenant).filter(
        account__participant=participant, account__currency=currency.upper()
    )
    if before is not None:
        entries = entries.filter(posted_at__lt=before)
    sums = dict(
        entries.values_list("account__kind").annotate(total=Sum("amount_minor")).values_list("account__kind", "total")
    )
    return {kind.value: presented(kind, sums.get(kind.value) or 0) for kind in PARTICIPANT_ACCOUNT_KINDS}


def unbalanced_transactions(tenant: Tenant) -> list[tuple[int, str, int]]:
    """(transaction id, currency, sum) for every transaction that does not sum to zero. Always empty
    while the database guarantees hold; tests and audits call it."""
    rows = (
        LedgerEntry.objects.for_tenant(tenant)
        .values("transaction_id", "account__currency")
        .annotate(total=Sum("amount_minor"))
        .exclude(total=0)
    )
    return [(row["transaction_id"], row["account__currency"], row["total"]) for row in rows]


def transactions_for(tenant: Tenant, *, reward=None, payout=None) -> Iterable[LedgerTransaction]:
    qs = LedgerTransaction.objects.for_tenant(tenant).prefetch_related("entries__account")
    if reward is not None:
        qs = qs.filter(reward=reward)
    if payout is not None:
        qs = qs.filter(payout=payout)
    return qs.order_by("posted_at", "pk")
