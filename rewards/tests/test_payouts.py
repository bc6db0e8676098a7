"""Payouts through the official stripe library against the fake Stripe server on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import psycopg2
import pytest
from django.conf import settings as django_settings
from django.core.exceptions import ValidationError
from django.db import connection
from django.utils import timezone

from referral_platform.tenancy.actors import system_actor
from rewards.ledger import participant_balances, unbalanced_transactions
from rewards.models import (
    LedgerTransaction,
    ParticipantStripeProfile,
    Payout,
    PayoutMethod,
    PayoutStatus,
    Reward,
    RewardStatus,
    StripeCredentials,
)
from rewards.payouts import (
    execution_lease_key,
    payout_mark_fulfilled,
    payout_prepare,
    payouts_run,
    payouts_run_for_participant,
)
from rewards.services import reward_approve, reward_create, reward_reduce_for_refund, rewards_release_holds
from tests import factories as f

from .conftest import connected_participant

ROOT = Path(__file__).resolve().parents[2]
EARLIER = timezone.now() - timedelta(hours=1)


def approved_reward(participant, amount=10_000, key=None, **kwargs):
    reward = reward_create(
        tenant=participant.tenant,
        program=participant.program,
        participant=participant,
        amount_minor=amount,
        source_key=key or f"conv-{participant.pk}-{Reward.objects.count()}",
        actor=system_actor(participant.tenant),
        now=EARLIER,
        **kwargs,
    )
    return reward_approve(reward=reward, actor=system_actor(participant.tenant))


def balances(participant):
    return participant_balances(participant.tenant, participant=participant, currency="USD")


def test_a_cash_reward_is_paid_by_one_transfer_with_the_key_stored_before_the_call(paying_program, stripe):
    participant = connected_participant(paying_program, stripe)
    reward = approved_reward(participant, 12_345)

    summary = payouts_run()

    payout = Payout.objects.get()
    reward.refresh_from_db()
    [request] = stripe.requests("/v1/transfers", "POST")
    [transfer] = stripe.objects("transfer")
    assert summary == {"prepared": 1, "paid": 1, "failed": 0, "skipped": 0}
    assert request["idempotency_key"] == f"{payout.idempotency_key}:transfer"
    assert transfer["amount"] == 12_345 and transfer["destination"] == payout.stripe_detail["destination"]
    assert payout.status == PayoutStatus.PAID and payout.stripe_object_id == transfer["id"]
    assert reward.status == RewardStatus.PAID and reward.time_to_reward == reward.paid_at - reward.converted_at
    assert balances(participant) == {"pending": 0, "payable": 0, "paid": 12_345, "receivable": 0}
    assert LedgerTransaction.objects.get(payout=payout).kind == "payout"


def test_each_tenant_pays_with_its_own_stripe_key(world, stripe):
    participants = []
    for tenant in (world.a, world.b):
        f.StripeCredentialsFactory(tenant=tenant)
        program = f.ProgramFactory(tenant=tenant, hold_days=0, currency="USD")
        participants.append(connected_participant(program, stripe))
        approved_reward(participants[-1], 1_000)

    payouts_run(tenant=world.a)

    [request] = stripe.requests("/v1/transfers", "POST")
    assert request["api_key_suffix"] == StripeCredentials.objects.get(tenant=world.a).secret_key[-4:]
    assert Payout.objects.filter(tenant=world.b).count() == 0


def test_the_minimum_payout_amount_is_respected(paying_program, stripe):
    f.PayoutSettingsFactory(program=paying_program, minimum_payout_minor=5_000)
    participant = connected_participant(paying_program, stripe)
    approved_reward(participant, 3_000)

    payouts_run()
    assert not Payout.objects.exists() and stripe.requests("/v1/transfers") == []

    approved_reward(participant, 3_000)
    payouts_run()

    assert [t["amount"] for t in stripe.objects("transfer")] == [6_000]
    assert Reward.objects.filter(status=RewardStatus.PAID).count() == 2


def test_cash_waits_for_a_connected_account(paying_program, stripe):
    participant = f.ParticipantFactory(program=paying_program)
    reward = approved_reward(participant, 3_000)

    payouts_run()

    reward.refresh_from_db()
    assert reward.status == RewardStatus.APPROVED and not Payout.objects.exists()


def test_account_credit_goes_to_the_customer_balance(paying_program, stripe):
    participant = connected_participant(paying_program, stripe, customer=True)
    approved_reward(participant, 4_900, kind="credit")

    payouts_run()

    payout = Payout.objects.get()
    [customer] = stripe.objects("customer")
    assert payout.method == PayoutMethod.CUSTOMER_BALANCE and payout.status == PayoutStatus.PAID
    assert customer["balance"] == -4_900
    assert LedgerTransaction.objects.get(payout=payout).kind == "credit"
    assert stripe.requests(f"/v1/customers/{customer['id']}/balance_transactions")[0]["idempotency_key"] == (
        f"{payout.idempotency_key}:balance"
    )


def test_free_months_become_a_coupon_with_a_promotion_code_for_the_customer(paying_program, stripe):
    participant = connected_participant(paying_program, stripe, customer=True)
    approved_reward(
        participant,
        9_800,
        kind="coupon",
        coupon_percent_off=100,
        coupon_duration_months=2,
        description="Two free months",
    )

    payouts_run()

    payout = Payout.objects.get()
    [coupon] = stripe.objects("coupon")
    [code] = stripe.objects("promotion_code")
    assert coupon["percent_off"] == 100 and coupon["duration"] == "repeating" and coupon["duration_in_months"] == 2
    assert code["promotion"]["coupon"] == coupon["id"] and code["customer"] == payout.stripe_detail["customer"]
    assert payout.status == PayoutStatus.PAID and payout.stripe_detail["promotion_code"] == code["code"]


def test_free_months_are_applied_to_the_referred_customers_active_subscription(paying_program, stripe):
    """Issue 13, item 5: the coupon is not only created; it reaches the customer's subscription through the
    Stripe API (the project's Stripe-compatible server), keeping the discounts it already had, once."""
    import stripe as stripe_lib

    participant = connected_participant(paying_program, stripe, customer=True)
    customer = ParticipantStripeProfile.objects.get(participant=participant).customer_id
    key = StripeCredentials.objects.get(tenant=paying_program.tenant).secret_key
    client = stripe_lib.StripeClient(key, base_addresses={"api": stripe.base_url}, max_network_retries=0)
    old = client.v1.coupons.create({"percent_off": 10, "duration": "forever"})
    subscription = client.v1.subscriptions.create({"customer": customer})
    client.v1.subscriptions.update(subscription.id, {"discounts": [{"coupon": old.id}]})
    approved_reward(participant, 9_800, kind="coupon", coupon_percent_off=100, coupon_duration_months=2)

    payouts_run()
    payouts_run()  # a second run changes nothing

    payout = Payout.objects.get()
    [stored] = stripe.objects("subscription")
    coupons = [discount["coupon"]["id"] for discount in stored["discounts"]]
    assert payout.status == PayoutStatus.PAID and payout.stripe_detail["subscription"] == subscription.id
    assert coupons == [old.id, payout.stripe_object_id]
    assert len(stripe.requests(f"/v1/subscriptions/{subscription.id}", method="POST")) == 2  # ours + the set-up


def test_manual_rewards_wait_for_a_marketer_to_mark_them_fulfilled(paying_program, stripe, world):
    participant = f.ParticipantFactory(program=paying_program)
    reward = approved_reward(participant, 0, kind="manual", description="Beta access")

    payouts_run()
    payout = Payout.objects.get()
    assert payout.method == PayoutMethod.MANUAL and payout.status == PayoutStatus.PENDING
    assert stripe.requests() == []

    from referral_platform.tenancy.actors import Actor

    marketer = Actor(kind="member", tenant=world.a, user=world.marketer_a, role="marketer")
    payout_mark_fulfilled(payout=payout, actor=marketer, note="invited to the beta")

    reward.refresh_from_db()
    payout.refresh_from_db()
    assert payout.status == PayoutStatus.PAID and payout.fulfilment_note == "invited to the beta"
    assert reward.status == RewardStatus.PAID and reward.time_to_reward is not None


def test_a_stripe_payout_cannot_be_marked_paid_by_hand_without_a_reference(paying_program, stripe, world):
    participant = connected_participant(paying_program, stripe)
    approved_reward(participant, 2_000)
    [payout] = payout_prepare(participant=participant)

    with pytest.raises(ValidationError) as error:
        payout_mark_fulfilled(payout=payout, actor=system_actor(world.a))

    assert "reference" in error.value.message_dict
    payout.refresh_from_db()
    assert payout.status == PayoutStatus.PENDING


def test_a_failed_transfer_is_recorded_retried_after_backoff_and_paid_once(paying_program, stripe):
    participant = connected_participant(paying_program, stripe)
    reward = approved_reward(participant, 2_000)
    stripe.fail("/v1/transfers", status=500, times=1)
    now = timezone.now()

    payouts_run(now=now)

    payout = Payout.objects.get()
    assert payout.status == PayoutStatus.FAILED and payout.attempts == 1
    assert "APIError" in payout.last_error and payout.next_attempt_at == now + timedelta(seconds=60)
    assert balances(participant)["paid"] == 0

    payouts_run(now=now + timedelta(seconds=30))  # still backing off
    assert len(stripe.requests("/v1/transfers")) == 1

    payouts_run(now=now + timedelta(seconds=61))

    payout.refresh_from_db()
    reward.refresh_from_db()
    keys = {r["idempotency_key"] for r in stripe.requests("/v1/transfers")}
    assert payout.status == PayoutStatus.PAID and payout.attempts == 2 and payout.last_error == ""
    assert keys == {f"{payout.idempotency_key}:transfer"}
    assert len(stripe.objects("transfer")) == 1 and reward.status == RewardStatus.PAID


def test_a_connection_dropped_after_stripe_executed_is_replayed_not_repaid(paying_program, stripe):
    participant = connected_participant(paying_program, stripe)
    approved_reward(participant, 2_000)
    stripe.fail("/v1/transfers", mode="close_after", times=1)
    now = timezone.now()

    payouts_run(now=now)
    assert Payout.objects.get().status == PayoutStatus.FAILED

    payouts_run(now=now + timedelta(hours=1))

    payout = Payout.objects.get()
    [transfer] = stripe.objects("transfer")
    assert payout.status == PayoutStatus.PAID and payout.stripe_object_id == transfer["id"]
    assert [r["replayed"] for r in stripe.requests("/v1/transfers")] == [False, True]
    assert stripe.requests("/v1/transfers", "GET") == []  # within Stripe's window: replayed, not looked up


def test_retries_stop_after_the_maximum_attempts(paying_program, stripe, settings):
    settings.PAYOUT_MAX_ATTEMPTS = 2
    participant = connected_participant(paying_program, stripe)
    approved_reward(participant, 2_000)
    stripe.fail("/v1/transfers", status=503, times=5)
    now = timezone.now()

    payouts_run(now=now)
    payouts_run(now=now + timedelta(hours=1))
    payouts_run(now=now + timedelta(hours=2))

    payout = Payout.objects.get()
    assert payout.status == PayoutStatus.ABANDONED and payout.attempts == 2
    assert len(stripe.requests("/v1/transfers")) == 2


def test_a_clawback_is_netted_off_the_next_payout(paying_program, stripe):
    participant = connected_participant(paying_program, stripe)
    first = approved_reward(participant, 10_000)
    payouts_run()
    reward_reduce_for_refund(reward=first, refunded_minor=50, paid_minor=100, actor=system_actor(participant.tenant))
    assert balances(participant) == {"pending": 0, "payable": 0, "paid": 10_000, "receivable": 5_000}

    approved_reward(participant, 8_000)
    payouts_run()

    latest = Payout.objects.order_by("-pk").first()
    assert (latest.gross_minor, latest.netted_minor, latest.amount_minor) == (8_000, 5_000, 3_000)
    assert [t["amount"] for t in stripe.objects("transfer")] == [10_000, 3_000]
    assert balances(participant) == {"pending": 0, "payable": 0, "paid": 13_000, "receivable": 0}
    assert unbalanced_transactions(participant.tenant) == []


def test_a_payout_smaller_than_the_clawback_owed_is_netted_without_a_transfer(paying_program, stripe):
    participant = connected_participant(paying_program, stripe)
    first = approved_reward(participant, 10_000)
    payouts_run()
    reward_reduce_for_refund(reward=first, refunded_minor=1, paid_minor=1, actor=system_actor(participant.tenant))
    first.refresh_from_db()
    assert first.status == RewardStatus.REVERSED

    approved_reward(participant, 4_000)
    payouts_run()

    latest = Payout.objects.order_by("-pk").first()
    assert latest.method == PayoutMethod.NETTING and latest.amount_minor == 0 and latest.status == PayoutStatus.PAID
    assert len(stripe.objects("transfer")) == 1
    assert balances(participant) == {"pending": 0, "payable": 0, "paid": 10_000, "receivable": 6_000}


# --- Stripe's idempotency window: an old unknown outcome is looked up, not replayed blindly ----------------

LATER = timedelta(hours=25)  # past the window in which Stripe replays an idempotency key


@pytest.mark.parametrize(
    ("kind", "dropped", "made"),
    [
        ("cash", "/v1/transfers", {"transfer": 1}),
        ("credit", "/v1/customers/", {"customer_balance_transaction": 1}),
        ("coupon", "/v1/promotion_codes", {"coupon": 1, "promotion_code": 1}),
    ],
    ids=["transfer", "customer-balance", "coupon-and-promotion-code"],
)
def test_an_unknown_outcome_older_than_stripes_idempotency_window_is_found_at_stripe_not_paid_again(
    paying_program, stripe, kind, dropped, made
):
    # Given: Stripe executed the payout's call but the answer never arrived
    participant = connected_participant(paying_program, stripe, customer=True)
    extra = {"coupon_percent_off": 100, "coupon_duration_months": 1} if kind == "coupon" else {}
    approved_reward(participant, 2_500, kind=kind, **extra)
    stripe.fail(dropped, mode="close_after", times=1)
    now = timezone.now()
    payouts_run(now=now)
    payout = Payout.objects.get()
    assert payout.status == PayoutStatus.FAILED and payout.outcome_unknown_since == now
    made_before = {name: stripe.objects(name) for name in made}
    assert {name: len(objects) for name, objects in made_before.items()} == made

    # When: more than a day later, when Stripe no longer remembers the key, the next run tries again
    assert stripe.expire_idempotency_keys() > 0
    seen = len(stripe.requests())
    summary = payouts_run(now=now + LATER)

    # Then: it only looks up what the lost attempt made, and records it; nothing is made twice
    payout.refresh_from_db()
    assert summary["paid"] == 1 and payout.status == PayoutStatus.PAID and payout.outcome_unknown_since is None
    assert {r["method"] for r in stripe.requests()[seen:]} == {"GET"}
    assert {name: stripe.objects(name) for name in made} == made_before
    first = next(iter(made_before.values()))[0]
    assert payout.stripe_object_id == first["id"] and payout.stripe_detail["found_at_stripe"] == list(made)
    assert balances(participant)["payable"] == 0 and LedgerTransaction.objects.filter(payout=payout).count() == 1


def test_an_old_unknown_outcome_with_nothing_at_stripe_is_paid_by_one_new_transfer(paying_program, stripe):
    # Given: the connection dropped before Stripe executed anything
    participant = connected_participant(paying_program, stripe)
    approved_reward(participant, 3_000)
    stripe.fail("/v1/transfers", mode="close", times=1)
    now = timezone.now()
    payouts_run(now=now)
    payout = Payout.objects.get()
    assert payout.status == PayoutStatus.FAILED and payout.outcome_unknown_since == now
    assert stripe.objects("transfer") == []

    # When: the next attempt comes after Stripe's idempotency window
    stripe.expire_idempotency_keys()
    payouts_run(now=now + LATER)

    # Then: the lookup finds nothing and exactly one transfer is made
    payout.refresh_from_db()
    [transfer] = stripe.objects("transfer")
    [lookup] = stripe.requests("/v1/transfers", "GET")
    assert lookup["params"]["transfer_group"] == f"payout-{payout.pk}"
    assert [r["status"] for r in stripe.requests("/v1/transfers", "POST")] == ["closed", 200]
    assert payout.status == PayoutStatus.PAID and payout.stripe_object_id == transfer["id"]
    assert transfer["amount"] == 3_000 and "found_at_stripe" not in payout.stripe_detail


def test_a_definite_refusal_from_stripe_leaves_no_unknown_outcome_to_look_up(paying_program, stripe):
    participant = connected_participant(paying_program, stripe)
    approved_reward(participant, 3_000)
    stripe.fail("/v1/transfers", status=400, times=1)
    now = timezone.now()

    payouts_run(now=now)
    payout = Payout.objects.get()
    assert payout.status == PayoutStatus.FAILED and payout.outcome_unknown_since is None
    assert "InvalidRequestError" in payout.last_error

    payouts_run(now=now + LATER)

    payout.refresh_from_db()
    assert payout.status == PayoutStatus.PAID and len(stripe.objects("transfer")) == 1
    assert stripe.requests("/v1/transfers", "GET") == []  # nothing to look up


def test_a_refusal_after_an_earlier_step_made_a_coupon_still_looks_the_coupon_up_later(paying_program, stripe):
    # Given: the coupon was made, then Stripe refused its promotion code
    participant = connected_participant(paying_program, stripe, customer=True)
    approved_reward(participant, 2_500, kind="coupon", coupon_percent_off=50)
    stripe.fail("/v1/promotion_codes", status=400, times=1)
    now = timezone.now()
    payouts_run(now=now)
    payout = Payout.objects.get()
    [coupon] = stripe.objects("coupon")
    assert payout.status == PayoutStatus.FAILED and payout.outcome_unknown_since == now

    # When: the retry comes after Stripe forgot the coupon's idempotency key
    stripe.expire_idempotency_keys()
    payouts_run(now=now + LATER)

    # Then: the coupon is found, not made again, and its promotion code is made once
    payout.refresh_from_db()
    assert stripe.objects("coupon") == [coupon] and len(stripe.objects("promotion_code")) == 1
    assert payout.status == PayoutStatus.PAID and payout.stripe_object_id == coupon["id"]
    assert payout.stripe_detail["found_at_stripe"] == ["coupon"]


# --- concurrency -----------------------------------------------------------------------------------


@pytest.fixture
def other_session():
    """A second PostgreSQL session on the test database (another run, a marketer's transaction)."""
    db = connection.settings_dict
    session = psycopg2.connect(
        dbname=db["NAME"], user=db["USER"], password=db["PASSWORD"] or None, host=db["HOST"], port=db["PORT"]
    )
    # Another payouts run works across tenants: row-level security's audited path, as rls.bypass sets it
    # (a superuser would skip the policy anyway; the owner role of `make test` is none and is subject to it).
    with session.cursor() as cursor:
        cursor.execute("SELECT set_config('app.rls_bypass', 'on', false)")
    yield session
    session.rollback()
    session.close()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "held_by",
    ["row-lock", "execution-lease"],
    ids=["row-locked-by-another-transaction", "lease-held-by-another-run"],
)
def test_a_payout_held_by_another_session_is_reported_skipped_and_paid_by_the_next_run(
    stripe, world, other_session, held_by
):
    # Given: a due payout that another session holds
    f.StripeCredentialsFactory(tenant=world.a)
    program = f.ProgramFactory(tenant=world.a, hold_days=0, currency="USD")
    participant = connected_participant(program, stripe)
    approved_reward(participant, 2_500)
    [payout] = payout_prepare(participant=participant)
    with other_session.cursor() as cursor:
        if held_by == "row-lock":
            cursor.execute("SELECT id FROM rewards_payout WHERE id = %s FOR UPDATE", [payout.pk])
        else:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [execution_lease_key(payout.pk)])

    # When: a payout run comes by
    summary = payouts_run()

    # Then: it reports the payout skipped, and neither attempted nor paid it
    payout.refresh_from_db()
    assert summary == {"prepared": 0, "paid": 0, "failed": 0, "skipped": 1}
    assert payout.status == PayoutStatus.PENDING and payout.attempts == 0
    assert stripe.requests("/v1/transfers") == []

    # When: the other session is done, the next run pays it
    other_session.rollback()
    summary = payouts_run()

    payout.refresh_from_db()
    assert summary == {"prepared": 0, "paid": 1, "failed": 0, "skipped": 0}
    assert payout.status == PayoutStatus.PAID and len(stripe.objects("transfer")) == 1


