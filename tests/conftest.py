from __future__ import annotations

import pytest
import redis
from django.conf import settings
from rest_framework.test import APIClient

from referral_platform.tenancy.models import Role

from .factories import MembershipFactory, TenantFactory, make_api_key


@pytest.fixture(autouse=True)
def _isolated_cache():
    """Each test starts with an empty cache (only this run's key prefix; the Redis is shared)."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    prefix = settings.CACHES["default"]["KEY_PREFIX"]

    def wipe():
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)

    wipe()
    yield
    wipe()
    client.close()


class TenantWorld:
    """Tenant A and tenant B, each with an owner, a marketer, a viewer and an API key."""

    def __init__(self):
        self.a = TenantFactory(slug="tenant-a", name="Tenant A")
        self.b = TenantFactory(slug="tenant-b", name="Tenant B")
        self.owner_a = MembershipFactory(tenant=self.a, role=Role.OWNER).user
        self.marketer_a = MembershipFactory(tenant=self.a, role=Role.MARKETER).user
        self.viewer_a = MembershipFactory(tenant=self.a, role=Role.VIEWER).user
        self.owner_b = MembershipFactory(tenant=self.b, role=Role.OWNER).user
        self.marketer_b = MembershipFactory(tenant=self.b, role=Role.MARKETER).user
        self.key_a = make_api_key(self.a).raw_key
        self.key_b = make_api_key(self.b).raw_key

    def api(self, raw_key: str | None) -> APIClient:
        client = APIClient()
        if raw_key:
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
        return client


@pytest.fixture
def world(db) -> TenantWorld:
    return TenantWorld()


@pytest.fixture
def celery_eager():
    """Tasks queued with enqueue_on_commit run in-process right after the commit (no worker, and
    nothing is sent to the shared broker)."""
    from referral_platform.celery import app

    previous = (app.conf.task_always_eager, app.conf.task_eager_propagates)
    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True
    yield app
    app.conf.task_always_eager, app.conf.task_eager_propagates = previous
