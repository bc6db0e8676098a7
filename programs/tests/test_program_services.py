"""Program configuration, status transitions and versioned rules."""

from __future__ import annotations

import threading

import pytest
from django.core.exceptions import ValidationError
from django.db import DatabaseError, IntegrityError, connection, transaction

from programs import selectors, services
from programs.models import Program, ProgramStatus, ProgramVersion
from programs.rules import example_rules
from referral_platform.tenancy.actors import system_actor
from referral_platform.tenancy.models import AuditEvent
from tests import factories as f

pytestmark = pytest.mark.django_db


def create(world, **overrides):
    values = {
        "tenant": world.a,
        "actor": system_actor(world.a),
        "name": "Customer referrals",
        "kind": "customer",
        "landing_url": "https://tenant-a.example/signup",
    }
    return services.program_create(**{**values, **overrides})


def audit(obj, action):
    return AuditEvent.objects.filter(object_id=str(obj.pk), action=action)


# --- create / update ---------------------------------------------------------------------------
def test_create_makes_a_draft_with_version_one_from_its_rules(world):
    program = create(world, rules=example_rules("USD"), access="gated", attribution_model="time_decay")

    version = selectors.program_latest_version(program)
    assert program.status == ProgramStatus.DRAFT
    assert (program.access, program.attribution_model, program.currency) == ("gated", "time_decay", "USD")
    assert version.number == 1
    assert version.rules == {**example_rules("USD"), **services.program_rules_snapshot(program=program)}
    assert version.rules["attribution_model"] == "time_decay"
    assert audit(program, "program.created").count() == 1
    assert audit(program, "program.rules_changed").get().to_state == "v1"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"landing_url": "https://evil.example/"}, "landing_url"),
        ({"landing_url": "javascript:alert(1)"}, "landing_url"),
        ({"name": "  "}, "name"),
        ({"kind": "pyramid"}, "kind"),
        ({"access": "secret"}, "access"),
        ({"attribution_model": "random"}, "attribution_model"),
        ({"cookie_window_days": 0}, "cookie_window_days"),
        ({"cookie_window_days": 400}, "cookie_window_days"),
        ({"time_decay_half_life_days": 0}, "time_decay_half_life_days"),
        ({"hold_days": -1}, "hold_days"),
        ({"auto_approve_limit_minor": -100}, "auto_approve_limit_minor"),
        ({"currency": "usd"}, "currency"),
        ({"slug": "Has Spaces"}, "slug"),
        ({"rules": {"schema_version": 1}}, "rules.currency"),
        ({"rules": {**example_rules("USD"), "currency": "EUR"}}, "rules.currency"),
        (
            {"rules": {**example_rules("USD"), "referrer": [{"kind": "percent_of_revenue", "percent_bp": 0}]}},
            "rules.referrer[0].percent_bp",
        ),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_bad_program_input_names_the_field_and_writes_nothing(world, overrides, field):
    with pytest.raises(ValidationError) as caught:
        create(world, **overrides)

    assert field in caught.value.message_dict
    assert not Program.objects.exists()
    assert not ProgramVersion.objects.exists()
    assert not AuditEvent.objects.filter(action__startswith="program.").exists()


def test_slug_is_unique_per_tenant_only(world):
    create(world, slug="refer")
    with pytest.raises(ValidationError) as caught:
        create(world, slug="refer")
    assert "slug" in caught.value.message_dict

    other = services.program_create(
        tenant=world.b,
        actor=system_actor(world.b),
        name="B",
        kind="customer",
        landing_url="https://tenant-b.example/",
        slug="refer",
    )
    assert other.slug == "refer"


def test_update_changes_only_given_fields_and_audits_them(world):
    program = create(world)

    services.program_update(program=program, actor=system_actor(world.a), cookie_window_days=30, hold_days=14)

    program.refresh_from_db()
    assert (program.cookie_window_days, program.hold_days) == (30, 14)
    assert audit(program, "program.updated").get().data == {
        "changed": {"cookie_window_days": ["90", "30"], "hold_days": ["30", "14"]}
    }