@pytest.mark.django_db(transaction=True)
def test_a_marketer_cannot_mark_a_payout_fulfilled_while_a_run_is_paying_it(stripe, world, other_session):
    f.StripeCredentialsFactory(tenant=world.a)
    program = f.ProgramFactory(tenant=world.a, hold_days=0, currency="USD")
    participant = connected_participant(program, stripe)
    approved_reward(participant, 2_500)
    [payout] = payout_prepare(participant=participant)
    with other_session.cursor() as cursor:  # a run's execution lease: its Stripe call may be in flight
        cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [execution_lease_key(payout.pk)])

    with pytest.raises(ValidationError) as error:
        payout_mark_fulfilled(payout=payout, actor=system_actor(world.a), reference="tr_by_hand")

    payout.refresh_from_db()
    assert "right now" in error.value.message_dict["status"][0]
    assert payout.status == PayoutStatus.PENDING and not LedgerTransaction.objects.filter(payout=payout).exists()


@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_payout_runs_for_one_participant_make_one_transfer(stripe, world):
    f.StripeCredentialsFactory(tenant=world.a)
    program = f.ProgramFactory(tenant=world.a, hold_days=0, currency="USD")
    participant = connected_participant(program, stripe)
    for _ in range(3):
        approved_reward(participant, 1_500)
    barrier = threading.Barrier(20)
    errors = []

    def run():
        try:
            barrier.wait()
            payouts_run_for_participant(participant=participant)
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert not errors
    assert len(stripe.requests("/v1/transfers", "POST")) == 1
    assert [t["amount"] for t in stripe.objects("transfer")] == [4_500]
    assert Payout.objects.count() == 1 and Payout.objects.get().status == PayoutStatus.PAID
    assert LedgerTransaction.objects.filter(kind="payout").count() == 1
    assert balances(participant) == {"pending": 0, "payable": 0, "paid": 4_500, "receivable": 0}


