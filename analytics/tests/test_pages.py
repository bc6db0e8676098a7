"""The home and the analytics pages render for every role that may read them, with "—" (never NaN or
infinity) for undefined figures, CSVs of every figure, and writes only for owners and marketers."""

from __future__ import annotations

import csv
import io
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from analytics.figures import PAGES, page_figures
from analytics.models import DailyRollup, EconomicsSettings
from analytics.rollups import rollups_rebuild
from analytics.selectors import filters_from_query
from referral_platform.money import format_amount
from tests import factories as f

pytestmark = pytest.mark.django_db
ALL_PAGES = [*PAGES, "compare"]


def _activity(tenant):
    program = f.ProgramFactory(tenant=tenant, kind="customer", currency="USD")
    participant = f.ParticipantFactory(program=program, name="Paula Page")
    link = f.ReferralLinkFactory(participant=participant)
    for _ in range(3):
        f.ClickFactory(link=link, occurred_at=timezone.now())
    f.ReferralFactory(referrer=participant, link=link, created_at=timezone.now(), signed_up_at=timezone.now())
    rollups_rebuild(tenant_id=tenant.pk)
    return program, participant


def _client(client, user):
    client.force_login(user)
    return client


@pytest.mark.parametrize("slug", ALL_PAGES)
@pytest.mark.parametrize("empty", [True, False], ids=["empty", "with-data"])
def test_every_page_and_each_of_its_csvs_render_without_nan(world, client, slug, empty):
    if not empty:
        _activity(world.a)
    client = _client(client, world.viewer_a)

    page = client.get(reverse(f"analytics_{slug}"))

    assert page.status_code == 200
    body = page.content.decode()
    assert not re.search(r"\b(nan|inf|infinity|None)\b", re.sub(r"<[^>]+>", " ", body), re.IGNORECASE)
    figures = page_figures(slug, world.a, filters_from_query(world.a, {}), {})
    for figure in figures:
        response = client.get(reverse(f"analytics_{slug}_csv") + f"?figure={figure.slug}")
        assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
        rows = list(csv.reader(io.StringIO(response.content.decode())))
        assert rows[0][:2] == ["# workspace", "Tenant A"]
        assert rows[1] == [column.label for column in figure.columns]
        cells = [cell for row in rows[2:] for cell in row]
        assert not any(cell.lower() in ("nan", "inf", "-inf", "none") for cell in cells), cells


def test_the_home_is_the_first_page_of_a_marketer_and_shows_the_tiles(world, client):
    _activity(world.a)
    body = _client(client, world.marketer_a).get("/").content.decode()

    for label in ("Clicks", "Sign-ups", "Qualified", "Customers", "Referred revenue", "Rewards owed", "Program ROI"):
        assert label in body
    assert "Paula Page" in body and "Waiting for you" in body and 'id="analytics-charts"' in body


def test_the_admin_index_opens_on_the_home(world, client):
    _activity(world.a)
    body = _client(client, world.marketer_a).get(reverse("admin:index")).content.decode()

    assert 'id="analytics-home"' in body and "Paula Page" in body


def test_a_visitor_is_sent_to_log_in_and_a_non_member_gets_404(world, client):
    assert client.get(reverse("analytics_funnel")).status_code == 302
    outsider = f.UserFactory()
    client.force_login(outsider)
    assert client.get(reverse("analytics_funnel")).status_code == 404
    assert client.get(reverse("analytics_funnel_csv")).status_code == 404


def test_a_viewer_reads_the_calculator_but_cannot_save_it(world, client):
    client = _client(client, world.viewer_a)
    assert client.get(reverse("analytics_calculator")).status_code == 200

    response = client.post(reverse("analytics_calculator"), {"average_lifetime_months": 12})

    assert response.status_code == 403
    assert not EconomicsSettings.objects.filter(tenant=world.a).exists()


def test_a_marketer_saves_the_calculator_inputs_and_bad_input_names_the_field(world, client):
    client = _client(client, world.marketer_a)
    bad = client.post(reverse("analytics_calculator"), {"average_lifetime_months": "x"})
    assert bad.status_code == 400 and not EconomicsSettings.objects.filter(tenant=world.a).exists()

    client.post(
        reverse("analytics_calculator"),
        {
            "yearly_sales_marketing_spend_minor": 1_000_000,
            "program_yearly_cost_minor": 0,
            "average_lifetime_months": 24,
        },
    )

    saved = EconomicsSettings.objects.get(tenant=world.a)
    assert (saved.yearly_sales_marketing_spend_minor, saved.average_lifetime_months) == (1_000_000, 24)


def test_the_participant_list_and_page_show_each_participants_figures(world, client):
    _program, participant = _activity(world.a)
    client = _client(client, world.marketer_a)

    listing = client.get(reverse("admin:programs_participant_changelist")).content.decode()
    page = client.get(reverse("admin:programs_participant_change", args=[participant.pk])).content.decode()

    assert "Earnings / click" in listing and "Paula Page" in listing
    assert '<td class="field-figure_clicks">3</td>' in listing
    assert "Figures (all time)" in page and "<td>3</td><td>1</td>" in page


def test_the_participant_list_sorts_by_a_figure_in_a_fixed_number_of_queries(world, client):
    program = f.ProgramFactory(tenant=world.a, kind="customer", currency="USD")
    people = {name: f.ParticipantFactory(program=program, name=name) for name in ("Few", "Many", "None")}
    for name, clicks, earned in (("Few", 2, 300), ("Many", 9, 900)):
        for day_offset in (1, 2):  # two days each: the sums add both
            DailyRollup.objects.create(
                tenant=world.a,
                day=timezone.now().date() - timezone.timedelta(days=day_offset),
                program=program,
                participant=people[name],
                channel="email",
                kind="customer",
                currency="USD",
                clicks=clicks,
                rewards_earned_minor=earned,
            )
    client = _client(client, world.marketer_a)
    url = reverse("admin:programs_participant_changelist")
    column = 1 + [name == "figure_clicks" for name in client.get(url).context["cl"].list_display].index(
        True
    )  # the admin's sort parameter counts columns from 1 without the checkbox

    with CaptureQueriesContext(connection) as few:
        listing = client.get(f"{url}?o=-{column - 1}").content.decode()
    for index in range(10):
        f.ParticipantFactory(program=program, name=f"Extra {index}")
    with CaptureQueriesContext(connection) as more:
        client.get(f"{url}?o=-{column - 1}")

    names = re.findall(r"(Many|Few|None)</a>", listing)
    assert names[:3] == ["Many", "Few", "None"]  # 18 clicks, 4 clicks, 0
    assert '<td class="field-figure_clicks">18</td>' in listing and '<td class="field-figure_clicks">4</td>' in listing
    assert f'<td class="field-figure_earnings">{format_amount(1800, "USD")}</td>' in listing  # 2 x 900 minor
    assert len(more.captured_queries) == len(few.captured_queries)
