"""Row-level security, the second wall between tenants (issue 14, referral_platform/tenancy/rls.py).

The application's own role runs every test here (tests/app_role.py): not the owner, no BYPASSRLS.
"""

from __future__ import annotations

import importlib
import logging
import threading
import uuid
from types import SimpleNamespace

import pytest
from django.apps import apps
from django.db import DatabaseError, connection, connections, transaction
from django.test import override_settings
from django.urls import path
from django.utils import timezone
from rest_framework.decorators import api_view
from rest_framework.response import Response

from programs.models import Participant, Program
from referral_platform.celery import (
    CROSS_TENANT_TASKS,
    RLS_TENANT_HEADER,
    _rls_task_end,
    _rls_task_start,
    _rls_tenant_header,
    app,
)
from referral_platform.tenancy import rls
from referral_platform.tenancy.models import Tenant, TenantOwnedModel
from tests import factories as f
from tests.app_role import as_table_owner
from tests.isolation import ADMIN_FACTORIES

pytestmark = pytest.mark.django_db


def _tenant_owned_models():
    return [m for m in apps.get_models() if issubclass(m, TenantOwnedModel) and not m._meta.proxy]


def _public_tables() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {row[0] for row in cursor.fetchall()}


def _gaps() -> list[str]:
    """What the wall lacks: a tenant-owned table without RLS enabled, forced and the policy, or a table
    that is neither tenant-owned nor declared global."""
    status = rls.policy_status(connection)
    problems = [f"{t}: enabled={e} forced={fo} policy={p}" for t, (e, fo, p) in status.items() if not (e and fo and p)]
    for model in _tenant_owned_models():
        if model._meta.db_table not in status:
            problems.append(f"{model._meta.label}: tenant-owned model whose table has no tenant_id")
    for table in sorted(_public_tables() - set(status) - rls.GLOBAL_TABLES):
        problems.append(f"{table}: neither tenant-owned (tenant_id) nor listed in rls.GLOBAL_TABLES")
    return problems


def test_every_tenant_owned_table_has_rls_enabled_forced_and_the_policy():
    assert len(rls.policy_status(connection)) >= len(_tenant_owned_models()) > 30
    assert _gaps() == []


def test_a_new_tenant_owned_table_without_a_policy_fails_the_check_until_migrate_installs_it():
    with as_table_owner():
        with connection.cursor() as cursor:
            cursor.execute("CREATE TABLE rls_probe_new (id serial PRIMARY KEY, tenant_id bigint NOT NULL)")
        assert any(gap.startswith("rls_probe_new:") for gap in _gaps())
        # What post_migrate does after every migrate:
        assert rls.policy_install(connection) == ["rls_probe_new"]
        assert _gaps() == []


def test_a_new_table_that_is_not_tenant_owned_must_be_declared_global():
    with as_table_owner():
        with connection.cursor() as cursor:
            cursor.execute("CREATE TABLE rls_probe_global (id serial PRIMARY KEY)")
        assert "rls_probe_global: neither tenant-owned (tenant_id) nor listed in rls.GLOBAL_TABLES" in _gaps()


def _swapped(world):
    """The same world seen from tenant B (the harness's factories build "tenant A's" rows)."""
    return SimpleNamespace(
        **{
            **vars(world),
            "a": world.b,
            "b": world.a,
            "owner_a": world.owner_b,
            "owner_b": world.owner_a,
            "marketer_a": world.marketer_b,
            "marketer_b": world.marketer_a,
            "key_a": world.key_b,
            "key_b": world.key_a,
        }
    )