WORKER = """
import os, signal, sys
import django
django.setup()
from rewards import payouts
from rewards.models import Payout
if os.environ.get("KILL_AFTER_CALL"):
    original = payouts._call_stripe
    def call_then_die(payout, **kwargs):
        result = original(payout, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)  # the Stripe call succeeded; nothing recorded yet
        return result
    payouts._call_stripe = call_then_die
print("worker: paying", flush=True)
payouts.payout_execute(payout=Payout.objects.get(pk=int(sys.argv[1])))
print("worker: returned", flush=True)
"""


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("moment", ["hung-in-the-stripe-call", "right-after-the-stripe-call"])
def test_killing_the_worker_mid_payout_then_rerunning_makes_exactly_one_transfer(stripe, stripe_server, world, moment):
    f.StripeCredentialsFactory(tenant=world.a)
    program = f.ProgramFactory(tenant=world.a, hold_days=0, currency="USD")
    participant = connected_participant(program, stripe)
    reward = approved_reward(participant, 7_777)
    [payout] = payout_prepare(participant=participant)
    db = connection.settings_dict
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="referral_platform.settings.test",
        DATABASE_URL=f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        # The test settings prefer DATABASE_OWNER_URL (set by the embedded devstack): it must name this database too.
        DATABASE_OWNER_URL=f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        STRIPE_API_BASE=stripe_server.url,
    )
    if moment == "hung-in-the-stripe-call":
        stripe.fail("/v1/transfers", mode="hang_after", seconds=60)
    else:
        env["KILL_AFTER_CALL"] = "1"
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(payout.pk)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )

    deadline = time.monotonic() + 60
    while not any(r["status"] == 200 for r in stripe.requests("/v1/transfers")) and worker.poll() is None:
        assert time.monotonic() < deadline, "the worker never reached Stripe"
        time.sleep(0.05)
    if worker.poll() is None:
        os.kill(worker.pid, signal.SIGKILL)
    worker.wait(timeout=30)
    output = worker.stdout.read().decode()
    worker.stdout.close()

    assert worker.returncode == -signal.SIGKILL, output
    assert "worker: returned" not in output
    assert len(stripe.objects("transfer")) == 1
    payout.refresh_from_db()
    assert payout.status == PayoutStatus.PROCESSING and payout.attempts == 1  # the crash left it mid-way
    assert not LedgerTransaction.objects.filter(payout=payout).exists()

    for _ in range(200):  # the killed session's row lock goes when PostgreSQL notices the dead client
        payouts_run()
        payout.refresh_from_db()
        if payout.status == PayoutStatus.PAID:
            break
        time.sleep(0.05)

    reward.refresh_from_db()
    [transfer] = stripe.objects("transfer")
    assert payout.status == PayoutStatus.PAID and payout.stripe_object_id == transfer["id"]
    assert transfer["amount"] == 7_777 and reward.status == RewardStatus.PAID
    requests = stripe.requests("/v1/transfers")
    assert {r["idempotency_key"] for r in requests} == {f"{payout.idempotency_key}:transfer"}
    assert [r["replayed"] for r in requests] == [False, True]  # the re-run was answered by Stripe's replay
    assert LedgerTransaction.objects.filter(payout=payout).count() == 1
    assert balances(participant) == {"pending": 0, "payable": 0, "paid": 7_777, "receivable": 0}


def test_release_then_pay_covers_auto_approved_rewards(paying_program, stripe):
    participant = connected_participant(paying_program, stripe)
    reward_create(
        tenant=participant.tenant,
        program=paying_program,
        participant=participant,
        amount_minor=500,
        source_key="auto",
        actor=system_actor(participant.tenant),
        now=EARLIER,
    )

    rewards_release_holds()
    payouts_run()

    assert Reward.objects.get().status == RewardStatus.PAID
    assert stripe.base_url == django_settings.STRIPE_API_BASE
