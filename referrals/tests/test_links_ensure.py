"""An active participant gets one link per channel in one INSERT; a clash (code taken, concurrent ensure)
falls back to the per-link path, so nobody ends up without a channel's link."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from referrals.models import Channel, ReferralLink
from referrals.services import links
from tests import factories as f

pytestmark = pytest.mark.django_db


def _active_participant(tenant):
    return f.ParticipantFactory(program=f.ProgramFactory(tenant=tenant), status="active")


def test_every_channel_gets_its_link_in_one_insert_and_a_second_ensure_creates_nothing(world):
    participant = _active_participant(world.a)
    ReferralLink.objects.filter(participant=participant).delete()

    with CaptureQueriesContext(connection) as first:
        links.participant_links_ensure(participant=participant)
    rows = ReferralLink.objects.filter(participant=participant)

    assert sorted(rows.values_list("channel", flat=True)) == sorted(Channel.values)
    assert rows.values("code").distinct().count() == len(Channel.values)
    assert sum(query["sql"].startswith("INSERT") for query in first.captured_queries) == 1
    links.participant_links_ensure(participant=participant)
    assert ReferralLink.objects.filter(participant=participant).count() == len(Channel.values)


def test_a_code_already_taken_falls_back_to_a_fresh_code_for_that_channel(world, monkeypatch):
    taken = links.referral_link_create(participant=_active_participant(world.b), channel=Channel.DIRECT)
    participant = _active_participant(world.a)
    ReferralLink.objects.filter(participant=participant).delete()
    codes = iter([taken.code] + [f"fresh-{index}" for index in range(20)])
    monkeypatch.setattr(links, "new_referral_code", lambda: next(codes))

    links.participant_links_ensure(participant=participant)

    mine = ReferralLink.objects.filter(participant=participant)
    assert sorted(mine.values_list("channel", flat=True)) == sorted(Channel.values)
    assert taken.code not in set(mine.values_list("code", flat=True))
    assert ReferralLink.objects.filter(code=taken.code).get().pk == taken.pk