def test_update_refuses_a_landing_url_off_the_allowed_domains(world):
    program = create(world)
    with pytest.raises(ValidationError) as caught:
        services.program_update(program=program, actor=system_actor(world.a), landing_url="https://other.example/x")
    program.refresh_from_db()
    assert "landing_url" in caught.value.message_dict
    assert program.landing_url == "https://tenant-a.example/signup"


def test_currency_changes_in_draft_reissue_the_rules_and_are_refused_once_live(world):
    program = create(world, rules=example_rules("USD"))
    actor = system_actor(world.a)

    services.program_update(program=program, actor=actor, currency="EUR")

    version = selectors.program_latest_version(program)
    assert (version.number, version.rules["currency"]) == (2, "EUR")
    program.refresh_from_db()
    services.program_activate(program=program, actor=actor)
    with pytest.raises(ValidationError) as caught:
        services.program_update(program=program, actor=actor, currency="GBP")
    assert "currency" in caught.value.message_dict
    program.refresh_from_db()
    assert program.currency == "EUR"


# --- status transitions ------------------------------------------------------------------------
def test_every_status_move_follows_the_map_and_leaves_an_audit_row(world):
    program = create(world, rules=example_rules("USD"))
    actor = system_actor(world.a)

    services.program_activate(program=program, actor=actor, reason="launch")
    services.program_pause(program=program, actor=actor)
    services.program_activate(program=program, actor=actor)
    services.program_archive(program=program, actor=actor, reason="season over")

    moves = list(
        AuditEvent.objects.filter(
            object_id=str(program.pk), action__in=["program.activated", "program.paused", "program.archived"]
        )
        .order_by("pk")
        .values_list("from_state", "to_state", "reason")
    )
    assert moves == [
        ("draft", "active", "launch"),
        ("active", "paused", ""),
        ("paused", "active", ""),
        ("active", "archived", "season over"),
    ]


@pytest.mark.parametrize(
    ("start", "service"),
    [
        ("draft", services.program_pause),
        ("archived", services.program_activate),
        ("archived", services.program_pause),
        ("archived", services.program_archive),
        ("paused", services.program_pause),
        ("active", services.program_activate),
    ],
    ids=lambda value: value if isinstance(value, str) else value.__name__,
)
def test_illegal_status_moves_are_refused_without_an_audit_row(world, start, service):
    program = f.ProgramFactory(tenant=world.a, status=start)
    f.ProgramVersionFactory(program=program)

    with pytest.raises(ValidationError) as caught:
        service(program=program, actor=system_actor(world.a))

    program.refresh_from_db()
    assert "status" in caught.value.message_dict
    assert program.status == start
    assert not AuditEvent.objects.filter(object_type="programs.program", object_id=str(program.pk)).exists()


def test_a_program_without_rules_cannot_go_live(world):
    program = create(world)
    with pytest.raises(ValidationError) as caught:
        services.program_activate(program=program, actor=system_actor(world.a))
    program.refresh_from_db()
    assert "rules" in caught.value.message_dict and program.status == ProgramStatus.DRAFT


# --- versioned rules ---------------------------------------------------------------------------
def _rules(amount):
    return {**example_rules("USD"), "referrer": [{"kind": "flat_per_conversion", "amount_minor": amount}]}


def test_changing_rules_creates_the_next_version_and_the_highest_is_current(world):
    program = create(world, rules=_rules(5_000))
    actor = system_actor(world.a)

    second = services.program_rules_change(program=program, actor=actor, rules=_rules(7_500), note="bigger")
    unchanged = services.program_rules_change(program=program, actor=actor, rules=_rules(7_500))

    assert second.created and second.version.number == 2 and second.version.note == "bigger"
    assert not unchanged.created and unchanged.version == second.version
    assert selectors.program_latest_version(program) == second.version
    assert list(program.versions.order_by("number").values_list("number", flat=True)) == [1, 2]
    assert ProgramVersion.objects.get(program=program, number=1).rules["referrer"][0]["amount_minor"] == 5_000


