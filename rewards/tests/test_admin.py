"""Marketer admin: the review queue with bulk approve / reject (with a reason), payouts, statements, and
Stripe credentials that are never shown back in full. Each scoped to the marketer's tenant."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.urls import reverse
from django.utils import timezone

from referral_platform.tenancy.actors import system_actor
from rewards.ledger import Line, expense_account, ledger_post, participant_account, participant_balances
from rewards.models import AccountKind, Payout, PayoutStatus, Reward, RewardStatus, StripeCredentials
from rewards.payouts import payout_prepare
from rewards.selectors import participant_statement
from rewards.services import reward_approve, reward_create
from tests import factories as f

CHANGELIST = "admin:rewards_reward_changelist"


def _reward(participant, amount, *, days_ago=2, key=None):
    return reward_create(
        tenant=participant.tenant,
        program=participant.program,
        participant=participant,
        amount_minor=amount,
        source_key=key or f"k-{amount}-{Reward.objects.count()}",
        actor=system_actor(participant.tenant),
        now=timezone.now() - timedelta(days=days_ago),
    )


@pytest.fixture
def queue(world):
    program = f.ProgramFactory(tenant=world.a, hold_days=1, auto_approve_limit_minor=50_000, currency="USD")
    participant = f.ParticipantFactory(program=program, name="Queue Person")
    return {
        "big": _reward(participant, 90_000),
        "small": _reward(participant, 10_000),
        "held": _reward(participant, 95_000, days_ago=0),
    }


def test_the_review_queue_lists_only_large_rewards_past_their_hold(client, world, queue):
    client.force_login(world.marketer_a)

    page = client.get(reverse(CHANGELIST), {"queue": "review"}).content.decode()

    assert reverse("admin:rewards_reward_change", args=[queue["big"].pk]) in page
    assert reverse("admin:rewards_reward_change", args=[queue["small"].pk]) not in page
    assert reverse("admin:rewards_reward_change", args=[queue["held"].pk]) not in page


def test_bulk_approve_moves_the_selected_rewards(client, world, queue):
    client.force_login(world.marketer_a)

    client.post(reverse(CHANGELIST), {"action": "approve_rewards", ACTION_CHECKBOX_NAME: [queue["big"].pk]})

    queue["big"].refresh_from_db()
    assert queue["big"].status == RewardStatus.APPROVED
    assert participant_balances(world.a, participant=queue["big"].participant, currency="USD")["payable"] == 90_000


def test_bulk_reject_asks_for_a_reason_first_and_records_it(client, world, queue):
    client.force_login(world.marketer_a)
    ids = [queue["big"].pk, queue["small"].pk]

    form = client.post(reverse(CHANGELIST), {"action": "reject_rewards", ACTION_CHECKBOX_NAME: ids})
    empty = client.post(reverse(CHANGELIST), {"action": "reject_rewards", ACTION_CHECKBOX_NAME: ids, "apply": "1"})
    assert form.status_code == 200 and 'name="reason"' in form.content.decode()
    assert empty.status_code == 200 and Reward.objects.filter(status=RewardStatus.REJECTED).count() == 0

    client.post(
        reverse(CHANGELIST),
        {"action": "reject_rewards", ACTION_CHECKBOX_NAME: ids, "apply": "1", "reason": "duplicate account"},
    )

    rejected = Reward.objects.filter(pk__in=ids)
    assert {r.status for r in rejected} == {RewardStatus.REJECTED}
    assert {r.status_reason for r in rejected} == {"duplicate account"}


def test_a_viewer_cannot_approve(client, world, queue):
    client.force_login(world.viewer_a)

    response = client.post(reverse(CHANGELIST), {"action": "approve_rewards", ACTION_CHECKBOX_NAME: [queue["big"].pk]})

    queue["big"].refresh_from_db()
    assert response.status_code in (200, 302, 403) and queue["big"].status == RewardStatus.PENDING


def test_tenant_b_cannot_approve_or_reject_tenant_a_rewards(client, world, queue):
    client.force_login(world.marketer_b)
    ids = [queue["big"].pk]

    client.post(reverse(CHANGELIST), {"action": "approve_rewards", ACTION_CHECKBOX_NAME: ids})
    client.post(
        reverse(CHANGELIST), {"action": "reject_rewards", ACTION_CHECKBOX_NAME: ids, "apply": "1", "reason": "x"}
    )

    queue["big"].refresh_from_db()
    assert queue["big"].status == RewardStatus.PENDING


def test_a_marketer_marks_a_manual_payout_fulfilled_with_a_note(client, world):
    program = f.ProgramFactory(tenant=world.a, hold_days=0, currency="USD")
    participant = f.ParticipantFactory(program=program)
    reward = reward_create(
        tenant=world.a,
        program=program,
        participant=participant,
        amount_minor=2_000,
        kind="manual",
        description="Gift card",
        source_key="gift",
        actor=system_actor(world.a),
        now=timezone.now() - timedelta(minutes=1),
    )
    reward_approve(reward=reward, actor=system_actor(world.a))
    [payout] = payout_prepare(participant=participant)
    client.force_login(world.marketer_a)
    url = reverse("admin:rewards_payout_changelist")

    client.post(
        url, {"action": "fulfil_payouts", ACTION_CHECKBOX_NAME: [payout.pk], "apply": "1", "note": "code GIFT-123 sent"}
    )

    payout.refresh_from_db()
    reward.refresh_from_db()
    assert payout.status == PayoutStatus.PAID and payout.fulfilment_note == "code GIFT-123 sent"
    assert reward.status == RewardStatus.PAID
    assert participant_balances(world.a, participant=participant, currency="USD")["paid"] == 2_000


def test_failed_payouts_show_status_attempts_and_last_error(client, world):
    payout = f.PayoutFactory(
        participant=f.ParticipantFactory(program=f.ProgramFactory(tenant=world.a)),
        method="transfer",
        status=PayoutStatus.FAILED,
        attempts=3,
        last_error="APIError: Injected failure (fake Stripe).",
    )
    client.force_login(world.marketer_a)

    page = client.get(reverse("admin:rewards_payout_changelist"), {"status": "failed"}).content.decode()

    assert "Injected failure" in page and reverse("admin:rewards_payout_change", args=[payout.pk]) in page


# --- statements --------------------------------------------------------------------------------


@pytest.fixture
def history(world):
    """A participant with a movement before the period and several inside it."""
    program = f.ProgramFactory(tenant=world.a, hold_days=0, currency="USD")
    participant = f.ParticipantFactory(program=program, name="Statement Person")
    ledger_post(
        tenant=world.a,
        idempotency_key="opening",
        kind="adjustment",
        lines=[
            Line(expense_account(program, "USD"), 5_000),
            Line(participant_account(participant, AccountKind.PENDING, "USD"), -5_000),
        ],
        memo="carried over",
        posted_at=timezone.now() - timedelta(days=40),
    )
    reward = _reward(participant, 3_000, days_ago=0)
    reward_approve(reward=reward, actor=system_actor(world.a))
    return participant


def test_a_statement_reconciles_opening_plus_movements_to_closing_and_to_the_ledger(world, history):
    start, end = timezone.now() - timedelta(days=7), timezone.now() + timedelta(seconds=1)

    statement = participant_statement(world.a, participant=history, start=start, end=end)

    assert statement.opening == {"pending": 5_000, "payable": 0, "paid": 0, "receivable": 0}
    assert statement.movements() == {"pending": 0, "payable": 3_000, "paid": 0, "receivable": 0}
    assert statement.reconciles()
    assert statement.closing == participant_balances(world.a, participant=history, currency="USD")


def test_the_statement_page_and_csv_reconcile(client, world, history):
    client.force_login(world.marketer_a)
    today = timezone.now().date()
    query = {"participant": history.pk, "start": str(today - timedelta(days=7)), "end": str(today)}

    page = client.get(reverse("admin:rewards_statement"), query)
    download = client.get(reverse("admin:rewards_statement"), {**query, "format": "csv"})

    assert page.status_code == 200 and "reconciled" in page.content.decode()
    rows = list(csv.reader(io.StringIO(download.content.decode())))
    opening = {r[2]: int(r[4]) for r in rows if r[0] == "opening"}
    closing = {r[2]: int(r[4]) for r in rows if r[0] == "closing"}
    moved = {kind: sum(int(r[4]) for r in rows if r[0] == "entry" and r[2] == kind) for kind in opening}
    assert download["Content-Type"] == "text/csv"
    assert all(opening[k] + moved[k] == closing[k] for k in opening)
    assert opening["pending"] == 5_000 and closing == participant_balances(world.a, participant=history, currency="USD")


def test_tenant_b_cannot_read_tenant_a_statements(client, world, history):
    client.force_login(world.marketer_b)
    today = timezone.now().date()
    query = {"participant": history.pk, "start": str(today - timedelta(days=7)), "end": str(today)}

    page = client.get(reverse("admin:rewards_statement"), query)
    download = client.get(reverse("admin:rewards_statement"), {**query, "format": "csv"})

    assert "Statement Person" not in page.content.decode() and "carried over" not in page.content.decode()
    assert download.get("Content-Type") != "text/csv" and "Statement Person" not in download.content.decode()


# --- Stripe credentials --------------------------------------------------------------------------


def test_stripe_credentials_are_never_shown_back_in_full(client, world):
    credentials = f.StripeCredentialsFactory(
        tenant=world.a, secret_key="sk_test_FULLSECRETVALUE1234", webhook_secret="whsec_FULLWEBHOOKSECRET9876"
    )
    client.force_login(world.owner_a)
    change_url = reverse("admin:rewards_stripecredentials_change", args=[credentials.pk])

    pages = (
        client.get(change_url).content.decode()
        + client.get(reverse("admin:rewards_stripecredentials_changelist")).content.decode()
    )
    client.post(change_url, {"secret_key": "", "webhook_secret": "whsec_NEWSECRET0000"})

    assert "FULLSECRETVALUE" not in pages and "FULLWEBHOOKSECRET" not in pages
    assert "sk_test_…1234" in pages
    credentials.refresh_from_db()
    assert credentials.secret_key == "sk_test_FULLSECRETVALUE1234"  # blank keeps the key
    assert credentials.webhook_secret == "whsec_NEWSECRET0000"


def test_a_marketer_adds_credentials_for_their_own_tenant_only(client, world):
    client.force_login(world.owner_b)

    client.post(
        reverse("admin:rewards_stripecredentials_add"),
        {"secret_key": "sk_test_bbbbbbbbbbbb", "webhook_secret": "whsec_bbbbbbbb"},
    )

    assert StripeCredentials.objects.get().tenant == world.b
    assert not Payout.objects.exists()
