"""The browser upload of the other-channel customers CSV (/analytics/other-customers/): per-row errors and
nothing written when any row is bad, owners and marketers only, one workspace's rows only."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from analytics.models import OtherChannelCustomer
from referral_platform.tenancy.models import AuditEvent
from tests import factories as f

pytestmark = pytest.mark.django_db
URL = "/analytics/other-customers/"
HEADER = "external_id,channel,lead_at,converted_at,deal_minor,arr_minor,currency,churned_at\n"


def _file(body: str, name: str = "customers.csv") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, body.encode(), content_type="text/csv")


def _as(client, user):
    client.force_login(user)
    return client


def test_the_route_is_named_and_linked_from_the_analytics_nav(world, client):
    assert reverse("analytics_other_customers") == URL
    page = _as(client, world.marketer_a).get(reverse("analytics_channels"))
    assert URL in page.content.decode()


def test_a_marketer_imports_a_file_and_sees_the_rows(world, client):
    client = _as(client, world.marketer_a)
    body = HEADER + "c1,events,2026-01-02,2026-02-01,50000,120000,USD,\nc2,outbound,2026-01-05T09:30:00Z,,,,,\n"

    response = client.post(URL, {"file": _file(body)})

    assert response.status_code == 302 and response["Location"] == URL
    rows = {row.external_id: row for row in OtherChannelCustomer.objects.filter(tenant=world.a)}
    assert set(rows) == {"c1", "c2"}
    assert (rows["c1"].deal_minor, rows["c1"].arr_minor, rows["c1"].channel) == (50_000, 120_000, "events")
    assert rows["c1"].converted_at.date().isoformat() == "2026-02-01"
    assert rows["c2"].converted_at is None and rows["c2"].currency == world.a.default_currency
    audit = AuditEvent.objects.get(tenant=world.a, action="analytics.other_customers_imported")
    assert audit.data == {"file": "customers.csv", "rows": 2}
    page = client.get(URL).content.decode()
    assert "2 customers imported from customers.csv" in page and "c1" in page and "outbound" in page


def test_a_second_import_updates_rows_by_external_id(world, client):
    client = _as(client, world.owner_a)
    client.post(URL, {"file": _file(HEADER + "c1,events,2026-01-02,,100,,,\n")})

    client.post(URL, {"file": _file(HEADER + "c1,webinar,2026-01-02,2026-01-20,700,,,\n")})

    saved = OtherChannelCustomer.objects.get(tenant=world.a, external_id="c1")
    assert (saved.channel, saved.deal_minor) == ("webinar", 700)
    assert OtherChannelCustomer.objects.filter(tenant=world.a).count() == 1


def test_every_bad_row_is_reported_with_its_line_and_field_and_nothing_is_written(world, client):
    client = _as(client, world.marketer_a)
    body = (
        HEADER
        + "ok1,events,2026-01-02,,,,,\n"  # line 2: fine
        + "bad-date,events,not a date,,,,,\n"  # line 3
        + "early,events,2026-03-01,2026-02-01,,,,\n"  # line 4: converted before the lead
        + "neg,events,2026-01-02,,-5,,,\n"  # line 5: negative deal
        + ",events,2026-01-02,,,,,\n"  # line 6: no external id
        + "ok1,events,2026-01-03,,,,,\n"  # line 7: the same external id again
        + "cur,events,2026-01-03,,,,usd,\n"  # line 8: currency not ISO
    )

    response = client.post(URL, {"file": _file(body)})

    assert response.status_code == 400
    errors = [(e["line"], e["external_id"], e["field"]) for e in response.context["errors"]]
    assert errors == [
        (3, "bad-date", "lead_at"),
        (4, "early", "converted_at"),
        (5, "neg", "deal_minor"),
        (6, "", "external_id"),
        (7, "ok1", "external_id"),
        (8, "cur", "currency"),
    ]
    page = response.content.decode()
    assert "Nothing was imported: 6 problems" in page and "Already on line 2." in page
    assert not OtherChannelCustomer.objects.exists()
    assert not AuditEvent.objects.filter(action="analytics.other_customers_imported").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"external_id,lead_at\nc1,2026-01-02\n", "Columns missing: channel."),
        (HEADER.encode(), "The file has no rows."),
        (b"\xff\xfeexternal_id", "The file is not UTF-8 text."),
    ],
    ids=["missing-column", "no-rows", "not-utf8"],
)
def test_a_bad_file_is_one_error_on_line_one(world, client, content, message):
    response = _as(client, world.marketer_a).post(
        URL, {"file": SimpleUploadedFile("x.csv", content, content_type="text/csv")}
    )

    assert response.status_code == 400
    assert [(e["line"], e["field"], e["message"]) for e in response.context["errors"]] == [(1, "file", message)]
    assert not OtherChannelCustomer.objects.exists()


def test_a_post_without_a_file_is_refused_politely(world, client):
    response = _as(client, world.marketer_a).post(URL, {})
    assert response.status_code == 400 and "Choose a CSV file." in response.content.decode()


def test_a_viewer_sees_the_page_read_only_and_cannot_import(world, client):
    f.OtherChannelCustomerFactory(tenant=world.a, external_id="seen-by-viewer")
    client = _as(client, world.viewer_a)

    page = client.get(URL)
    refused = client.post(URL, {"file": _file(HEADER + "v1,events,2026-01-02,,,,,\n")})

    body = page.content.decode()
    assert page.status_code == 200 and "seen-by-viewer" in body
    assert "Read-only" in body and 'type="file"' not in body
    assert refused.status_code == 403
    assert not OtherChannelCustomer.objects.filter(external_id="v1").exists()


def test_a_visitor_is_sent_to_log_in_and_an_outsider_gets_404(world, client):
    assert client.get(URL).status_code == 302
    outsider = f.UserFactory()
    client.force_login(outsider)
    assert client.get(URL).status_code == 404
    assert client.post(URL, {"file": _file(HEADER + "x,events,2026-01-02,,,,,\n")}).status_code == 404
    assert not OtherChannelCustomer.objects.exists()


def test_tenant_b_neither_sees_nor_changes_tenant_a_rows(world, client):
    mine = f.OtherChannelCustomerFactory(tenant=world.a, external_id="shared-id", deal_minor=100)
    f.OtherChannelCustomerFactory(tenant=world.a, external_id="only-in-a-71")
    client = _as(client, world.marketer_b)

    listing = client.get(URL).content.decode()
    imported = client.post(URL, {"file": _file(HEADER + "shared-id,events,2026-01-02,,999,,,\n")})

    assert "only-in-a-71" not in listing and "shared-id" not in listing and "(0 in all)" in listing
    assert imported.status_code == 302
    mine.refresh_from_db()
    assert mine.deal_minor == 100 and mine.channel == "paid_search"
    theirs = OtherChannelCustomer.objects.get(tenant=world.b, external_id="shared-id")
    assert theirs.deal_minor == 999
    assert not AuditEvent.objects.filter(tenant=world.a, action="analytics.other_customers_imported").exists()
    own = _as(client, world.marketer_a).get(URL).content.decode()
    assert "only-in-a-71" in own and "(2 in all)" in own
