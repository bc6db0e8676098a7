"""Order never changes money (issue 7, item 2; the semantics: /work/wt/issue7-spec.md).

Hypothesis generates what happens to one or two referred customers — monthly ``invoice.paid`` events,
partial and full ``charge.refunded`` events (Stripe's cumulative ``amount_refunded``), a
``customer.subscription.deleted`` somewhere on the timeline, and repeated deliveries of the same
Stripe event — and delivers the same set in several orders: in order of occurrence (each event once),
reversed, shuffled, and shuffled from six threads at once. Every delivery is a signed POST to the real
endpoint ``/webhooks/stripe/<tenant>/``, and every task behind it (webhook handling, conversion
processing, attribution, reward evaluation) runs in-process after its commit, as a worker would run it.

Each order gets its own workspace, built identically (programs, participants, the referrals signed up
through ``POST /api/v1/signups`` before any payment), so the outcome is compared by names, never by
primary keys: the live rewards, the ledger balance of every account, and each referral's state must be
the same whatever the order. A corrected reward may leave a reversed row and correcting ledger
transactions behind; only what is still owed counts.

The 120.00-instead-of-70.00 case (the second month's invoice processed before the first's) is the
explicit example of the property and a plain test of its own.

Every webhook costs the whole pipeline (about 0.2 s here), so the property tries 6 generated sets by
default; ``ORDER_INDEPENDENCE_EXAMPLES=200`` runs a longer search. A failing example is reported as
found, not shrunk (shrinking takes minutes); ``ORDER_INDEPENDENCE_SHRINK=1`` shrinks it to a minimal one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import queue
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from celery.signals import task_failure, task_retry
from dateutil.relativedelta import relativedelta
from django.db import connection
from django.db.models import Sum
from django.test import Client
from django.urls import reverse
from hypothesis import HealthCheck, Phase, example, given
from hypothesis import strategies as st
from rest_framework.test import APIClient

from referral_platform.celery import app as celery_app
from referral_platform.tenancy.models import Tenant
from referrals.models import ConversionEvent, ConversionEventStatus, Referral, ReviewStatus
from rewards.models import LedgerEntry, Reward, RewardStatus, StripeWebhookEvent, WebhookEventStatus
from tests import factories as f
from tests.hypothesis_db import database_examples

from .pipeline import program_with_rules, rules_doc

# A fixed calendar, so a failing example replays exactly (holds never end: nothing is released here).
BASE = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
CUSTOMER_SPACING = timedelta(days=9)
THREADS = 6


# --- the programs every workspace has ----------------------------------------------------------------
@dataclass(frozen=True)
class ProgramSpec:
    rules: dict
    referrers: tuple[str, ...]  # participant external ids
    attribution_model: str = "last_touch"
    by_clicks: bool = False  # True: the customer clicked every referrer's link and signs up by visitor id


PROGRAMS: dict[str, ProgramSpec] = {
    # The example: 50.00 on the first payment, 10 % of every payment for 12 months, and 20.00 of
    # account credit for the referred company when it becomes a paying customer.
    "named": ProgramSpec(
        rules=rules_doc(
            referrer=[
                {"kind": "flat_per_conversion", "amount_minor": 5_000},
                {"kind": "recurring_percent", "percent_bp": 1_000, "months": 12},
            ],
            referred=[{"kind": "account_credit", "amount_minor": 2_000}],
            cancellation={"policy": "keep", "within_days": 60},
        ),
        referrers=("named-dana",),
    ),
    # 20 % of the first payment, 5 % of the payments of its first two months, a free month for the
    # referred company; a cancellation within 60 days of converting withdraws everything.
    "revenue": ProgramSpec(
        rules=rules_doc(
            referrer=[
                {"kind": "percent_of_revenue", "percent_bp": 2_000},
                {"kind": "recurring_percent", "percent_bp": 500, "months": 2},
            ],
            referred=[{"kind": "free_months", "months": 1}],
            cancellation={"policy": "clawback", "within_days": 60},
        ),
        referrers=("revenue-dana",),
    ),
    # Two referrers' clicks share the credit equally; odd amounts exercise the largest-remainder split.
    "linear": ProgramSpec(
        rules=rules_doc(
            referrer=[
                {"kind": "flat_per_conversion", "amount_minor": 10_001},
                {"kind": "recurring_percent", "percent_bp": 1_500, "months": 12},
            ],
            referred=[{"kind": "account_credit", "amount_minor": 1_000}],
            cancellation={"policy": "clawback", "within_days": 60},
        ),
        referrers=("linear-dana", "linear-eli"),
        attribution_model="linear",
        by_clicks=True,
    ),
}


# --- what happens to the customers: Stripe events ---------------------------------------------------
def _ts(moment: datetime) -> int:
    return int(moment.timestamp())


@dataclass(frozen=True)
class StripeEvent:
    """One Stripe event of a customer's subscription (``payload``: the JSON Stripe sends for it).

    ``period`` names the invoice and its charge (``in_<customer>_<period>``, ``ch_<customer>_<period>``),
    ``amount`` what the invoice charged, ``refunded`` the charge's cumulative ``amount_refunded``."""

    event_id: str
    type: str
    at: datetime
    customer: str
    period: int | None = None
    amount: int = 0
    refunded: int = 0

    @property
    def payload(self) -> dict:
        obj = {
            "invoice.paid": self._invoice,
            "charge.refunded": self._charge,
            "customer.subscription.deleted": self._subscription,
        }[self.type]()
        return {
            "id": self.event_id,
            "object": "event",
            "type": self.type,
            "created": _ts(self.at),
            "livemode": False,
            "api_version": "2024-06-20",
            "pending_webhooks": 1,
            "data": {"object": obj},
        }

    def _invoice(self) -> dict:
        customer, period, amount = self.customer, self.period, self.amount
        start, end = _ts(self.at), _ts(self.at + relativedelta(months=1))
        return {
            "id": f"in_{customer}_{period}",
            "object": "invoice",
            "customer": customer,
            "subscription": f"sub_{customer}",
            "billing_reason": "subscription_create" if period == 0 else "subscription_cycle",
            "status": "paid",
            "paid": True,
            "amount_due": amount,
            "amount_paid": amount,
            "currency": "usd",
            "charge": f"ch_{customer}_{period}",
            "payment_intent": f"pi_{customer}_{period}",
            "status_transitions": {"finalized_at": start - 3600, "paid_at": start},
            "period_start": start,
            "period_end": end,
            "lines": {
                "object": "list",
                "has_more": False,
                "data": [
                    {
                        "id": f"il_{customer}_{period}",
                        "object": "line_item",
                        "amount": amount,
                        "currency": "usd",
                        "quantity": 1,
                        "period": {"start": start, "end": end},
                    }
                ],
            },
        }

    def _charge(self) -> dict:
        customer, period = self.customer, self.period
        return {
            "id": f"ch_{customer}_{period}",
            "object": "charge",
            "customer": customer,
            "invoice": f"in_{customer}_{period}",
            "payment_intent": f"pi_{customer}_{period}",
            "amount": self.amount,
            "amount_captured": self.amount,
            "amount_refunded": self.refunded,
            "currency": "usd",
            "captured": True,
            "paid": True,
            "refunded": self.refunded >= self.amount,
        }

    def _subscription(self) -> dict:
        return {
            "id": f"sub_{self.customer}",
            "object": "subscription",
            "customer": self.customer,
            "status": "canceled",
            "currency": "usd",
            "canceled_at": _ts(self.at),
            "ended_at": _ts(self.at),
        }


