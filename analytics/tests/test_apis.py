"""Other-channel customers: JSON or CSV, every row validated before any is written, upsert by external id."""

from __future__ import annotations

import pytest

from analytics.models import OtherChannelCustomer

pytestmark = pytest.mark.django_db
URL = "/api/v1/analytics/other-customers"


def test_json_rows_are_created_then_updated_by_external_id(world):
    api = world.api(world.key_a)
    row = {"external_id": "c1", "channel": "paid_search", "lead_at": "2026-01-02T10:00:00Z", "deal_minor": 5000}

    assert api.post(URL, {"customers": [row]}, format="json").status_code == 200
    assert api.post(URL, {"customers": [{**row, "deal_minor": 7000}]}, format="json").status_code == 200

    saved = OtherChannelCustomer.objects.get(tenant=world.a, external_id="c1")
    assert saved.deal_minor == 7000 and saved.currency == world.a.default_currency
    assert not OtherChannelCustomer.objects.filter(tenant=world.b).exists()


def test_what_post_answers_is_what_the_schema_says(world, client):
    """POST answers how many rows it saved; the OpenAPI schema said it answered a page of rows (schemathesis found a
    valid batch whose answer violated it)."""
    import yaml

    api = world.api(world.key_a)
    row = {"external_id": "c1", "channel": "paid_search", "lead_at": "2026-01-02T10:00:00Z"}
    answer = api.post(URL, {"customers": [row, {**row, "external_id": "c2"}]}, format="json")

    schema = yaml.safe_load(client.get("/api/schema/").content)
    documented = schema["paths"][URL]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    component = schema["components"]["schemas"][documented["$ref"].rsplit("/", 1)[1]]
    assert answer.status_code == 200 and answer.json() == {"saved": 2}
    assert component["required"] == ["saved"] and set(component["properties"]) == {"saved"}


def test_a_csv_body_is_imported(world):
    api = world.api(world.key_a)
    body = (
        "external_id,channel,lead_at,converted_at,arr_minor\n"
        "c1,events,2026-01-02,2026-02-01,120000\n"
        "c2,outbound,2026-01-05,,\n"
    )

    response = api.generic("POST", URL, body, content_type="text/csv")

    assert response.status_code == 200 and response.json() == {"saved": 2}
    assert OtherChannelCustomer.objects.get(tenant=world.a, external_id="c1").arr_minor == 120_000


def test_one_bad_row_writes_nothing_and_names_the_field(world):
    api = world.api(world.key_a)
    good = {"external_id": "ok", "channel": "events", "lead_at": "2026-01-02T10:00:00Z"}
    bad = {"external_id": "bad", "channel": "events", "lead_at": "not a date"}

    response = api.post(URL, {"customers": [good, bad]}, format="json")

    assert response.status_code == 400 and "lead_at" in response.content.decode()
    assert not OtherChannelCustomer.objects.exists()