def _rows_beyond_the_admin(tenant) -> None:
    """One row of each tenant-owned model that has no admin (so no harness factory), for ``tenant``."""
    from analytics.models import DailyRollup, DailyTotal, EconomicsSettings, MonthlyReferrals, RollupFootprint
    from engagement.models import (
        Ask,
        EngagementSettings,
        Moment,
        Notification,
        ParticipantPreference,
        TypeformSettings,
    )
    from partners.models import DealExtension, TicketMessage
    from programs.models import EmailOptOut
    from referral_platform.tenancy.models import IdempotencyKey
    from rewards.models import StripeCharge

    now = timezone.now()
    tag = f"{tenant.pk}-{uuid.uuid4().hex[:8]}"
    program = f.ProgramFactory(tenant=tenant)
    participant = f.ParticipantFactory(tenant=tenant, program=program)
    IdempotencyKey.objects.create(tenant=tenant, key=tag, method="POST", path="/api/v1/events", request_hash="h")
    EmailOptOut.objects.create(tenant=tenant, email=f"{tag}@optout.example")
    StripeCharge.objects.create(tenant=tenant, stripe_charge_id=f"ch_{tag}")
    partner = f.PartnerFactory(tenant=tenant)
    f.PartnerUserFactory(partner=partner)
    f.PartnerEnrolmentFactory(partner=partner)
    deal = f.DealRegistrationFactory(partner=partner)
    DealExtension.objects.create(
        tenant=tenant, deal=deal, days=30, from_expires_at=now, to_expires_at=now, requested_by="test"
    )
    ticket = f.SupportTicketFactory(partner=partner)
    TicketMessage.objects.create(tenant=tenant, ticket=ticket, author_kind="partner", author="p", body="b")
    bucket = {"day": now.date(), "program": program, "channel": "direct", "kind": program.kind, "currency": "USD"}
    DailyRollup.objects.create(tenant=tenant, participant=participant, **bucket)
    DailyTotal.objects.create(tenant=tenant, **bucket)
    monthly = {key: value for key, value in bucket.items() if key != "day"}
    MonthlyReferrals.objects.create(
        tenant=tenant, participant=participant, month=now.date().replace(day=1), referrals=1, **monthly
    )
    RollupFootprint.objects.create(tenant=tenant, source="click", source_id=tenant.pk)
    EconomicsSettings.objects.create(tenant=tenant)
    EngagementSettings.objects.create(tenant=tenant)
    TypeformSettings.objects.create(tenant=tenant, secret="typeform-secret")
    moment = Moment.objects.create(
        tenant=tenant, trigger="nps", external_id=f"resp-{tag}", email="p@example.com", score=10, occurred_at=now
    )
    Ask.objects.create(
        tenant=tenant, program=program, moment=moment, trigger="nps", email="p@example.com", scheduled_for=now
    )
    Notification.objects.create(tenant=tenant, participant=participant, title="Hello")
    ParticipantPreference.objects.create(tenant=tenant, participant=participant)


@pytest.fixture
def two_tenants_everywhere(world):
    """Rows of both tenants in every tenant-owned table: the admin harness's factories, then the rest."""
    for make in ADMIN_FACTORIES.values():
        make(world)
        make(_swapped(world))
    _rows_beyond_the_admin(world.a)
    _rows_beyond_the_admin(world.b)
    with connection.cursor() as cursor:
        populated = []
        for table in rls.policy_status(connection):
            table_sql = connection.ops.quote_name(table)  # from the catalog
            cursor.execute(f"SELECT count(DISTINCT tenant_id) FROM {table_sql}")  # noqa: S608
            if cursor.fetchone()[0] >= 2:
                populated.append(table)
    return world, populated


def test_an_unfiltered_query_returns_only_the_bound_tenants_rows_for_every_tenant_owned_model(two_tenants_everywhere):
    world, populated = two_tenants_everywhere
    # Every tenant-owned model has rows of both tenants: each proves the policy on real rows.
    assert {m._meta.db_table for m in _tenant_owned_models()} <= set(populated)
    quote = connection.ops.quote_name
    checked = 0
    for model in _tenant_owned_models():
        table = model._meta.db_table
        with rls.bypass("test: expected counts"):
            own = model.objects.filter(tenant_id=world.a.pk).count()
            everything = model.objects.count()
        assert everything > own > 0, table
        with transaction.atomic(), rls.tenant(world.a.pk):
            # The query that forgot its tenant filter: through the ORM and in raw SQL.
            assert model.objects.count() == own, table
            assert not model.objects.exclude(tenant_id=world.a.pk).exists(), table
            with connection.cursor() as cursor:
                sql = f"SELECT count(*) FROM {quote(table)} WHERE tenant_id <> %s"  # noqa: S608 (catalog name)
                cursor.execute(sql, [world.a.pk])
                assert cursor.fetchone()[0] == 0, table
        with transaction.atomic(), rls.nothing():
            assert model.objects.count() == 0, table
        checked += 1
    assert checked == len(_tenant_owned_models())


