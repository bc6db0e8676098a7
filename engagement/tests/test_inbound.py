"""NPS responses from a CSV import and from Typeform's webhook; trigger events; all stored raw first."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection

from engagement.models import Ask, Moment, MomentOutcome, NpsImport, TypeformSettings

from .helpers import nps_program

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "typeform-secret-of-a"


def typeform_body(response_id="tf-1", score=10, email="tia@customer.example"):
    return json.dumps(
        {
            "event_id": "01H",
            "event_type": "form_response",
            "form_response": {
                "form_id": "abc",
                "token": response_id,
                "submitted_at": "2026-11-27T09:00:00Z",
                "hidden": {"customer_id": "cust-tia", "email": email, "name": "Tia"},
                "answers": [
                    {"type": "number", "number": score, "field": {"id": "f1", "type": "opinion_scale", "ref": "nps"}},
                    {"type": "text", "text": "Great support", "field": {"id": "f2", "type": "long_text", "ref": "why"}},
                ],
            },
        }
    ).encode()


def signature(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def test_a_signed_typeform_promoter_response_is_stored_raw_and_invited(world, client, smtp_inbox):
    nps_program(world.a)
    TypeformSettings.objects.create(tenant=world.a, secret=SECRET, score_field_ref="nps")
    body = typeform_body()

    response = client.post(
        "/webhooks/typeform/tenant-a/", body, content_type="application/json", HTTP_TYPEFORM_SIGNATURE=signature(body)
    )

    assert response.status_code == 200, response.content
    moment = Moment.objects.get()
    assert (moment.source, moment.score, moment.comment, moment.external_id) == (
        "typeform",
        10,
        "Great support",
        "tf-1",
    )
    assert moment.raw["form_response"]["token"] == "tf-1" and moment.outcome == MomentOutcome.ASKED
    assert len(smtp_inbox.to("tia@customer.example")) == 1


def test_a_typeform_response_signed_for_tenant_a_is_refused_on_tenant_b(world, client):
    TypeformSettings.objects.create(tenant=world.a, secret=SECRET)
    TypeformSettings.objects.create(tenant=world.b, secret="typeform-secret-of-b")
    body = typeform_body()

    for slug, sig in (("tenant-b", signature(body)), ("tenant-a", signature(body, "wrong")), ("nobody", "")):
        response = client.post(
            f"/webhooks/typeform/{slug}/", body, content_type="application/json", HTTP_TYPEFORM_SIGNATURE=sig
        )
        assert response.status_code == 400
    assert not Moment.objects.exists()


def test_a_typeform_payload_without_a_score_is_a_400_naming_it(world, client):
    TypeformSettings.objects.create(tenant=world.a, secret=SECRET, score_field_ref="nps")
    body = typeform_body(score=None)

    response = client.post(
        "/webhooks/typeform/tenant-a/", body, content_type="application/json", HTTP_TYPEFORM_SIGNATURE=signature(body)
    )

    assert response.status_code == 400 and "score" in response.json()["error"]["message"]
    assert not Moment.objects.exists()


def test_a_csv_import_reports_progress_and_per_row_errors(world, smtp_inbox):
    nps_program(world.a)
    csv = (
        "response_id,customer_external_id,email,score,answered_at,comment\n"
        "r1,c1,one@customer.example,10,2026-11-20T10:00:00Z,great\n"
        "r2,c2,two@customer.example,4,2026-11-20T10:00:00Z,meh\n"
        "r3,c3,not-an-email,9,2026-11-20T10:00:00Z,\n"
        "r4,c4,four@customer.example,12,2026-11-20T10:00:00Z,\n"
    )
    upload = SimpleUploadedFile("nps.csv", csv.encode(), content_type="text/csv")

    response = world.api(world.key_a).post("/api/v1/nps-imports", {"file": upload}, format="multipart")

    assert response.status_code == 201, response.content
    detail = world.api(world.key_a).get(f"/api/v1/nps-imports/{response.json()['id']}").json()
    assert (detail["status"], detail["percent_done"], detail["total_rows"]) == ("done", 100, 4)
    assert (detail["created_count"], detail["error_count"]) == (2, 2)
    assert [(error["line"], error["field"]) for error in detail["errors"]] == [(4, "email"), (5, "score")]
    assert len(smtp_inbox.messages) == 1 and Ask.objects.count() == 1


def test_a_csv_without_the_required_columns_is_refused_and_nothing_written(world):
    upload = SimpleUploadedFile("nps.csv", b"email,score\na@b.example,10\n", content_type="text/csv")

    response = world.api(world.key_a).post("/api/v1/nps-imports", {"file": upload}, format="multipart")

    assert response.status_code == 400 and "file" in response.json()["error"]["fields"]
    assert not NpsImport.objects.exists() and not Moment.objects.exists()


@pytest.mark.parametrize(
    "change, field",
    [({"type": "birthday"}, "type"), ({"occurred_at": ""}, "occurred_at"), ({"email": "x"}, "email")],
    ids=["unknown-type", "no-time", "bad-email"],
)
def test_bad_events_are_a_400_naming_the_field_and_nothing_is_written(world, change, field):
    payload = {
        "event_id": "e1",
        "type": "renewal",
        "customer_external_id": "c1",
        "email": "c@customer.example",
        "occurred_at": "2026-11-27T10:00:00Z",
        **change,
    }

    response = world.api(world.key_a).post("/api/v1/events", payload, format="json")

    assert response.status_code == 400 and field in response.json()["error"]["fields"]
    assert not Moment.objects.exists()


def test_a_usage_milestone_with_a_policy_invites_once(world, smtp_inbox):
    from engagement.models import TriggerPolicy
    from tests import factories as f

    program = f.ProgramVersionFactory(program=f.ProgramFactory(tenant=world.a)).program
    TriggerPolicy.objects.create(tenant=world.a, program=program, trigger="usage_milestone", delay_minutes=0)
    payload = {
        "event_id": "m1",
        "type": "usage_milestone",
        "customer_external_id": "c1",
        "email": "mia@customer.example",
        "occurred_at": "2026-11-27T10:00:00Z",
    }

    first = world.api(world.key_a).post("/api/v1/events", payload, format="json")
    again = world.api(world.key_a).post("/api/v1/events", payload, format="json")

    assert (first.status_code, again.status_code) == (201, 200)
    assert len(smtp_inbox.to("mia@customer.example")) == 1


def test_the_settings_api_sets_the_time_zone_and_the_typeform_secret_shown_by_its_last_four(world, client):
    api = world.api(world.key_a)

    bad = api.put("/api/v1/engagement-settings", {"time_zone": "Mars/Olympus"}, format="json")
    saved = api.put(
        "/api/v1/engagement-settings",
        {"time_zone": "Europe/Berlin", "typeform_secret": SECRET, "typeform_score_field_ref": "nps"},
        format="json",
    ).json()

    assert bad.status_code == 400 and "time_zone" in bad.json()["error"]["fields"]
    assert saved["time_zone"] == "Europe/Berlin" and saved["typeform"]["secret"] == "…" + SECRET[-4:]
    assert saved["typeform"]["webhook_url"].endswith("/webhooks/typeform/tenant-a/")
    body = typeform_body()
    response = client.post(
        "/webhooks/typeform/tenant-a/", body, content_type="application/json", HTTP_TYPEFORM_SIGNATURE=signature(body)
    )
    assert response.status_code == 200
    with connection.cursor() as cursor:
        cursor.execute("SELECT secret FROM engagement_typeformsettings")
        assert SECRET not in cursor.fetchone()[0]  # encrypted at rest


def test_a_marketer_uploads_an_nps_csv_in_the_admin_and_follows_its_progress(world, client, smtp_inbox):
    nps_program(world.a)
    client.force_login(world.marketer_a)
    csv = (
        "response_id,customer_external_id,email,score,answered_at\n"
        "r1,c1,one@customer.example,10,2026-11-20T10:00:00Z\n"
        "r2,c2,two@customer.example,eleven,2026-11-20T10:00:00Z\n"
    )

    response = client.post(
        "/admin/engagement/npsimport/add/", {"file": SimpleUploadedFile("nps.csv", csv.encode())}, follow=True
    )

    job = NpsImport.objects.get()
    page = response.content.decode()
    assert response.status_code == 200 and 'role="progressbar"' in page
    assert "Importing NPS responses from <strong>nps.csv</strong>" in page and "/admin/engagement/npsimport/" in page
    assert 'id="import-updated"' not in page  # NPS imports only create
    progress = client.get(f"/admin/engagement/npsimport/{job.pk}/progress.json").json()
    assert (progress["percent"], progress["created"], progress["error_count"]) == (100, 1, 1)
    assert progress["errors"] == [{"line": 3, "field": "score", "message": "Required: a whole number from 0 to 10."}]
    assert len(smtp_inbox.messages) == 1
    client.force_login(world.marketer_b)
    assert client.get(f"/admin/engagement/npsimport/{job.pk}/progress.json").status_code == 404
