"""API keys: Bearer authentication, JSON errors, revocation, and tenant scoping of the API."""

from __future__ import annotations

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from programs.models import Program
from referral_platform.tenancy.actors import system_actor
from referral_platform.tenancy.models import ApiKey
from referral_platform.tenancy.services import api_key_revoke

from .factories import ProgramFactory, make_api_key

pytestmark = pytest.mark.django_db


def test_api_without_a_key_is_401_json(world):
    response = world.api(None).get("/api/v1/programs")

    assert response.status_code == 401
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["error"]["status"] == 401
    assert "Bearer" in response["WWW-Authenticate"]


@pytest.mark.parametrize(
    "header",
    ["Bearer rk_nope_nope", "Bearer not-a-key", "Bearer", "Bearer a b"],
    ids=["unknown-key", "malformed-key", "missing-key", "too-many-parts"],
)
def test_api_with_a_bad_key_is_401_json(world, header):
    client = world.api(None)
    client.credentials(HTTP_AUTHORIZATION=header)

    response = client.get("/api/v1/programs")

    assert response.status_code == 401
    assert response.json()["error"]["code"] in {"authentication_failed", "not_authenticated"}


def test_revoked_key_is_401(world):
    issued = make_api_key(world.a, name="to revoke")
    assert world.api(issued.raw_key).get("/api/v1/programs").status_code == 200

    api_key_revoke(api_key=issued.api_key, actor=system_actor(world.a))

    response = world.api(issued.raw_key).get("/api/v1/programs")
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "Invalid or revoked API key."


def test_only_the_hash_of_the_secret_is_stored_and_last_use_is_recorded(world):
    issued = make_api_key(world.a, name="hashed")
    secret = issued.raw_key.split("_", 2)[2]
    stored = ApiKey.objects.get(pk=issued.api_key.pk)
    assert secret not in stored.secret_hash and stored.last_used_at is None

    world.api(issued.raw_key).get("/api/v1/me")

    stored.refresh_from_db()
    assert stored.last_used_at is not None and stored.last_used_at <= timezone.now()


def test_me_names_the_keys_tenant(world):
    response = world.api(world.key_a).get("/api/v1/me")

    assert response.status_code == 200
    assert response.json() == {
        "actor": "api_key",
        "tenant": {"slug": "tenant-a", "name": "Tenant A", "default_currency": "USD"},
    }


def test_tenant_b_key_gets_404_on_tenant_a_program_and_never_lists_it(world):
    program_a = ProgramFactory(tenant=world.a)
    program_b = ProgramFactory(tenant=world.b)

    detail = world.api(world.key_b).get(f"/api/v1/programs/{program_a.pk}")
    listing = world.api(world.key_b).get("/api/v1/programs")

    assert detail.status_code == 404
    assert detail.json()["error"]["code"] == "not_found"
    assert [row["id"] for row in listing.json()["results"]] == [program_b.pk]


def test_creating_a_program_with_bad_input_names_the_field_and_writes_nothing(world):
    before = Program.objects.count()

    response = world.api(world.key_a).post(
        "/api/v1/programs", {"name": "Spring", "kind": "customer", "landing_url": "not a url"}, format="json"
    )

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["message"].startswith("landing_url:")
    assert "landing_url" in error["fields"]
    assert Program.objects.count() == before


def test_landing_url_outside_the_allowed_domains_is_refused(world):
    response = world.api(world.key_a).post(
        "/api/v1/programs",
        {"name": "Spring", "kind": "customer", "landing_url": "https://evil.example/"},
        format="json",
    )

    assert response.status_code == 400
    assert "landing_url" in response.json()["error"]["fields"]
    assert not Program.objects.filter(name="Spring").exists()


def test_creating_a_program_on_an_allowed_domain_is_scoped_to_the_keys_tenant(world):
    response = world.api(world.key_a).post(
        "/api/v1/programs",
        {"name": "Spring", "kind": "partner", "landing_url": "https://www.tenant-a.example/join"},
        format="json",
    )

    assert response.status_code == 201, response.json()
    program = Program.objects.get(pk=response.json()["id"])
    assert program.tenant == world.a and program.currency == "USD"


def test_viewer_can_read_but_not_write_through_a_session(client, world):
    client.force_login(world.viewer_a)

    assert client.get("/api/v1/programs").status_code == 200
    response = client.post(
        "/api/v1/programs",
        {"name": "X", "kind": "customer", "landing_url": "https://tenant-a.example/"},
        content_type="application/json",
    )
    assert response.status_code == 403
    assert not Program.objects.filter(name="X").exists()


@pytest.mark.parametrize("debug", [False, True])
def test_unknown_api_route_is_json_404(world, settings, debug):
    settings.DEBUG = debug  # DEBUG's technical 404 page is HTML: an integrator trying `make run` gets JSON too

    for method in ("get", "post", "delete"):
        response = getattr(world.api(world.key_a), method)("/api/v1/no-such-thing/deeper")
        assert response.status_code == 404, method
        assert response["Content-Type"] == "application/json"
        assert response.json()["error"]["code"] == "not_found"
    anonymous = APIClient(enforce_csrf_checks=True)
    for method in ("get", "post"):  # no key and no CSRF token: still the API's 404, never a 403 page
        response = getattr(anonymous, method)("/api/v1/no-such-thing")
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_openapi_schema_and_offline_swagger_ui_are_served(client):
    schema = client.get("/api/schema/")
    docs = client.get("/api/docs/")

    assert schema.status_code == 200 and b"/api/v1/programs" in schema.content
    assert docs.status_code == 200
    assert b"swagger-ui" in docs.content and b"cdn" not in docs.content.lower()