def invoice_paid(*, customer: str, period: int, amount: int, paid_at: datetime) -> StripeEvent:
    return StripeEvent(f"evt_{customer}_paid_{period}", "invoice.paid", paid_at, customer, period, amount)


def charge_refunded(
    *, customer: str, period: int, number: int, amount: int, refunded: int, at: datetime
) -> StripeEvent:
    """Stripe's ``charge.refunded``: ``refunded`` is the charge's total refunded so far."""
    return StripeEvent(f"evt_{customer}_refund_{number}", "charge.refunded", at, customer, period, amount, refunded)


def subscription_deleted(*, customer: str, ended_at: datetime) -> StripeEvent:
    return StripeEvent(f"evt_{customer}_cancel", "customer.subscription.deleted", ended_at, customer)


@dataclass(frozen=True)
class Customer:
    """A referred customer: which program referred them, when they signed up, and their Stripe events."""

    customer_id: str
    program: str
    signed_up_at: datetime
    events: tuple[StripeEvent, ...]

    @property
    def index(self) -> int:
        return int(self.customer_id.removeprefix("cus_"))


@dataclass(frozen=True)
class Scenario:
    """The customers, and the orders (lists of Stripe event ids, duplicates included) to deliver in."""

    customers: tuple[Customer, ...]
    duplicates: tuple[str, ...] = ()
    shuffled: tuple[str, ...] = ()
    concurrent: tuple[str, ...] = ()

    @property
    def events(self) -> dict[str, StripeEvent]:
        return {event.event_id: event for customer in self.customers for event in customer.events}

    def in_order(self) -> list[str]:
        """Each event once, in order of occurrence (ties by event id)."""
        return [event.event_id for event in sorted(self.events.values(), key=lambda e: (e.at, e.event_id))]

    def reversed_order(self) -> list[str]:
        """Latest first; each duplicate right after its original."""
        extra = Counter(self.duplicates)
        return [event_id for event_id in reversed(self.in_order()) for event_id in [event_id] * (1 + extra[event_id])]


