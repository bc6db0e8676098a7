"""``latest_credited_click`` in one prepared statement (issue 15) answers what the ORM query it replaced answered:
the same click (latest counted one at or before the moment, the higher id first on a tie), with its link, the link's
participant and program and its own participant and program loaded; never another workspace's click."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from hypothesis import given
from hypothesis import strategies as st

from referral_platform.db.prepared import statements_sent
from referrals.models import Click
from referrals.selectors import IdentityCluster, latest_credited_click
from tests import factories as f
from tests.hypothesis_db import database_examples

from .builders import click, program_for, referrer_with_link

NOW = timezone.now().replace(microsecond=0)
VISITORS = ("v-1", "v-2", "v-3")


def _orm_latest(tenant, cluster: IdentityCluster, until):
    """The ORM query ``latest_credited_click`` was before issue 15's fifteenth round: the reference."""
    return (
        Click.objects.for_tenant(tenant)
        .filter(visitor_id__in=cluster.visitor_ids, is_bot=False, occurred_at__lte=until)
        .select_related("link__participant", "link__program", "participant", "program")
        .order_by("-occurred_at", "-pk")
        .first()
    )


def _links(tenant):
    one = program_for(tenant, attribution_model="last_touch", cookie_window_days=30)
    two = program_for(tenant, attribution_model="first_touch", cookie_window_days=60)
    return [
        referrer_with_link(one, name="Dana", code=f"dana{tenant.pk}")[1],
        referrer_with_link(one, name="Ravi", code=f"ravi{tenant.pk}")[1],
        referrer_with_link(two, name="Lee", code=f"lee{tenant.pk}")[1],
    ]


def _described(found: Click | None):
    if found is None:
        return None
    link = found.link
    return (
        found.pk,
        found.occurred_at,
        found.visitor_id,
        (link.pk, link.code, link.participant.pk, link.participant.name, link.program.pk, link.program.name),
        (found.participant.pk, found.participant.name, found.program.pk, found.program.name),
    )


clicks = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=2),  # link
        st.sampled_from(VISITORS),
        st.integers(min_value=-3, max_value=3),  # days from now: ties happen
        st.booleans(),  # a bot
    ),
    max_size=8,
)


@pytest.mark.django_db
@database_examples(25)
@given(
    ours=clicks,
    theirs=clicks,
    wanted=st.sets(st.sampled_from(VISITORS), min_size=1),
    until_days=st.integers(min_value=-4, max_value=4),
)
def test_the_statement_finds_what_the_orm_query_found(ours, theirs, wanted, until_days):
    tenant, other = f.TenantFactory(), f.TenantFactory()
    for workspace, drawn in ((tenant, ours), (other, theirs)):
        links = _links(workspace)
        for index, visitor, days, bot in drawn:
            click(links[index], visitor_id=visitor, at=NOW + timedelta(days=days), is_bot=bot)
    cluster = IdentityCluster(visitor_ids=set(wanted))
    until = NOW + timedelta(days=until_days)

    found = latest_credited_click(tenant, cluster=cluster, until=until)

    assert _described(found) == _described(_orm_latest(tenant, cluster, until))
    assert found is None or found.tenant_id == tenant.pk
    assert _described(latest_credited_click(tenant.pk, cluster=cluster, until=until)) == _described(found)


def test_one_prepared_statement_loads_the_click_and_its_relations(world):
    links = _links(world.a)
    click(links[0], visitor_id="v-1", at=NOW - timedelta(days=2))
    latest = click(links[2], visitor_id="v-2", at=NOW - timedelta(days=1))
    click(links[1], visitor_id="v-2", at=NOW + timedelta(days=1))  # after the moment
    click(links[1], visitor_id="v-1", at=NOW, is_bot=True)  # a bot's

    with CaptureQueriesContext(connection) as captured:
        found = latest_credited_click(world.a, cluster=IdentityCluster(visitor_ids={"v-1", "v-2"}), until=NOW)
        # everything ``link_by_model`` asks of it is loaded: no further statement
        described = _described(found)

    assert found.pk == latest.pk and described[3][0] == links[2].pk
    sent = [sql for query in captured.captured_queries for sql in statements_sent(query["sql"])]
    assert len(sent) == 1 and 'FROM "referrals_click" c' in sent[0]
    assert any(query["sql"].lstrip().startswith(("PREPARE rp_", "EXECUTE rp_")) for query in captured.captured_queries)


def test_another_workspaces_clicks_of_the_same_visitor_never_count(world):
    click(_links(world.b)[0], visitor_id="v-1", at=NOW - timedelta(days=1))
    cluster = IdentityCluster(visitor_ids={"v-1"})
    assert latest_credited_click(world.a, cluster=cluster, until=NOW) is None
    mine = click(_links(world.a)[1], visitor_id="v-1", at=NOW - timedelta(days=5))
    assert latest_credited_click(world.a, cluster=cluster, until=NOW).pk == mine.pk
    assert latest_credited_click(world.a, cluster=IdentityCluster(), until=NOW) is None