def test_a_rule_change_never_changes_the_version_of_existing_referrals(world):
    program = create(world, rules=_rules(5_000))
    v1 = selectors.program_latest_version(program)
    participant = f.ParticipantFactory(program=program)
    old_referral = f.ReferralFactory(referrer=participant, rule_version=v1)

    v2 = services.program_rules_change(program=program, actor=system_actor(world.a), rules=_rules(9_000)).version
    new_referral = f.ReferralFactory(referrer=participant, rule_version=selectors.program_latest_version(program))

    old_referral.refresh_from_db()
    assert old_referral.rule_version == v1
    assert new_referral.rule_version == v2
    assert old_referral.rule_version.rules["referrer"][0]["amount_minor"] == 5_000


def test_invalid_rules_name_the_field_and_create_no_version(world):
    program = create(world, rules=_rules(5_000))
    with pytest.raises(ValidationError) as caught:
        services.program_rules_change(
            program=program, actor=system_actor(world.a), rules={**_rules(1), "caps": {"max_bill_discount_bp": 20_000}}
        )
    assert "rules.caps.max_bill_discount_bp" in caught.value.message_dict
    assert program.versions.count() == 1


def test_archived_programs_rules_are_frozen(world):
    program = f.ProgramFactory(tenant=world.a, status=ProgramStatus.ARCHIVED)
    with pytest.raises(ValidationError):
        services.program_rules_change(program=program, actor=system_actor(world.a), rules=_rules(1))
    assert not program.versions.exists()


def test_a_saved_version_cannot_be_changed_through_the_orm(world):
    version = f.ProgramVersionFactory(program=f.ProgramFactory(tenant=world.a))
    version.rules = _rules(1)
    with pytest.raises(ValueError, match="immutable"):
        version.save()


