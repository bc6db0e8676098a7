"""Rollups: the hook-driven incremental refreshes end where a rebuild from raw rows ends, whatever the
sequence of clicks, sign-ups, conversions, refunds and late events; refreshing again changes nothing."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from analytics.models import DailyRollup, DailyTotal, MonthlyReferrals
from analytics.rollups import METRICS, rollups_rebuild, rollups_refresh_sources
from referral_platform.hooks import hooks
from referral_platform.tenancy.actors import system_actor
from referrals.models import Referral
from rewards.models import Reward, RewardStatus
from rewards.services import reward_approve
from rewards.tests.pipeline import Pipeline, program_with_rules, referrer, rules_doc
from tests import factories as f

pytestmark = pytest.mark.django_db


def snapshot(tenant) -> list[tuple]:
    rows = DailyRollup.objects.for_tenant(tenant).order_by("day", "participant_id", "channel")
    return [(r.day, r.program_id, r.participant_id, r.channel, r.kind, *(getattr(r, m) for m in METRICS)) for r in rows]


def totals_snapshot(tenant) -> list[tuple]:
    rows = DailyTotal.objects.for_tenant(tenant).order_by("day", "program_id", "channel")
    return [(r.day, r.program_id, r.channel, *(getattr(r, m) for m in METRICS)) for r in rows]


def monthly_snapshot(tenant) -> list[tuple]:
    rows = MonthlyReferrals.objects.for_tenant(tenant).order_by("month", "participant_id", "channel")
    return [(r.month, r.program_id, r.participant_id, r.channel, r.kind, r.currency, r.referrals) for r in rows]


@pytest.fixture
def pipe(world, django_capture_on_commit_callbacks):
    return Pipeline(world, django_capture_on_commit_callbacks)


def _world_program(world):
    rules = rules_doc(referrer=[{"kind": "flat_per_conversion", "amount_minor": 5_000}])
    program = program_with_rules(world.a, rules, cookie_window_days=365)
    people = [referrer(program, name) for name in ("Ada Ref", "Bob Ref", "Cy Ref")]
    return program, people


@pytest.mark.parametrize("seed", [7, 2026, 31])
def test_incremental_rollups_equal_a_rebuild_after_a_random_sequence(
    world, pipe, django_capture_on_commit_callbacks, seed
):
    rng = random.Random(seed)
    _program, people = _world_program(world)
    now = timezone.now().replace(microsecond=0)
    customers: list[tuple[str, object]] = []  # (customer id, first payment at)

    for counter in range(1, 31):
        op = rng.choice(["click", "click", "signup", "signup", "pay", "pay", "refund", "qualify", "cancel", "approve"])
        at = now - timedelta(days=rng.randint(0, 20), hours=rng.randint(0, 23))
        if op == "click":
            _participant, link = rng.choice(people)
            with django_capture_on_commit_callbacks(execute=True):
                clicks = [
                    f.ClickFactory(link=link, occurred_at=at, is_bot=rng.random() < 0.2)
                    for _ in range(rng.randint(1, 3))
                ]
                hooks.clicks_flushed(click_ids=[click.pk for click in clicks])
        elif op == "signup":
            _participant, link = rng.choice(people)
            customer = f"cus_{seed}_{counter}"
            pipe.sign_up(email=f"{customer}@buyer{counter}.example", customer=customer, code=link.code, at=at)
            customers.append((customer, at))
        elif op in ("pay", "refund", "qualify", "cancel") and customers:
            customer, _ = rng.choice(customers)
            # Late events: occurred_at anywhere in the window, earlier than events already processed.
            if op == "pay":
                pipe.pay(f"pay_{seed}_{counter}", customer=customer, amount=rng.choice([10_000, 25_000, 99_900]), at=at)
            elif op == "refund":
                pipe.event(
                    f"ref_{seed}_{counter}", "refund", customer=customer, amount=rng.choice([1_000, 5_000]), at=at
                )
            elif op == "qualify":
                pipe.event(f"qual_{seed}_{counter}", "qualified", customer=customer, at=at)
            else:
                pipe.event(f"cancel_{seed}_{counter}", "cancellation", customer=customer, at=at)
        elif op == "approve":
            pending = Reward.objects.for_tenant(world.a).filter(status=RewardStatus.PENDING).first()
            if pending is not None:
                with django_capture_on_commit_callbacks(execute=True):
                    reward_approve(reward=pending, actor=system_actor(world.a))

    incremental = snapshot(world.a)
    totals = {name: sum(row[5 + index] for row in incremental) for index, name in enumerate(METRICS)}
    # The sequence exercised every kind of fact (the seeds are chosen so it does).
    assert totals["clicks"] and totals["referrals"] and totals["customers"], totals
    assert totals["revenue_minor"] and totals["refunds_minor"] and totals["rewards_earned_minor"], totals
    assert Referral.objects.for_tenant(world.a).exists()

    incremental_totals = totals_snapshot(world.a)
    incremental_monthly = monthly_snapshot(world.a)
    assert incremental_monthly

    rollups_rebuild(tenant_id=world.a.pk)

    assert snapshot(world.a) == incremental
    assert totals_snapshot(world.a) == incremental_totals
    assert monthly_snapshot(world.a) == incremental_monthly
    # The monthly rows are the daily rows with referrals summed per participant, month and channel ('': all).
    months = {}
    for r in DailyRollup.objects.for_tenant(world.a).filter(referrals__gt=0):
        for channel in (r.channel, ""):  # per channel, and over all channels
            key = (r.day.replace(day=1), r.program_id, r.participant_id, channel, r.kind, r.currency)
            months[key] = months.get(key, 0) + r.referrals
    assert sorted((*key, value) for key, value in months.items()) == sorted(incremental_monthly)
    summed = {}
    for row in incremental:
        key = (row[0], row[1], row[3])
        summed[key] = [a + b for a, b in zip(summed.get(key, [0] * len(METRICS)), row[5:], strict=True)]
    assert {(day, program, channel): list(values) for day, program, channel, *values in incremental_totals} == summed


def test_refreshing_the_same_sources_twice_changes_nothing(world, pipe):
    _program, people = _world_program(world)
    _, link = people[0]
    referral = pipe.sign_up(email="x@buyer.example", customer="cus_x", code=link.code)
    pipe.pay("pay_x", customer="cus_x", amount=10_000)
    before = snapshot(world.a)

    rollups_refresh_sources(tenant_id=world.a.pk, referral_ids=[referral.pk])
    rollups_refresh_sources(tenant_id=world.a.pk, referral_ids=[referral.pk])

    assert before and snapshot(world.a) == before
    assert sum(row[METRICS.index("customers") + 5] for row in before) == 1


def test_rollups_of_tenant_b_are_untouched_by_a_rebuild_of_tenant_a(world, pipe):
    program_b = f.ProgramFactory(tenant=world.b)
    link_b = f.ReferralLinkFactory(participant=f.ParticipantFactory(program=program_b))
    f.ClickFactory(link=link_b, occurred_at=timezone.now())
    rollups_rebuild(tenant_id=world.b.pk)
    before_b = snapshot(world.b)

    call_command("rebuild_rollups", "--tenant", world.a.slug)

    assert before_b and snapshot(world.b) == before_b
    assert snapshot(world.a) == []


def test_a_redated_stage_leaves_no_count_on_its_old_day(world, pipe):
    from referrals.services import referral_stage_redate

    _program, people = _world_program(world)
    _, link = people[0]
    referral = pipe.sign_up(email="late@buyer.example", customer="cus_late", code=link.code, at=timezone.now())
    pipe.pay("pay_late", customer="cus_late", amount=10_000, at=timezone.now())
    earlier = timezone.now() - timedelta(days=5)
    with pipe.capture(execute=True):
        referral_stage_redate(referral=referral, field="converted_at", at=earlier, actor=system_actor(world.a))

    rows = DailyRollup.objects.for_tenant(world.a).filter(customers__gt=0)
    assert [(row.day, row.customers) for row in rows] == [(earlier.date(), 1)]
