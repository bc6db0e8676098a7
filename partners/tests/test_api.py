"""The tenant-side API: account lookup, deals (a CRM moves them to won or lost), partners, conflicts."""

from __future__ import annotations

import pytest
from django.urls import reverse

from partners.models import DealRegistration
from partners.services import deal_register
from rewards.models import Reward

from .builders import enrolled_partner, partner_program

pytestmark = pytest.mark.django_db


@pytest.fixture
def deals(world):
    program = partner_program(world.a)
    quanta, _ = enrolled_partner(world.a, program, name="Quanta Partners")
    orbit, _ = enrolled_partner(world.a, program, name="Orbit Resellers")
    acme = deal_register(
        tenant=world.a, partner=quanta, program=program, company_name="Acme Inc.", domain="www.acme.io", actor="t",
        deal_value_minor=5_000_00,
    )  # fmt: skip
    second = deal_register(
        tenant=world.a, partner=orbit, program=program, company_name="ACME", domain="acme.io", actor="t"
    )
    return program, quanta, orbit, acme, second


@pytest.mark.parametrize("asked", ["acme.io", "https://sales.acme.io/x", "cfo@eu.acme.io", "WWW.ACME.IO"])
def test_account_lookup_names_the_protecting_partner(world, deals, asked):
    _program, quanta, _orbit, acme, _second = deals

    response = world.api(world.key_a).get(reverse("api:account-lookup"), {"domain": asked})

    body = response.json()
    assert response.status_code == 200
    assert (body["domain"], body["belongs_to_partner"], body["protected"]) == ("acme.io", True, True)
    assert body["registration"]["partner"] == {"id": quanta.pk, "name": "Quanta Partners", "type": "reseller"}
    assert body["registration"]["reference"] == acme.reference


def test_account_lookup_of_an_unregistered_account_and_of_bad_input(world, deals):
    api = world.api(world.key_a)

    free = api.get(reverse("api:account-lookup"), {"domain": "initech.com"}).json()
    missing = api.get(reverse("api:account-lookup"))
    mail = api.get(reverse("api:account-lookup"), {"domain": "someone@gmail.com"})

    assert free == {"domain": "initech.com", "belongs_to_partner": False, "protected": False, "registration": None}
    assert missing.status_code == 400 and missing.json()["error"]["fields"].keys() == {"domain"}
    assert mail.status_code == 400 and "domain" in mail.json()["error"]["message"]
    assert (
        world.api(world.key_b).get(reverse("api:account-lookup"), {"domain": "acme.io"}).json()["registration"] is None
    )


def test_deals_list_filters_and_detail(world, deals):
    _program, quanta, _orbit, acme, second = deals
    api = world.api(world.key_a)

    conflicts = api.get(reverse("api:deal-list"), {"status": "conflict"}).json()["results"]
    by_partner = api.get(reverse("api:deal-list"), {"partner": quanta.pk}).json()["results"]
    bad = api.get(reverse("api:deal-list"), {"status": "nope"})

    assert [d["id"] for d in conflicts] == [second.pk]
    assert [d["reference"] for d in by_partner] == [acme.reference]
    assert bad.status_code == 400 and "status" in bad.json()["error"]["fields"]
    assert api.get(reverse("api:deal-detail", args=[acme.pk])).json()["domain"] == "acme.io"


def test_a_crm_marks_a_deal_won_twice_and_the_commission_posts_once(world, deals):
    _program, _quanta, _orbit, acme, _second = deals
    api = world.api(world.key_a)
    url = reverse("api:deal-detail", args=[acme.pk])

    first = api.patch(url, {"stage": "won", "amount_minor": 4_000_00}, format="json")
    again = api.patch(url, {"stage": "won", "amount_minor": 4_000_00}, format="json")

    assert first.status_code == again.status_code == 200
    assert first.json()["status"] == "won" and first.json()["commission_reward"] == again.json()["commission_reward"]
    assert Reward.objects.get().amount_minor == 1_200_00


@pytest.mark.parametrize(
    ("payload", "field"),
    [({"stage": "signed"}, "stage"), ({"stage": "won", "amount_minor": -1}, "amount_minor"), ({}, "stage")],
)
def test_a_bad_stage_update_names_the_field_and_changes_nothing(world, deals, payload, field):
    _program, _quanta, _orbit, acme, _second = deals

    response = world.api(world.key_a).patch(reverse("api:deal-detail", args=[acme.pk]), payload, format="json")

    assert response.status_code == 400 and field in response.json()["error"]["fields"]
    acme.refresh_from_db()
    assert (acme.status, acme.stage) == ("approved", "registered") and not Reward.objects.exists()


def test_a_conflicting_deal_cannot_be_won(world, deals):
    *_, second = deals

    response = world.api(world.key_a).patch(
        reverse("api:deal-detail", args=[second.pk]), {"stage": "won"}, format="json"
    )

    assert response.status_code == 400 and "stage" in response.json()["error"]["fields"]
    assert DealRegistration.objects.get(pk=second.pk).status == "conflict"


def test_partners_and_conflicts_lists(world, deals):
    _program, quanta, _orbit, acme, second = deals
    api = world.api(world.key_a)

    partners = api.get(reverse("api:partner-list"), {"type": "reseller"}).json()["results"]
    detail = api.get(reverse("api:partner-detail", args=[quanta.pk])).json()
    conflicts = api.get(reverse("api:deal-conflict-list"), {"status": "open"}).json()["results"]

    assert {p["name"] for p in partners} == {"Quanta Partners", "Orbit Resellers"}
    assert detail["commission_bp"] == 3000 and len(detail["participants"]) == 1
    assert [(c["holder"], c["challenger"], c["match"], c["similarity"]) for c in conflicts] == [
        (acme.pk, second.pk, "domain", "1.000")
    ]


def test_the_new_routes_are_in_the_openapi_schema(world):
    schema = world.api(world.key_a).get(reverse("api-schema"), {"format": "json"}).json()

    for route in ("/api/v1/accounts/lookup", "/api/v1/deals", "/api/v1/deals/{id}", "/api/v1/partners",
                  "/api/v1/partners/{id}", "/api/v1/deal-conflicts"):  # fmt: skip
        assert route in schema["paths"], route
    assert "patch" in schema["paths"]["/api/v1/deals/{id}"]
