from __future__ import annotations

import pytest

from programs.models import ProgramStatus
from referrals import hot_redis
from referrals.models import Channel
from tests import factories as f

# The project-wide fixtures (tests/conftest.py) for the app's own tests.
from tests.conftest import TenantWorld, _isolated_cache, celery_eager, world  # noqa: F401


@pytest.fixture
def redis_client():
    return hot_redis.client()


@pytest.fixture
def stream(redis_client):
    """The click stream's entries, decoded: [(entry id, {field: value})]."""

    def read():
        return [
            (entry_id.decode(), {k.decode(): v.decode() for k, v in fields.items()})
            for entry_id, fields in redis_client.xrange(hot_redis.click_stream_key())
        ]

    return read


@pytest.fixture
def live_link(world):  # noqa: F811  (the imported fixture)
    """Tenant A's active program (landing URL with its own query and fragment) and a link on it."""
    program = f.ProgramFactory(
        tenant=world.a,
        status=ProgramStatus.ACTIVE,
        landing_url="https://tenant-a.example/signup?plan=pro&ref=stale#pricing",
    )
    participant = f.ParticipantFactory(program=program)
    return f.ReferralLinkFactory(participant=participant, code="LiveCode_A1b2", channel=Channel.EMAIL)