def customer_start(index: int) -> datetime:
    return BASE + CUSTOMER_SPACING * index


@st.composite
def customers(draw, index: int) -> Customer:
    customer = f"cus_{index}"
    start = customer_start(index)
    program = draw(st.sampled_from(sorted(PROGRAMS)))

    # 1-4 invoices of consecutive monthly periods, a few hours to four days into each period.
    payments: list[tuple[int, datetime]] = []
    for period in range(draw(st.integers(1, 4))):
        paid_at = start + relativedelta(months=period) + timedelta(hours=draw(st.integers(0, 96)))
        payments.append((draw(st.integers(1_000, 60_000)), paid_at))
    events = [
        invoice_paid(customer=customer, period=period, amount=amount, paid_at=paid_at)
        for period, (amount, paid_at) in enumerate(payments)
    ]

    # 0-2 refunds; two refunds of one charge carry increasing cumulative amounts, the last maybe all of it.
    refunded_periods = Counter(draw(st.lists(st.integers(0, len(payments) - 1), max_size=2)))
    number = 0
    for period, count in sorted(refunded_periods.items()):
        amount, paid_at = payments[period]
        totals = sorted(draw(st.lists(st.integers(1, amount - 1), min_size=count, max_size=count, unique=True)))
        if draw(st.booleans()):
            totals[-1] = amount
        days = sorted(draw(st.lists(st.integers(1, 25), min_size=count, max_size=count, unique=True)))
        for refunded, day in zip(totals, days, strict=True):
            at = paid_at + timedelta(days=day, hours=2)
            events.append(
                charge_refunded(
                    customer=customer, period=period, number=number, amount=amount, refunded=refunded, at=at
                )
            )
            number += 1

    # Maybe a cancellation: before the first payment, between two, after the last, or > 60 days in.
    first, last = payments[0][1], payments[-1][1]
    where = draw(st.sampled_from([None, "before-first", "between", "after-last", "after-60-days"]))
    ended_at = None
    if where == "before-first":
        ended_at = first - timedelta(hours=draw(st.integers(1, 20)))
    elif where == "between" and len(payments) > 1:
        after = draw(st.integers(0, len(payments) - 2))
        ended_at = payments[after][1] + timedelta(days=draw(st.integers(1, 20)))
    elif where in ("between", "after-last"):
        ended_at = last + timedelta(days=draw(st.integers(1, 20)))
    elif where == "after-60-days":
        ended_at = first + timedelta(days=draw(st.integers(61, 100)))
    if ended_at is not None:
        events.append(subscription_deleted(customer=customer, ended_at=ended_at))
    return Customer(customer, program, start - timedelta(days=1), tuple(events))


