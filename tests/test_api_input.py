"""Issue 13, item 2: input the code can handle, errors in one shape, unknown parameters refused, PATCH of an
unchangeable field refused, Idempotency-Key on POSTs, safe ``next`` redirects. Each finding reproduced."""

from __future__ import annotations

import json

import pytest
import stripe
from django.urls import reverse

from programs.models import ProgramStatus
from referrals.models import ConversionEvent, Referral
from referrals.tests.builders import conversion_payload, program_for
from tests import factories as f


def _error(response, status: int) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()["error"]
    assert body["status"] == status and body["code"] and body["message"]
    return body


def _post(client, payload):
    return client.post("/api/v1/conversions", payload, format="json")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        pytest.param({"occurred_at": "0001-01-01T00:00:00Z"}, "occurred_at", id="year-one"),
        pytest.param({"occurred_at": "9999-12-31T23:59:59Z"}, "occurred_at", id="year-9999"),
        pytest.param({"occurred_at": "1999-12-31T23:59:59Z"}, "occurred_at", id="before-2000"),
        pytest.param({"currency": "ZZZ"}, "currency", id="not-iso-4217"),
        pytest.param({"amount_minor": 2**63}, "amount_minor", id="beyond-bigint"),
        pytest.param({"customer_external_id": "cus\u00000"}, "customer_external_id", id="nul-in-field"),
        pytest.param({"note": {"deep": "a\u0000b"}}, "note.deep", id="nul-in-stored-json"),
    ],
)
def test_conversion_input_the_code_cannot_handle_is_a_400_naming_the_field(world, overrides, field):
    response = _post(world.api(world.key_a), conversion_payload(**overrides))

    error = _error(response, 400)
    assert field in error["fields"], error
    assert field.split(".")[0] in error["message"]
    assert not ConversionEvent.objects.exists()


@pytest.mark.django_db
def test_deeply_nested_json_is_a_400_not_a_500(world):
    nested: dict = {"leaf": 1}
    for _ in range(40):
        nested = {"n": nested}
    very_deep = '{"a":' * 100_000 + "1" + "}" * 100_000

    shallow_enough = _post(world.api(world.key_a), conversion_payload(extra=nested))
    too_deep = world.api(world.key_a).post("/api/v1/conversions", very_deep, content_type="application/json")

    assert "Nested deeper" in json.dumps(_error(shallow_enough, 400)["fields"])
    _error(too_deep, 400)
    assert not ConversionEvent.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("limit", ["99999999999999999999", "0", "-1", "abc", "501"])
def test_a_limit_out_of_bounds_is_a_400_naming_it(world, limit):
    response = world.api(world.key_a).get(f"/api/v1/conversions?limit={limit}")

    assert "limit" in _error(response, 400)["fields"]


@pytest.mark.django_db
def test_an_offset_beyond_bigint_is_a_400_and_a_sane_page_still_works(world):
    client = world.api(world.key_a)

    assert "offset" in _error(client.get("/api/v1/referrals?offset=99999999999999999999"), 400)["fields"]
    assert client.get("/api/v1/referrals?limit=500&offset=0").status_code == 200


@pytest.mark.django_db
def test_an_id_filter_beyond_bigint_is_a_400(world):
    response = world.api(world.key_a).get("/api/v1/attributions?conversion=99999999999999999999")

    assert "conversion" in _error(response, 400)["fields"]


@pytest.mark.django_db
def test_superscript_digits_as_a_participant_id_on_leads_are_a_400(world):
    response = world.api(world.key_a).post(
        "/api/v1/leads",
        {"participant": "²³", "name": "Ann", "email": "ann@prospect.example", "company": "Prospect"},
        format="json",
    )

    assert "participant" in _error(response, 400)["fields"]
    assert not Referral.objects.exists()


