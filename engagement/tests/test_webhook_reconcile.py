"""Issue 13, item 1: an outbound webhook delivery whose worker died is delivered by the reconciler
(engagement registers its sweep with referral_platform.reconcile; the core never imports engagement)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from engagement.models import DeliveryStatus, WebhookDelivery
from engagement.services import webhook_emit, webhook_endpoint_create
from referral_platform.reconcile import reconcile, registered_sweeps

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_delivery_left_pending_by_a_dead_worker_is_delivered_by_the_reconciler(world, receiver, monkeypatch):
    from engagement import tasks

    webhook_endpoint_create(tenant=world.a, url=receiver.url, event_types=["referral.created"])
    lost = []
    with monkeypatch.context() as patch:  # the worker that took the delivery task dies with it
        patch.setattr(tasks.webhook_deliver, "apply_async", lambda args, **kw: lost.append(args))
        webhook_emit(tenant_id=world.a.pk, event_type="referral.created", dedupe_key="r:1", data={"id": 1})
    assert len(lost) == 1
    long_ago = timezone.now() - timedelta(minutes=10)
    WebhookDelivery.objects.update(created_at=long_ago, next_attempt_at=None)

    result = reconcile()

    assert "engagement.webhook_deliveries" in registered_sweeps()
    assert result["engagement.webhook_deliveries"] == 1
    [delivery] = WebhookDelivery.objects.all()
    assert delivery.status == DeliveryStatus.DELIVERED and len(receiver.requests) == 1