@st.composite
def scenarios(draw) -> Scenario:
    people = tuple(draw(customers(index)) for index in range(draw(st.integers(1, 2))))
    event_ids = sorted(event.event_id for customer in people for event in customer.events)
    duplicates = tuple(draw(st.lists(st.sampled_from(event_ids), max_size=3)))
    deliveries = event_ids + list(duplicates)
    return Scenario(
        people, duplicates, tuple(draw(st.permutations(deliveries))), tuple(draw(st.permutations(deliveries)))
    )


def named_customer(amounts=(10_000, 10_000)) -> Customer:
    """The issue's example: monthly invoices of 100.00 USD from a customer of the "named" program."""
    start = customer_start(0)
    events = tuple(
        invoice_paid(customer="cus_0", period=period, amount=amount, paid_at=start + relativedelta(months=period))
        for period, amount in enumerate(amounts)
    )
    return Customer("cus_0", "named", start - timedelta(days=1), events)


NAMED_SCENARIO = Scenario(
    customers=(named_customer(),),
    shuffled=("evt_cus_0_paid_1", "evt_cus_0_paid_0"),
    concurrent=("evt_cus_0_paid_1", "evt_cus_0_paid_0"),
)


# --- a workspace per order ----------------------------------------------------------------------------
@dataclass
class Workspace:
    tenant: Tenant
    webhook_secret: str


def workspace_build(scenario_customers: tuple[Customer, ...]) -> Workspace:
    """A tenant with its Stripe signing secret, the customers' programs of ``PROGRAMS`` (a year's hold, so
    nothing is approved; a 120-day cookie window), their referrers, and each customer's referral signed up
    through the API before any event: by referral code, or for a click-credited program by the visitor id
    that clicked both referrers' links.
    """
    tenant = f.TenantFactory()
    webhook_secret = f.StripeCredentialsFactory(tenant=tenant).webhook_secret
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {f.make_api_key(tenant).raw_key}")
    links = {}
    for slug in sorted({customer.program for customer in scenario_customers}):
        spec = PROGRAMS[slug]
        program = program_with_rules(
            tenant,
            spec.rules,
            slug=slug,
            hold_days=365,
            cookie_window_days=120,
            attribution_model=spec.attribution_model,
        )
        links[slug] = [
            f.ReferralLinkFactory(
                participant=f.ParticipantFactory(
                    program=program, external_id=name, name=name.title(), email=f"{name}@partners.example"
                ),
                code=f"{name[:16]}-{tenant.pk}",
            )
            for name in spec.referrers
        ]
    for customer in scenario_customers:
        spec, program_links = PROGRAMS[customer.program], links[customer.program]
        payload = {
            "email": f"buyer@customer{customer.index}.example",
            "company": f"Customer {customer.index}",
            "customer_external_id": customer.customer_id,
            "occurred_at": customer.signed_up_at.isoformat(),
        }
        if spec.by_clicks:
            visitor = f"visitor-{customer.index}"
            for hours_before, link in zip((48, 36), program_links, strict=True):  # Dana's link first, then Eli's
                f.ClickFactory(
                    link=link, visitor_id=visitor, occurred_at=customer.signed_up_at - timedelta(hours=hours_before)
                )
            payload["visitor_id"] = visitor
        else:
            payload["referral_code"] = program_links[0].code
        response = api.post("/api/v1/signups", payload, format="json")
        assert response.status_code == 201, response.content
    referrals = Referral.objects.for_tenant(tenant)
    assert sorted(referrals.values_list("referred_external_id", "status", "review_status")) == [
        (customer.customer_id, "signed_up", ReviewStatus.CLEAR) for customer in scenario_customers
    ], "the harness could not establish every referral before the events"
    return Workspace(tenant, webhook_secret)