def test_autocommit_statements_carry_the_tenant_in_their_own_transaction(transactional_db):
    a, b = f.TenantFactory(), f.TenantFactory()
    f.ProgramFactory(tenant=a)
    f.ProgramFactory(tenant=b)
    assert connection.get_autocommit()
    with rls.tenant(a.pk):
        assert set(Program.objects.values_list("tenant_id", flat=True)) == {a.pk}
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_setting('app.tenant_id', true)")
            assert cursor.fetchone()[0] == str(a.pk)
    with rls.tenant(b.pk):
        assert set(Program.objects.values_list("tenant_id", flat=True)) == {b.pk}
    # Nothing stays on the connection once the statement's transaction ended.
    with connection.cursor() as cursor, rls.nothing():
        cursor.execute("SELECT coalesce(current_setting('app.tenant_id', true), ''), count(*) FROM programs_program")
        assert cursor.fetchone() == ("", 0)


def test_the_setting_is_transaction_local_so_a_reused_connection_never_carries_it(transactional_db):
    a, b = f.TenantFactory(), f.TenantFactory()
    f.ProgramFactory(tenant=a)
    f.ProgramFactory(tenant=b)
    raw = connection.connection  # the same server connection throughout
    with transaction.atomic(), rls.tenant(a.pk):
        assert Program.objects.count() == 1
    assert connection.connection is raw
    with connection.cursor() as cursor:
        # A statement sent outside the tenancy layer (nothing prefixed) sees the session as it is now.
        cursor.cursor.execute(
            "SELECT coalesce(current_setting('app.tenant_id', true), ''), count(*) FROM programs_program"
        )
        assert cursor.cursor.fetchone() == ("", 0)


def test_a_savepoint_rollback_that_undoes_a_setting_is_followed_by_a_fresh_one():
    a, b = f.TenantFactory(), f.TenantFactory()
    f.ProgramFactory(tenant=a)
    f.ProgramFactory(tenant=b)
    with transaction.atomic(), rls.tenant(a.pk):
        assert Program.objects.get().tenant_id == a.pk
        with rls.tenant(b.pk):
            try:
                with transaction.atomic():
                    assert Program.objects.get().tenant_id == b.pk  # set inside the savepoint
                    raise RuntimeError("roll the savepoint back")
            except RuntimeError:
                pass
            assert Program.objects.get().tenant_id == b.pk  # applied again, not left at a's
        assert Program.objects.get().tenant_id == a.pk


def test_writing_another_tenants_row_is_refused_by_the_policy(world):
    program_b = f.ProgramFactory(tenant=world.b)
    with rls.tenant(world.a.pk):
        with pytest.raises(DatabaseError, match="row-level security"), transaction.atomic():
            Participant.objects.create(tenant=world.b, program=program_b, email="x@example.com", name="X")
        # Updates and deletes of B's rows touch nothing.
        assert Program.objects.filter(pk=program_b.pk).update(name="hijacked") == 0
        assert Program.objects.filter(pk=program_b.pk).delete()[0] == 0
    with rls.bypass("test: check"):
        assert Program.objects.get(pk=program_b.pk).name != "hijacked"


def test_the_application_role_cannot_bypass_by_being_the_owner_or_by_role_attributes():
    with connection.cursor() as cursor:
        cursor.execute("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
        assert cursor.fetchone() == (False, False)
        cursor.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner "
            "WHERE r.rolname = current_user AND c.relkind = 'r'"
        )
        assert cursor.fetchone()[0] == 0
        with pytest.raises(DatabaseError), transaction.atomic():
            cursor.execute("ALTER TABLE programs_program DISABLE ROW LEVEL SECURITY")


# --- the tenancy layer binds every request -----------------------------------------------------------


@api_view(["GET"])
def _forgetful_view(request):
    """A view with a bug: it counts programs without its tenant filter."""
    from referral_platform.tenancy.authentication import api_actor

    api_actor(request)
    return Response({"programs": Program.objects.count(), "state_tenant": rls.current_tenant_id()})


urlpatterns = [path("forgetful/", _forgetful_view)]


@override_settings(ROOT_URLCONF=__name__)
def test_over_http_a_view_that_forgot_its_filter_shows_only_the_callers_tenant(world, client):
    f.ProgramFactory(tenant=world.a)
    f.ProgramFactory(tenant=world.b)
    f.ProgramFactory(tenant=world.b)
    response = client.get("/forgetful/", HTTP_AUTHORIZATION=f"Bearer {world.key_a}")
    assert response.json() == {"programs": 1, "state_tenant": world.a.pk}
    response = client.get("/forgetful/", HTTP_AUTHORIZATION=f"Bearer {world.key_b}")
    assert response.json() == {"programs": 2, "state_tenant": world.b.pk}
    # The request's binding ended with it.
    assert rls.current() is not None and rls.current_tenant_id() is None


