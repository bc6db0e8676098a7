"""A new referral's prepared statements read by key in the generic plans PostgreSQL keeps for them.

``execute_prepared`` prepares the pipeline's statements once per connection; after five executions
PostgreSQL may keep one generic plan for every value. A condition such as ``($3 <> '' AND col = $3) OR …``
cannot be split in such a plan: the fraud screen's generic plan read every referral of the workspace (or of
the program's 90-day window) through ``tenant_id`` with a filter, on every new referral, and the orphans'
UPDATE had no index for e-mails or visitor ids at all (issue 15). These tests seed a workspace large enough
that an index is worth reading, gather statistics as autovacuum would, force the generic plan and read what
its scans removed by filter (EXPLAIN ANALYZE, ``tests.plans``) — bounded by the rows a key matches, not by the
workspace.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from referral_platform.tenancy import rls
from referrals import fraud
from referrals.models import ConversionEvent, IdentityLink, Referral
from referrals.selectors import IdentityCluster
from referrals.services.signups import orphans_statement
from tests import factories as f
from tests.plans import analyze, indexes, prepared_run, removed

ROWS = 400  # of other people, in the program's window: what a scan by tenant or program alone would read
ORPHANS = 4_000
CANDIDATE_ROWS = 5_000  # other people's unattributed events: the planner reads a few hundred whole rather than by key
TABLES = {"referrals_referral", "referrals_conversionevent", "referrals_identitylink"}


def _removed(nodes: list[dict]) -> int:
    return removed(nodes, TABLES)


def _referrals(tenant, program, referrer, count: int, *, prefix: str, now) -> None:
    """``count`` referrals of other people and companies, a minute apart going back from ``now``."""
    Referral.objects.bulk_create(
        Referral(
            tenant=tenant,
            program=program,
            referrer=referrer,
            visitor_id=f"{prefix}v{n}",
            referred_email=f"{prefix}buyer{n}@customer{n}.example",
            referred_company=f"{prefix}Customer {n} Ltd",
            referred_external_id=f"{prefix}c{n}",
            created_at=now - timedelta(minutes=n),
        )
        for n in range(count)
    )


@pytest.fixture
def workspace(world):
    """A program with ROWS referrals of other people and companies in its window, as many identity links and
    conversion events (half of them orphans: unattributed, no referral) and ORPHANS more orphans, and the
    person we look for."""
    program = f.ProgramFactory(tenant=world.a)
    referrer = f.ParticipantFactory(program=program, email="owner@partner.example", external_id="cust-owner")
    now = timezone.now()
    _referrals(world.a, program, referrer, ROWS, prefix="", now=now)
    ConversionEvent.objects.bulk_create(
        ConversionEvent(
            tenant=world.a,
            external_event_id=f"e{n}",
            kind="payment" if n % 2 or n >= ROWS else "sign_up",
            status="unattributed" if n % 2 or n >= ROWS else "processed",
            email=f"payer{n}@customer{n}.example",
            visitor_id=f"pv{n}",
            customer_external_id=f"pc{n}",
            occurred_at=now,
        )
        for n in range(ROWS + ORPHANS)
    )
    IdentityLink.objects.bulk_create(
        IdentityLink(
            tenant=world.a, a_kind="email", a_value=f"payer{n}@customer{n}.example", b_kind="visitor", b_value=f"pv{n}"
        )
        for n in range(ROWS)
    )
    # The person: an orphan payment of theirs, the referrer's own sign-up and link (a self-referral's evidence).
    f.ConversionEventFactory(
        tenant=world.a,
        external_event_id="orphan",
        kind="payment",
        status="unattributed",
        email="new@buyer.example",
        customer_external_id="cust-new",
        occurred_at=now,
    )
    f.ConversionEventFactory(
        tenant=world.a, external_event_id="own", kind="sign_up", email="Owner@partner.example", visitor_id="own-v"
    )
    IdentityLink.objects.create(
        tenant=world.a, a_kind="customer", a_value="cust-owner", b_kind="visitor", b_value="own-v2", source="test"
    )
    analyze("referrals_referral", "referrals_conversionevent", "referrals_identitylink")
    return program, referrer


@pytest.mark.django_db
def test_the_screen_reads_by_key_in_its_generic_plan(world, workspace):
    program, referrer = workspace
    with rls.tenant(world.a.pk):
        referral = f.ReferralFactory(
            tenant=world.a,
            program=program,
            referrer=referrer,
            referred_email="cfo@customer7.example",  # the company of row 7: a duplicate-company candidate
            referred_company="Customer 7 Limited",
            visitor_id="new-v",
        )
        policy = fraud.policy_for_program(program)
        params = {**fraud._own_visitors_params(referral), **fraud._velocity_and_company_params(referral, policy)}
        generic, scans = prepared_run(fraud._SCREEN_SQL, params, mode="force_generic_plan")
        custom, _ = prepared_run(fraud._SCREEN_SQL, params, mode="force_custom_plan")
    assert generic == custom
    found = {(row[0], row[2]) for row in generic}
    assert {(1, "own-v"), (2, "own-v2")} <= found  # the referrer's own visitors, by mailbox and by customer id
    assert any(row[0] == 4 for row in generic)  # the earlier referral of the same company
    # The referrer's velocity count: the referrals of the hour (rows 0-59, a minute apart) and this one.
    assert next(row[13] for row in generic if row[0] == 3) == 61
    # Every read of the three tables is by key, not by workspace or program: the velocity count reads the
    # referrer's referrals of the hour on its index (no filter), the rest remove at most a handful each.
    assert scans and _removed(scans) <= 10, json.dumps(scans, indent=1)[:4000]


@pytest.mark.django_db
def test_the_orphans_update_reads_by_identifier_in_its_generic_plan(world, workspace):
    cluster = IdentityCluster(emails={"new@buyer.example"}, customer_ids={"cust-new"}, visitor_ids={"new-v"})
    with rls.tenant(world.a.pk):
        sql, params = orphans_statement(tenant_id=world.a.pk, cluster=cluster, referral_id=1)
        rows, scans = prepared_run(sql, params, mode="force_generic_plan")
        orphan = ConversionEvent.objects.get(external_event_id="orphan")
    assert [pk for (pk,) in rows] == [orphan.pk]
    wanted = {f"conversion_orphan_{name}_idx" for name in ("customer", "email", "visitor")}
    assert indexes(scans) == wanted, json.dumps(scans, indent=1)
    assert _removed(scans) <= 2, scans


@pytest.mark.django_db
def test_another_workspace_s_orphans_are_not_taken(world, workspace):
    """The same identifiers in another workspace: its orphan stays as it is."""
    f.ConversionEventFactory(
        tenant=world.b,
        external_event_id="orphan-b",
        kind="payment",
        status="unattributed",
        email="new@buyer.example",
        customer_external_id="cust-new",
    )
    cluster = IdentityCluster(emails={"new@buyer.example"}, customer_ids={"cust-new"})
    with rls.tenant(world.a.pk):
        sql, params = orphans_statement(tenant_id=world.a.pk, cluster=cluster, referral_id=1)
        rows, _ = prepared_run(sql, params, mode="force_generic_plan")
    with rls.bypass("test"):
        other = ConversionEvent.objects.get(external_event_id="orphan-b")
    assert other.pk not in {pk for (pk,) in rows}
    assert len(rows) == 1


@pytest.mark.django_db
def test_the_referral_candidates_read_by_identifier_in_their_generic_plan(world, workspace, monkeypatch):
    """A person's referral candidates (``_referral_candidates``: any of their identifiers, oldest first, LIMIT 50)
    are looked up by identifier, not by walking the program's referrals in time order until enough match."""
    from referrals import selectors

    program, referrer = workspace
    # A program of some size: with a few hundred rows, reading the workspace's referrals whole is cheaper for
    # the planner than ten index descents per identifier (its guess at an array parameter's length).
    _referrals(world.a, program, referrer, CANDIDATE_ROWS, prefix="more-", now=timezone.now())
    analyze("referrals_referral")
    sent = []

    def record(cursor, sql, params):
        sent.append((sql, params))
        cursor.execute(sql, params)

    monkeypatch.setattr(selectors, "execute_prepared", record)
    cluster = IdentityCluster(emails={"buyer7@customer7.example"}, customer_ids={"c9"}, visitor_ids={"nobody"})
    with rls.tenant(world.a.pk):
        found = selectors._referral_candidates(
            world.a,
            program,
            [("referred_email", cluster.emails), ("referred_external_id", cluster.customer_ids)],
            touched=cluster,
        )
        rows, nodes = prepared_run(*sent[0], mode="force_generic_plan")
    assert sorted(referral.referred_external_id for referral in found) == ["c7", "c9"]
    assert len(rows) == 2
    assert _removed(nodes) <= 10, json.dumps(nodes, indent=1)[:4000]