def _signed(payload: dict, secret: str) -> tuple[str, str]:
    """Stripe's scheme: ``Stripe-Signature: t=<now>,v1=HMAC-SHA256(secret, "<t>.<body>")``."""
    body = json.dumps(payload)
    timestamp = int(time.time())
    signature = hmac.new(secret.encode(), f"{timestamp}.{body}".encode(), hashlib.sha256).hexdigest()
    return body, f"t={timestamp},v1={signature}"


def _post(client: Client, workspace: Workspace, event: StripeEvent):
    body, header = _signed(event.payload, workspace.webhook_secret)
    url = reverse("stripe_webhook", kwargs={"tenant_slug": workspace.tenant.slug})
    return client.post(url, data=body, content_type="application/json", HTTP_STRIPE_SIGNATURE=header)


def deliver_sequentially(workspace: Workspace, events: dict[str, StripeEvent], order: list[str]) -> None:
    """One delivery after the other; a task that fails fails the delivery (its exception propagates)."""
    client = Client()
    for event_id in order:
        response = _post(client, workspace, events[event_id])
        assert response.status_code == 200, (event_id, response.content)


def deliver_concurrently(workspace: Workspace, events: dict[str, StripeEvent], order: list[str]) -> list[str]:
    """``THREADS`` threads, each with its own client and database connection, take the next event of
    ``order`` as soon as they are free: up to six deliveries (and their tasks) run at once.

    Tasks run as a worker runs them: a task that asks to be retried (a deadlock is an ``OperationalError``,
    which the conversion and evaluation tasks retry) runs again, and a failing task does not fail the
    request that queued it. Returns what failed for good (tasks, responses other than 200)."""
    pending: queue.Queue[str] = queue.Queue()
    for event_id in order:
        pending.put(event_id)
    start = threading.Barrier(THREADS)
    errors: list[str] = []

    def task_failed(sender=None, exception=None, **kwargs):
        errors.append(f"task {sender.name} failed: {type(exception).__name__}: {exception}")

    def task_retried(**kwargs):
        time.sleep(random.uniform(0.05, 0.5))  # the worker's backoff, shortened: let the other writer finish

    def work():
        client = Client()
        try:
            start.wait()
            while True:
                try:
                    event_id = pending.get_nowait()
                except queue.Empty:
                    return
                response = _post(client, workspace, events[event_id])
                if response.status_code != 200:
                    errors.append(f"{event_id}: {response.status_code} {response.content!r}")
        except Exception as error:
            errors.append(f"{type(error).__name__}: {error}")
        finally:
            connection.close()

    propagates = celery_app.conf.task_eager_propagates
    celery_app.conf.task_eager_propagates = False
    task_failure.connect(task_failed, weak=False)
    task_retry.connect(task_retried, weak=False)
    try:
        threads = [threading.Thread(target=work) for _ in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        task_failure.disconnect(task_failed)
        task_retry.disconnect(task_retried)
        celery_app.conf.task_eager_propagates = propagates
    return errors


def unhandled_events(workspace: Workspace) -> list[str]:
    """Webhooks not handled, and conversions not processed or refused: every one of these histories' events
    should be handled (none lost in a queue, none invalid)."""
    webhooks = StripeWebhookEvent.objects.for_tenant(workspace.tenant).exclude(status=WebhookEventStatus.PROCESSED)
    conversions = ConversionEvent.objects.for_tenant(workspace.tenant).filter(
        status__in=[ConversionEventStatus.RECEIVED, ConversionEventStatus.FAILED]
    )
    problems = [f"webhook {e.stripe_event_id} is {e.status}: {e.error}" for e in webhooks.order_by("stripe_event_id")]
    problems += [f"conversion {e.external_event_id} is {e.status}: {e.error}" for e in conversions.order_by("pk")]
    return problems


# --- what is compared -----------------------------------------------------------------------------
DEBIT_NORMAL = {"expense", "receivable"}


@dataclass(frozen=True)
class Snapshot:
    rewards: tuple  # (participant, side, kind, rule kind, earning Stripe event, amount, net, status)
    balances: tuple  # (owner, account kind, currency, balance in the account's normal direction)
    referrals: tuple  # (customer, referrer, status, converted_at, churned_at)

    def diff(self, other: Snapshot) -> str:
        lines = []
        for part in ("rewards", "balances", "referrals"):
            mine, theirs = Counter(getattr(self, part)), Counter(getattr(other, part))
            lines += [f"    {part} - {item}" for item in sorted((mine - theirs).elements())]
            lines += [f"    {part} + {item}" for item in sorted((theirs - mine).elements())]
        return "\n".join(lines)


def snapshot(tenant: Tenant) -> Snapshot:
    """The money and the referral states of ``tenant``, named by external ids and Stripe event ids.

    Rewards: the live ones (neither rejected nor reversed) and any with money left. Balances: every
    account whose entries do not sum to zero, shown as positive numbers in its normal direction."""
    rewards = []
    for reward in Reward.objects.for_tenant(tenant).select_related("participant", "conversion_event"):
        net = reward.amount_minor - reward.reversed_minor - reward.clawed_back_minor
        if reward.status in (RewardStatus.REJECTED, RewardStatus.REVERSED) and net <= 0:
            continue
        event = reward.conversion_event.external_event_id if reward.conversion_event else ""
        rule_kind = (reward.explanation or {}).get("rule_kind", "")
        rewards.append(
            (
                reward.participant.external_id,
                reward.beneficiary_side,
                reward.kind,
                rule_kind,
                event,
                reward.amount_minor,
                net,
                reward.status,
            )
        )
    balances = []
    totals = (
        LedgerEntry.objects.filter(tenant=tenant)
        .values("account__participant__external_id", "account__program__slug", "account__kind", "account__currency")
        .annotate(total=Sum("amount_minor"))
    )
    for row in totals:
        if not row["total"]:
            continue
        owner = row["account__participant__external_id"] or f"program {row['account__program__slug']}"
        kind = row["account__kind"]
        balance = row["total"] if kind in DEBIT_NORMAL else -row["total"]
        balances.append((owner, kind, row["account__currency"], balance))
    referrals = [
        (
            referral.referred_external_id,
            referral.referrer.external_id,
            referral.status,
            referral.converted_at.isoformat() if referral.converted_at else None,
            referral.churned_at.isoformat() if referral.churned_at else None,
        )
        for referral in Referral.objects.for_tenant(tenant).select_related("referrer")
    ]
    return Snapshot(tuple(sorted(rewards)), tuple(sorted(balances)), tuple(sorted(referrals)))


def _side_by_side(jobs: list) -> None:
    """Run ``jobs`` (callables) in threads of their own, each with its own database connection."""
    errors: list[BaseException] = []

    def run(job):
        try:
            job()
        except BaseException as error:  # re-raised in the calling thread
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


@dataclass(frozen=True)
class Outcome:
    snapshot: Snapshot
    problems: tuple[str, ...]  # failed tasks and unhandled events


def outcomes_of(scenario: Scenario, orders: dict[str, tuple[list[str], bool]]) -> dict[str, Outcome]:
    """Deliver each order (name → (event ids, concurrently?)) into a fresh workspace; what each ends with.

    The sequential orders run side by side, one thread each (their workspaces share nothing), to save time;
    the concurrent ones after them, one at a time."""
    workspaces = {name: workspace_build(scenario.customers) for name in orders}
    events = scenario.events
    _side_by_side(
        [
            lambda name=name, order=order: deliver_sequentially(workspaces[name], events, order)
            for name, (order, concurrently) in orders.items()
            if not concurrently
        ]
    )
    failures = {
        name: deliver_concurrently(workspaces[name], events, order)
        for name, (order, concurrently) in orders.items()
        if concurrently
    }
    return {
        name: Outcome(snapshot(workspace.tenant), (*failures.get(name, []), *unhandled_events(workspace)))
        for name, workspace in workspaces.items()
    }


def outcome_of(scenario: Scenario, order: list[str], *, concurrently: bool = False) -> Outcome:
    """Deliver ``order`` into a fresh workspace; what it ends with."""
    return outcomes_of(scenario, {"given": (order, concurrently)})["given"]


def assert_orders_agree(scenario: Scenario, orders: dict[str, tuple[list[str], bool]]) -> Snapshot:
    """Every order (name → (event ids, concurrently?)) handles every event and ends like the in-order
    delivery; returns that end. A failure lists every order that went wrong, and how."""
    in_order = scenario.in_order()
    outcomes = outcomes_of(scenario, {"in-order": (in_order, False), **orders})
    expected = outcomes["in-order"].snapshot
    report = []
    for name, outcome in outcomes.items():
        lines = [f"  {problem}" for problem in outcome.problems]
        if outcome.snapshot != expected:
            lines += [f"  ends differently (- in-order, + {name}):", expected.diff(outcome.snapshot)]
        if lines:
            order = in_order if name == "in-order" else orders[name][0]
            report.append(f"{name} delivery ({' '.join(order)}):\n" + "\n".join(lines))
    if report:
        raise AssertionError("\n".join(report))
    return expected


# --- the property ---------------------------------------------------------------------------------
EXAMPLES = int(os.environ.get("ORDER_INDEPENDENCE_EXAMPLES", "6"))
SHRINK = os.environ.get("ORDER_INDEPENDENCE_SHRINK") == "1"


@pytest.mark.django_db(transaction=True)
@database_examples(
    EXAMPLES,
    phases=[Phase.explicit, Phase.generate, *([Phase.shrink] if SHRINK else [])],
    health=(HealthCheck.data_too_large,),
    print_blob=False,
)
@pytest.mark.heavy(62)
@example(scenario=NAMED_SCENARIO)
@given(scenario=scenarios())
def test_the_order_of_stripe_events_never_changes_rewards_balances_or_referral_states(scenario):
    assert_orders_agree(
        scenario,
        {
            "reversed": (scenario.reversed_order(), False),
            "shuffled": (list(scenario.shuffled), False),
            "concurrent": (list(scenario.concurrent), True),
        },
    )


# --- the example ----------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("order", "concurrently"),
    [
        (["evt_cus_0_paid_0", "evt_cus_0_paid_1"], False),
        (["evt_cus_0_paid_1", "evt_cus_0_paid_0"], False),
        (["evt_cus_0_paid_1", "evt_cus_0_paid_0"], True),
    ],
    ids=["in-order", "period-2-first", "both-at-once"],
)
def test_two_monthly_invoices_pay_the_referrer_70_and_the_referred_company_20_in_any_order(order, concurrently):
    # Given a customer referred by Dana in a program paying 50.00 + 10 % of every payment to her and
    # 20.00 of account credit to the customer, and two monthly invoices of 100.00 USD
    scenario = Scenario(customers=(named_customer(),))

    # When Stripe's invoice.paid events arrive in this order
    outcome = outcome_of(scenario, order, concurrently=concurrently)

    # Then Dana earns 50.00 + 10.00 + 10.00 and the customer 20.00, and the first invoice converted it
    expected = Snapshot(
        rewards=(
            ("cus_0", "referred", "credit", "account_credit", "evt_cus_0_paid_0", 2_000, 2_000, "pending"),
            ("named-dana", "referrer", "cash", "flat_per_conversion", "evt_cus_0_paid_0", 5_000, 5_000, "pending"),
            ("named-dana", "referrer", "cash", "recurring_percent", "evt_cus_0_paid_0", 1_000, 1_000, "pending"),
            ("named-dana", "referrer", "cash", "recurring_percent", "evt_cus_0_paid_1", 1_000, 1_000, "pending"),
        ),
        balances=(
            ("cus_0", "pending", "USD", 2_000),
            ("named-dana", "pending", "USD", 7_000),
            ("program named", "expense", "USD", 9_000),
        ),
        referrals=(("cus_0", "named-dana", "converted", customer_start(0).isoformat(), None),),
    )
    if outcome.problems or outcome.snapshot != expected:
        raise AssertionError(
            f"delivered {' '.join(order)}:\n"
            + "".join(f"  {problem}\n" for problem in outcome.problems)
            + f"  - expected, + got:\n{expected.diff(outcome.snapshot)}"
        )