def test_a_members_session_binds_the_request_to_the_chosen_workspace(world, client):
    f.ProgramFactory(tenant=world.a, name="Alpha program rls")
    f.ProgramFactory(tenant=world.b, name="Beta program rls")
    client.force_login(world.marketer_a)
    response = client.get("/admin/programs/program/")
    assert response.status_code == 200
    assert b"Alpha program rls" in response.content and b"Beta program rls" not in response.content


def test_celery_tasks_run_bound_to_the_tenant_their_sender_was_bound_to(transactional_db, world):
    headers = {}
    with rls.tenant(world.a.pk):
        _rls_tenant_header(headers=headers)
    assert headers == {RLS_TENANT_HEADER: world.a.pk}
    unbound_headers = {}
    _rls_tenant_header(headers=unbound_headers)
    assert unbound_headers == {}

    f.ProgramFactory(tenant=world.a)
    f.ProgramFactory(tenant=world.b)
    seen = {}

    def worker():  # a worker thread starts with no state of its own, like a worker process
        task = SimpleNamespace(name="probe", request=SimpleNamespace(is_eager=False, **headers))
        _rls_task_start(task=task)
        try:
            with transaction.atomic():
                seen["programs"] = set(Program.objects.values_list("tenant_id", flat=True))
        finally:
            _rls_task_end(task=task)
            seen["after"] = rls.current()
            connections.close_all()

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen["programs"] == {world.a.pk}
    assert seen["after"] is rls.UNBOUND


def test_the_cross_tenant_path_is_explicit_and_logged(world, caplog):
    f.ProgramFactory(tenant=world.a)
    f.ProgramFactory(tenant=world.b)
    with (
        caplog.at_level(logging.INFO, logger="referral_platform.rls"),
        transaction.atomic(),
        rls.bypass("test: platform report"),
    ):
        assert Program.objects.count() == 2
    assert "rls bypass: test: platform report" in caplog.text
    assert Tenant.objects.count() >= 2  # the tenant registry is global (resolving slugs)


def test_the_truly_cross_tenant_tasks_take_the_audited_path_and_others_start_resolving(caplog):
    for module in ("referrals", "rewards", "partners", "engagement", "analytics"):
        importlib.import_module(f"{module}.tasks")
    assert set(CROSS_TENANT_TASKS) <= set(app.tasks), set(CROSS_TENANT_TASKS) - set(app.tasks)
    assert {"referrals.flush_clicks", "referral_platform.reconcile", "rewards.payouts_run"} <= set(CROSS_TENANT_TASKS)
    seen = {}

    def worker(name, headers):
        task = SimpleNamespace(name=name, request=SimpleNamespace(is_eager=False, **headers))
        _rls_task_start(task=task)
        seen[name] = rls.current()
        _rls_task_end(task=task)

    with caplog.at_level(logging.INFO, logger="referral_platform.rls"):
        for name, headers in [
            ("rewards.payouts_run", {RLS_TENANT_HEADER: 7}),  # cross-tenant whatever the sender was
            ("engagement.webhook_deliver", {}),
            ("rewards.settle_referral", {RLS_TENANT_HEADER: 7}),
        ]:
            thread = threading.Thread(target=worker, args=(name, headers))
            thread.start()
            thread.join()
    assert seen["rewards.payouts_run"].bypass and "payouts run" in seen["rewards.payouts_run"].reason
    assert "rls bypass: task rewards.payouts_run (payouts run)" in caplog.text
    assert seen["engagement.webhook_deliver"].reason == "resolving: task engagement.webhook_deliver"
    assert seen["rewards.settle_referral"] == rls.RlsState(tenant_id=7)


@pytest.mark.parametrize("header", ["7; DROP TABLE x", -3, True, 2.5, {"t": 1}])
def test_a_malformed_tenant_header_binds_nothing_and_the_task_starts_resolving(header, caplog):
    task = SimpleNamespace(name="engagement.webhook_deliver", request=SimpleNamespace(is_eager=False))
    setattr(task.request, RLS_TENANT_HEADER, header)
    seen = {}

    def worker():
        _rls_task_start(task=task)
        seen["state"] = rls.current()
        _rls_task_end(task=task)

    with caplog.at_level(logging.WARNING, logger="referral_platform.rls"):
        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
    assert seen["state"].tenant_id is None and seen["state"].reason == "resolving: task engagement.webhook_deliver"
    assert "malformed tenant header" in caplog.text
