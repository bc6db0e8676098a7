"""Statements in words: Earned / Approved / Paid / Clawed back, the ledger's detail one click away."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from rewards.admin import statement_line_words
from rewards.selectors import StatementLine
from tests import factories as f

pytestmark = pytest.mark.django_db


def _line(kind: str, account: str) -> StatementLine:
    return StatementLine(
        posted_at=timezone.now(), account=account, kind=kind, memo="", amount_minor=1, transaction_id=1,
        reward_id=None, payout_id=None,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "account", "words"),
    [
        ("accrual", "pending", "Earned (on hold)"),
        ("approval", "payable", "Approved"),
        ("approval", "pending", "Approved (released from hold)"),
        ("payout", "paid", "Paid"),
        ("clawback", "receivable", "Clawed back (owed back)"),
        ("reversal", "pending", "Withdrawn (on hold)"),
    ],
    ids=["earned", "approved", "released", "paid", "clawed-back", "withdrawn"],
)
def test_statement_lines_say_what_happened_in_words(kind, account, words):
    assert statement_line_words(_line(kind, account)) == words


def test_the_statement_page_speaks_words_and_keeps_the_ledger_one_click_away(world, client):
    participant = f.ParticipantFactory(program=f.ProgramFactory(tenant=world.a, currency="USD"))
    f.make_ledger_reward(participant, amount_minor=5_000, now=timezone.now() - timedelta(hours=1))
    client.force_login(world.marketer_a)
    today = timezone.now().date()

    page = client.get(
        reverse("admin:rewards_statement"),
        {"participant": participant.pk, "start": str(today - timedelta(days=1)), "end": str(today)},
    ).content.decode()

    lines = page.split('id="statement-lines"')[1].split("</table>")[0]
    assert "Earned (on hold)" in lines and "50.00 USD" in lines and "accrual" not in lines
    assert "<td>On hold</td>" in page and "reconciled" in page
    assert '<details id="ledger-detail"><summary>Ledger detail (for accountants)</summary>' in page
    assert "<td>pending</td><td>accrual</td>" in page.split('id="ledger-detail"')[1]