# --- orders today's engine already agrees on (they keep the harness honest) -----------------------------
def _customer(program: str, events: list[StripeEvent]) -> Customer:
    return Customer("cus_0", program, customer_start(0) - timedelta(days=1), tuple(events))


def _month(n: int, hours: int = 0) -> datetime:
    return customer_start(0) + relativedelta(months=n) + timedelta(hours=hours)


REFUNDED = _customer(
    "named",
    [
        invoice_paid(customer="cus_0", period=0, amount=24_000, paid_at=_month(0)),
        invoice_paid(customer="cus_0", period=1, amount=24_000, paid_at=_month(1, 5)),
        charge_refunded(customer="cus_0", period=1, number=0, amount=24_000, refunded=6_000, at=_month(1, 50)),
        charge_refunded(customer="cus_0", period=1, number=1, amount=24_000, refunded=24_000, at=_month(1, 90)),
    ],
)
CANCELLED_AFTER_TWO_PAYMENTS = _customer(
    "revenue",
    [
        invoice_paid(customer="cus_0", period=0, amount=30_000, paid_at=_month(0)),
        invoice_paid(customer="cus_0", period=1, amount=30_000, paid_at=_month(1, 3)),
        subscription_deleted(customer="cus_0", ended_at=_month(1, 100)),
    ],
)