def test_the_database_refuses_to_update_a_version(world):
    version = f.ProgramVersionFactory(program=f.ProgramFactory(tenant=world.a))
    original = version.rules

    with pytest.raises(IntegrityError, match="immutable"), transaction.atomic():
        ProgramVersion.objects.filter(pk=version.pk).update(rules=_rules(1))
    with pytest.raises(DatabaseError, match="immutable"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE programs_programversion SET note = 'tampered' WHERE id = %s", [version.pk])

    version.refresh_from_db()
    assert version.rules == original and version.note == ""


@pytest.mark.django_db(transaction=True)
def test_concurrent_rule_changes_get_distinct_consecutive_numbers(world):
    program = create(world, rules=_rules(1))
    actor = system_actor(world.a)
    barrier = threading.Barrier(6)
    errors = []

    def change(amount):
        from django.db import connection as thread_connection

        try:
            barrier.wait()
            services.program_rules_change(program=program, actor=actor, rules=_rules(amount))
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            thread_connection.close()

    threads = [threading.Thread(target=change, args=(amount,)) for amount in range(100, 106)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert sorted(program.versions.values_list("number", flat=True)) == [1, 2, 3, 4, 5, 6, 7]


def test_program_latest_version_is_none_without_rules_and_scoped_to_the_program(world):
    program = f.ProgramFactory(tenant=world.a)
    f.ProgramVersionFactory(program=f.ProgramFactory(tenant=world.a))
    assert selectors.program_latest_version(program) is None


# --- judging settings live in the versions too -------------------------------------------------
def test_changing_a_judging_setting_issues_a_version_and_old_referrals_keep_their_settings(world):
    program = create(world, rules=_rules(5_000), cookie_window_days=90)
    v1 = selectors.program_latest_version(program)
    referral = f.ReferralFactory(referrer=f.ParticipantFactory(program=program), rule_version=v1)

    services.program_update(program=program, actor=system_actor(world.a), cookie_window_days=30, name="Renamed")

    v2 = selectors.program_latest_version(program)
    referral.refresh_from_db()
    assert v2.number == 2 and v2.note == "Settings changed: cookie_window_days"
    assert v2.rules["referrer"] == v1.rules["referrer"]
    assert services.judging_rules(program=program, version=referral.rule_version)["cookie_window_days"] == 90
    assert services.judging_rules(program=program, version=v2)["cookie_window_days"] == 30
    assert referral.rule_version == v1


def test_a_change_of_name_alone_issues_no_version(world):
    program = create(world, rules=_rules(5_000))
    services.program_update(program=program, actor=system_actor(world.a), name="Renamed", description="Hi")
    assert program.versions.count() == 1


def test_the_first_version_made_for_a_referral_holds_settings_and_no_rewards(world):
    program = create(world, attribution_model="linear")

    version = services.program_current_version(program=program)

    assert version.number == 1
    assert version.rules["attribution_model"] == "linear"
    assert (version.rules["referrer"], version.rules["referred"]) == ([], [])
    with pytest.raises(ValidationError) as caught:
        services.program_activate(program=program, actor=system_actor(world.a))
    assert "rules" in caught.value.message_dict
    assert (
        services.program_rules_change(program=program, actor=system_actor(world.a), rules=_rules(1)).version.number == 2
    )


def test_terms_of_an_old_version_state_the_settings_of_that_version(world):
    from programs.terms import render_terms

    program = create(world, rules=_rules(5_000), cookie_window_days=90)
    v1 = selectors.program_latest_version(program)
    services.program_update(program=program, actor=system_actor(world.a), cookie_window_days=30)
    program.refresh_from_db()

    old_terms = render_terms(program, v1).text
    new_terms = render_terms(program, selectors.program_latest_version(program)).text

    assert "within 90 days" in old_terms and "within 30 days" in new_terms


def test_an_unreadable_stored_version_is_reported_not_crashed_on(world):
    from programs.terms import render_terms

    program = f.ProgramFactory(tenant=world.a)
    legacy = f.ProgramVersionFactory(program=program, number=1, rules={"attribution_model": "first_touch"})

    terms = render_terms(program, legacy)

    assert terms.sections == () and "cannot be shown" in terms.notice


# --- settings and rules in one step (the admin's save, the API's PATCH) ------------------------
def test_settings_and_rules_changed_together_make_one_version(world):
    program = create(world, rules=_rules(5_000), hold_days=30)

    configured = services.program_configure(
        program=program, actor=system_actor(world.a), changes={"hold_days": 14, "name": "Renamed"}, rules=_rules(9_900)
    )

    assert configured.rules_change.created and configured.program.hold_days == 14
    assert list(program.versions.order_by("number").values_list("number", "note")) == [
        (1, "Initial rules"),
        (2, "Settings changed: hold_days"),
    ]
    v2 = selectors.program_latest_version(program)
    assert v2.rules["hold_days"] == 14 and v2.rules["referrer"][0]["amount_minor"] == 9_900
    assert Program.objects.get(pk=program.pk).name == "Renamed"


def test_a_note_given_with_the_rules_is_the_versions_note(world):
    program = create(world, rules=_rules(5_000))

    services.program_configure(
        program=program, actor=system_actor(world.a), changes={"cookie_window_days": 30}, rules=_rules(5_000), note="Q3"
    )

    assert selectors.program_latest_version(program).note == "Q3" and program.versions.count() == 2


def test_without_rules_configure_is_an_update_and_a_judging_setting_still_makes_a_version(world):
    program = create(world, rules=_rules(5_000))

    configured = services.program_configure(program=program, actor=system_actor(world.a), changes={"hold_days": 7})

    assert configured.rules_change is None
    assert selectors.program_latest_version(program).note == "Settings changed: hold_days"


def test_bad_rules_given_with_settings_write_nothing(world):
    program = create(world, rules=_rules(5_000), hold_days=30)
    audit_rows = AuditEvent.objects.count()

    with pytest.raises(ValidationError) as caught:
        services.program_configure(
            program=program,
            actor=system_actor(world.a),
            changes={"hold_days": 14},
            rules={**_rules(1), "referred": [{"kind": "gift"}]},
        )

    assert "rules.referred[0].gift" in caught.value.message_dict
    assert Program.objects.get(pk=program.pk).hold_days == 30
    assert program.versions.count() == 1 and AuditEvent.objects.count() == audit_rows
