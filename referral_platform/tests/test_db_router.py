"""docs/scaling.md: analytics reads may go to a read replica, only when asked, never writes."""

from __future__ import annotations

from referral_platform.db_router import ReplicaRouter, replica_reads
from referrals.models import Click


def test_reads_go_to_the_replica_only_inside_replica_reads_and_only_when_one_is_configured(settings):
    router = ReplicaRouter()
    settings.DATABASES = {**settings.DATABASES, "replica": dict(settings.DATABASES["default"])}

    outside = router.db_for_read(Click)
    with replica_reads():
        inside = router.db_for_read(Click)
        write = router.db_for_write(Click)
    after = router.db_for_read(Click)

    assert (outside, inside, write, after) == (None, "replica", "default", None)
    assert router.allow_migrate("replica", "referrals") is False


def test_without_a_replica_everything_reads_from_the_primary(settings):
    databases = dict(settings.DATABASES)
    databases.pop("replica", None)
    settings.DATABASES = databases

    with replica_reads():
        assert ReplicaRouter().db_for_read(Click) is None
