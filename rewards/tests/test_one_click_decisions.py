"""One-click decisions on a reward (row and detail page, with a confirmation and a reason where needed) and
"pay approved rewards now" for one participant or a selection, instead of waiting for the payout run."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.urls import reverse
from django.utils import timezone

from referral_platform.tenancy.actors import system_actor
from rewards.models import Payout, RewardStatus
from rewards.services import reward_approve
from tests import factories as f

pytestmark = pytest.mark.django_db


def pending_reward(tenant, amount=5_000):
    program = f.ProgramFactory(tenant=tenant, hold_days=0, currency="USD")
    participant = f.ParticipantFactory(program=program)
    return f.make_ledger_reward(participant, amount_minor=amount, now=timezone.now() - timedelta(days=1))


def decide_url(reward, decision):
    return reverse("admin:rewards_reward_decide", args=[reward.pk, decision])


def test_the_row_and_the_detail_page_offer_the_decisions_that_apply(world, client):
    reward = pending_reward(world.a)
    client.force_login(world.marketer_a)

    listing = client.get(reverse("admin:rewards_reward_changelist")).content.decode()
    detail = client.get(reverse("admin:rewards_reward_change", args=[reward.pk])).content.decode()

    for page in (listing, detail):
        assert decide_url(reward, "approve") in page and decide_url(reward, "reject") in page
        assert decide_url(reward, "pay") not in page  # pending: nothing to pay yet


def test_a_reward_still_on_hold_is_not_offered_for_approval(world, client):
    """QA: the admin offered "Approve" on rewards still on hold; clicking it only answered "on hold until …"."""
    program = f.ProgramFactory(tenant=world.a, hold_days=30, currency="USD")
    reward = f.make_ledger_reward(f.ParticipantFactory(program=program), amount_minor=5_000, now=timezone.now())
    assert reward.hold_until > timezone.now()
    client.force_login(world.marketer_a)

    listing = client.get(reverse("admin:rewards_reward_changelist")).content.decode()
    detail = client.get(reverse("admin:rewards_reward_change", args=[reward.pk])).content.decode()

    for page in (listing, detail):
        assert decide_url(reward, "approve") not in page and decide_url(reward, "reject") in page


def test_approve_asks_for_confirmation_then_approves(world, client):
    reward = pending_reward(world.a)
    client.force_login(world.marketer_a)

    confirm = client.get(decide_url(reward, "approve"))
    reward.refresh_from_db()
    assert confirm.status_code == 200 and "Yes, approve" in confirm.content.decode()
    assert reward.status == RewardStatus.PENDING

    done = client.post(decide_url(reward, "approve"))
    reward.refresh_from_db()
    assert done.status_code == 302 and reward.status == RewardStatus.APPROVED


def test_reject_needs_a_reason(world, client):
    reward = pending_reward(world.a)
    client.force_login(world.marketer_a)

    refused = client.post(decide_url(reward, "reject"), {"reason": ""})
    reward.refresh_from_db()
    assert refused.status_code == 200 and reward.status == RewardStatus.PENDING

    client.post(decide_url(reward, "reject"), {"reason": "self-referral"})
    reward.refresh_from_db()
    assert reward.status == RewardStatus.REJECTED and "self-referral" in reward.status_reason


def test_a_viewer_cannot_decide_and_another_tenant_gets_404(world, client):
    reward = pending_reward(world.a)
    client.force_login(world.viewer_a)
    as_viewer = client.post(decide_url(reward, "approve"))
    client.force_login(world.marketer_b)
    as_other_tenant = client.post(decide_url(reward, "approve"))

    reward.refresh_from_db()
    assert (as_viewer.status_code, as_other_tenant.status_code) == (403, 404)
    assert reward.status == RewardStatus.PENDING


def test_pay_now_pays_just_that_participant_at_once(world, client, django_capture_on_commit_callbacks):
    mine, other = pending_reward(world.a), pending_reward(world.a, amount=7_000)
    for reward in (mine, other):
        f.ParticipantStripeProfileFactory(participant=reward.participant)
        reward_approve(reward=reward, actor=system_actor(world.a))
    client.force_login(world.marketer_a)

    with django_capture_on_commit_callbacks(execute=False) as queued:
        response = client.post(decide_url(mine, "pay"))

    mine.refresh_from_db()
    other.refresh_from_db()
    assert response.status_code == 302
    assert mine.payout is not None and mine.payout.amount_minor == 5_000
    assert other.payout_id is None and Payout.objects.count() == 1
    assert len(queued) == 1  # the payout's execution, queued once the request commits


def test_pay_now_for_a_selection_of_rewards(world, client, django_capture_on_commit_callbacks):
    rewards = [pending_reward(world.a, amount=amount) for amount in (1_000, 2_000)]
    for reward in rewards:
        f.ParticipantStripeProfileFactory(participant=reward.participant)
        reward_approve(reward=reward, actor=system_actor(world.a))
    client.force_login(world.marketer_a)

    with django_capture_on_commit_callbacks(execute=False) as queued:
        client.post(
            reverse("admin:rewards_reward_changelist"),
            {"action": "pay_now_rewards", ACTION_CHECKBOX_NAME: [r.pk for r in rewards]},
        )

    assert Payout.objects.count() == 2 and len(queued) == 2


def test_a_decision_the_row_does_not_offer_is_refused_by_url_too(world, client):
    """QA: /decide/pay/ on a pending reward paid the participant's other approved rewards; the URL is no back door."""
    pending = pending_reward(world.a)
    other = f.make_ledger_reward(pending.participant, amount_minor=2_000, now=timezone.now() - timedelta(days=1))
    reward_approve(reward=other, actor=system_actor(world.a))
    client.force_login(world.marketer_a)

    response = client.post(decide_url(pending, "pay"))

    assert response.status_code == 404
    assert not Payout.objects.filter(participant=pending.participant).exists()


def test_the_confirmation_returns_only_to_a_page_of_this_site(world, client):
    reward = pending_reward(world.a)
    client.force_login(world.marketer_a)

    response = client.post(decide_url(reward, "approve"), {"next": "//evil.example/phish"})

    assert response.status_code == 302
    assert response["Location"] == reverse("admin:rewards_reward_changelist")