@pytest.mark.django_db
def test_a_body_over_the_size_limit_is_a_413_in_the_json_error_shape(world, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
    body = json.dumps(conversion_payload(padding="x" * 3_000_000))

    response = world.api(world.key_a).post("/api/v1/conversions", body, content_type="application/json")

    assert _error(response, 413)["code"] == "too_large"
    assert not ConversionEvent.objects.exists()


@pytest.mark.django_db
def test_a_filter_a_list_does_not_support_is_refused_not_ignored(world):
    client = world.api(world.key_a)

    error = _error(client.get("/api/v1/attributions?program=1"), 400)

    assert "program" in error["fields"] and "conversion" in error["message"]
    assert client.get("/api/v1/attributions?conversion=1").status_code == 200


@pytest.mark.django_db
def test_patching_a_programs_status_is_refused_naming_the_field(world):
    program = f.ProgramFactory(tenant=world.a, status=ProgramStatus.DRAFT)

    response = world.api(world.key_a).patch(
        f"/api/v1/programs/{program.pk}", {"status": "active", "name": "Renamed"}, format="json"
    )

    error = _error(response, 400)
    assert "status" in error["fields"] and "/activate" in error["message"]
    program.refresh_from_db()
    assert program.status == ProgramStatus.DRAFT and program.name != "Renamed"


@pytest.mark.django_db
def test_a_stripe_connection_error_on_stripe_onboarding_is_a_502_in_the_error_shape(world, settings):
    f.StripeCredentialsFactory(tenant=world.a)
    participant = f.ParticipantFactory(program=f.ProgramFactory(tenant=world.a))
    settings.STRIPE_API_BASE = "http://127.0.0.1:9"  # nothing listens: a connection error
    settings.STRIPE_TIMEOUT_SECONDS = 2

    response = world.api(world.key_a).post(
        f"/api/v1/participants/{participant.pk}/stripe-onboarding",
        {"refresh_url": "https://tenant-a.example/refresh", "return_url": "https://tenant-a.example/done"},
        format="json",
    )

    error = _error(response, 502)
    assert error["code"] == "upstream_error" and error["message"].startswith("stripe:")
    assert issubclass(stripe.APIConnectionError, stripe.StripeError)


# --- Idempotency-Key ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_same_idempotency_key_and_body_answer_the_first_response_again(world):
    program = program_for(world.a)
    client = world.api(world.key_a)
    payload = {"program": program.pk, "external_id": "p-1", "name": "Ann", "email": "ann@partner.example"}

    first = client.post("/api/v1/participants", payload, format="json", HTTP_IDEMPOTENCY_KEY="key-1")
    again = client.post("/api/v1/participants", payload, format="json", HTTP_IDEMPOTENCY_KEY="key-1")
    without_key = client.post("/api/v1/participants", payload, format="json")

    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json() and again["Idempotent-Replayed"] == "true"
    assert without_key.status_code == 200  # no key: the endpoint's own upsert answers


@pytest.mark.django_db
def test_the_same_idempotency_key_with_another_body_is_a_409(world):
    program = program_for(world.a)
    client = world.api(world.key_a)
    payload = {"program": program.pk, "external_id": "p-1", "name": "Ann", "email": "ann@partner.example"}
    client.post("/api/v1/participants", payload, format="json", HTTP_IDEMPOTENCY_KEY="key-1")

    response = client.post(
        "/api/v1/participants", {**payload, "name": "Bob"}, format="json", HTTP_IDEMPOTENCY_KEY="key-1"
    )

    assert "Idempotency-Key" in _error(response, 409)["message"]
    assert program.participants.get().name == "Ann"


@pytest.mark.django_db
def test_a_failed_request_does_not_burn_its_idempotency_key_and_keys_are_per_tenant(world):
    program = program_for(world.a)
    client = world.api(world.key_a)
    payload = {"program": program.pk, "external_id": "p-1", "name": "Ann", "email": "ann@partner.example"}

    bad = client.post("/api/v1/participants", {**payload, "email": "nope"}, format="json", HTTP_IDEMPOTENCY_KEY="k")
    good = client.post("/api/v1/participants", payload, format="json", HTTP_IDEMPOTENCY_KEY="k")
    other_tenant = world.api(world.key_b).post(
        "/api/v1/participants", {**payload, "program": 0}, format="json", HTTP_IDEMPOTENCY_KEY="k"
    )

    assert (bad.status_code, good.status_code) == (400, 201)
    assert other_tenant.status_code == 400  # B's own answer, not A's replay nor a conflict


# --- safe redirects and the admin statement ----------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("target", "expected"),
    [
        pytest.param("foo", "/", id="bare-word"),
        pytest.param("//evil.example", "/", id="protocol-relative-off-site"),
        pytest.param("https://evil.example/x", "/", id="absolute-off-site"),
        pytest.param("/admin/", "/admin/", id="same-site"),
    ],
)
def test_the_workspace_switcher_redirects_only_within_the_site(world, client, target, expected):
    client.force_login(world.owner_a)

    response = client.post(reverse("tenant_switch", kwargs={"slug": "tenant-a"}), {"next": target})

    assert response.status_code == 302 and response["Location"] == expected


@pytest.mark.django_db
def test_the_admin_log_in_redirect_keeps_only_a_same_site_next(client):
    response = client.get("/admin/login/?next=//evil.example")

    assert response.status_code == 302 and "evil.example" not in response["Location"]


@pytest.mark.django_db
def test_an_admin_statement_ending_9999_12_31_is_a_form_error_not_a_500(world, client):
    participant = f.ParticipantFactory(program=f.ProgramFactory(tenant=world.a))
    client.force_login(world.owner_a)
    url = reverse("admin:rewards_statement")

    response = client.get(url, {"participant": participant.pk, "start": "2026-01-01", "end": "9999-12-31"})

    assert response.status_code == 200
    assert b"between 2000-01-01 and 2100-12-31" in response.content
