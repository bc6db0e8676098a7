"""The marketer admin: tenant-scoped choices, roles, API keys shown once."""

from __future__ import annotations

import re

import pytest

from programs.models import Participant, Program
from referral_platform.tenancy.models import ApiKey

from .factories import ParticipantFactory, ProgramFactory, ReferralFactory, ReferralLinkFactory

pytestmark = pytest.mark.django_db


def _autocomplete(client, app_label, model_name, field_name, term) -> dict[str, str]:
    """{id: text} the admin's autocomplete JSON offers for ``term`` in ``app_label.model_name.field_name``."""
    response = client.get(
        "/admin/autocomplete/",
        {"app_label": app_label, "model_name": model_name, "field_name": field_name, "term": term},
    )
    assert response.status_code == 200, response.content
    return {row["id"]: row["text"] for row in response.json()["results"]}


def test_foreign_key_choices_offer_only_the_marketers_tenant(client, world):
    program_a = ProgramFactory(tenant=world.a, name="A-only program")
    program_b = ProgramFactory(tenant=world.b, name="B program")
    client.force_login(world.marketer_b)

    form = client.get("/admin/programs/participant/add/").content.decode()
    # The program picker is an autocomplete (issue 11): its choices come from the autocomplete view.
    offered = _autocomplete(client, "programs", "participant", "program", "program")

    assert "A-only program" not in form and 'data-ajax--url="/admin/autocomplete/"' in form
    assert str(program_b.pk) in offered and str(program_a.pk) not in offered


def test_posting_another_tenants_object_in_a_foreign_key_is_rejected(client, world):
    program_a = ProgramFactory(tenant=world.a)
    client.force_login(world.marketer_b)

    response = client.post(
        "/admin/programs/participant/add/",
        {"program": program_a.pk, "external_id": "x1", "name": "Sneaky", "email": "s@b.example", "status": "active"},
    )

    assert response.status_code == 200
    assert "Select a valid choice" in response.content.decode()
    assert not Participant.objects.filter(name="Sneaky").exists()


def test_marketer_creates_rows_in_their_own_tenant(client, world):
    program_b = ProgramFactory(tenant=world.b)
    client.force_login(world.marketer_b)

    response = client.post(
        "/admin/programs/participant/add/",
        {"program": program_b.pk, "external_id": "x2", "name": "Fine", "email": "f@b.example", "status": "active"},
    )

    assert response.status_code == 302
    assert Participant.objects.get(name="Fine").tenant == world.b


def test_list_filter_choices_are_scoped(client, world):
    ProgramFactory(tenant=world.a, name="Filter-leak A")
    ParticipantFactory(program=ProgramFactory(tenant=world.b, name="Filter B"))
    client.force_login(world.marketer_b)

    page = client.get("/admin/programs/participant/").content.decode()

    assert "Filter B" in page and "Filter-leak A" not in page


def test_viewer_can_look_but_not_change(client, world):
    program = ProgramFactory(tenant=world.a, name="Viewed")
    client.force_login(world.viewer_a)

    view = client.get(f"/admin/programs/program/{program.pk}/change/")
    change = client.post(f"/admin/programs/program/{program.pk}/change/", {"name": "Changed"})
    add = client.get("/admin/programs/program/add/")

    assert view.status_code == 200 and "Viewed" in view.content.decode()
    assert change.status_code == 403
    assert add.status_code == 403
    assert Program.objects.get(pk=program.pk).name == "Viewed"


def test_anonymous_admin_visit_goes_to_the_product_log_in(client):
    response = client.get("/admin/", follow=True)

    assert response.redirect_chain[-1][0].startswith("/accounts/login/")
    assert response.status_code == 200


def test_user_without_a_membership_is_refused_without_a_redirect_loop(client, world):
    from .factories import UserFactory

    client.force_login(UserFactory())

    response = client.get("/admin/", follow=True)

    assert response.status_code == 403
    assert "no admin access" in response.content.decode()


def test_api_key_created_in_the_admin_is_shown_once_and_stored_hashed(client, world):
    client.force_login(world.marketer_a)

    response = client.post("/admin/tenancy/apikey/add/", {"name": "CRM sync", "scope": "read_write"}, follow=True)

    page = response.content.decode()
    raw = re.search(r"rk_[0-9a-f]{8}_[A-Za-z0-9_\-]+", page).group(0)
    key = ApiKey.objects.get(name="CRM sync")
    assert key.tenant == world.a and raw.startswith(f"rk_{key.prefix}_")
    assert raw.split("_", 2)[2] not in key.secret_hash
    assert world.api(raw).get("/api/v1/me").json()["tenant"]["slug"] == world.a.slug
    again = client.get(f"/admin/tenancy/apikey/{key.pk}/change/").content.decode()
    assert raw not in again


def test_api_key_revoked_in_the_admin_stops_working(client, world):
    key = ApiKey.objects.get(tenant=world.a)
    client.force_login(world.owner_a)

    client.post(
        "/admin/tenancy/apikey/",
        {"action": "revoke_keys", "_selected_action": [key.pk]},
    )

    assert world.api(world.key_a).get("/api/v1/me").status_code == 401
    assert world.api(world.key_b).get("/api/v1/me").status_code == 200


@pytest.mark.parametrize(
    ("app_label", "model_name", "field_name", "term"),
    [
        ("programs", "participant", "program", "Shared"),
        ("referrals", "referral", "referrer", "shared"),
        ("referrals", "click", "link", "sharedcode"),
        ("rewards", "participantstripeprofile", "participant", "shared"),
    ],
)
def test_autocomplete_pickers_offer_only_the_marketers_tenant(client, world, app_label, model_name, field_name, term):
    """Long-list pickers are autocompletes; the same search term matches objects of both tenants, and the
    JSON for tenant B's marketer holds only B's (TenantScopedAdmin.get_queryset scopes the search)."""
    made = {}
    for name, tenant in (("a", world.a), ("b", world.b)):
        program = ProgramFactory(tenant=tenant, name=f"Shared program {name}")
        participant = ParticipantFactory(
            program=program, name=f"Shared person {name}", email=f"shared-{name}@x.example"
        )
        link = ReferralLinkFactory(participant=participant, code=f"sharedcode{name}")
        made[name] = {"program": program, "referrer": participant, "participant": participant, "link": link}
        ReferralFactory(referrer=participant)
    client.force_login(world.marketer_b)

    offered = _autocomplete(client, app_label, model_name, field_name, term)

    assert str(made["b"][field_name].pk) in offered
    assert str(made["a"][field_name].pk) not in offered
    assert not any(text.endswith(" a") or text.endswith("codea") for text in offered.values())


def test_autocomplete_refuses_a_visitor_without_an_admin_role(client, world):
    ProgramFactory(tenant=world.a, name="Hidden program")
    response = client.get(
        "/admin/autocomplete/",
        {"app_label": "programs", "model_name": "participant", "field_name": "program", "term": "Hidden"},
    )

    assert response.status_code in (302, 403) and b"Hidden program" not in response.content