# Period 1 is refunded in full: its 10 % share goes; the first payment's 50.00 + 24.00 and 20.00 stay.
REFUNDED_BALANCES = (
    ("cus_0", "pending", "USD", 2_000),
    ("named-dana", "pending", "USD", 7_400),
    ("program named", "expense", "USD", 9_400),
)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("customer", "order", "balances", "referral_status"),
    [
        (
            REFUNDED,
            "evt_cus_0_paid_0 evt_cus_0_paid_0 evt_cus_0_paid_1 evt_cus_0_refund_1 evt_cus_0_refund_0 "
            "evt_cus_0_paid_1 evt_cus_0_refund_0 evt_cus_0_refund_1",
            REFUNDED_BALANCES,
            "converted",
        ),
        (
            REFUNDED,
            "evt_cus_0_refund_1 evt_cus_0_refund_0 evt_cus_0_paid_0 evt_cus_0_paid_1",
            REFUNDED_BALANCES,
            "converted",
        ),
        (
            CANCELLED_AFTER_TWO_PAYMENTS,
            "evt_cus_0_paid_0 evt_cus_0_cancel evt_cus_0_paid_1 evt_cus_0_cancel",
            (),  # cancelled within 60 days of converting: everything is clawed back
            "churned",
        ),
    ],
    ids=[
        "every-event-twice-refunds-reversed",
        "refunds-before-their-payment",
        "cancellation-before-an-earlier-payment-of-a-converted-referral",
    ],
)
def test_duplicates_refunds_first_and_a_late_cancellation_first_end_as_in_order(
    customer, order, balances, referral_status
):
    scenario = Scenario(customers=(customer,))

    outcome = assert_orders_agree(scenario, {"given": (order.split(), False)})

    assert outcome.balances == balances
    assert [referral[2] for referral in outcome.referrals] == [referral_status]
