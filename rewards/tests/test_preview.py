"""Previewing a rule change against the last 90 days of payments ("what would we have paid")."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from programs import selectors
from programs.models import ProgramVersion
from rewards import preview as preview_module
from tests import factories as f

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 6, 30, 12, 0, tzinfo=UTC)

V1 = {
    "schema_version": 1,
    "currency": "USD",
    "referrer": [{"kind": "flat_per_conversion", "amount_minor": 5_000}],
    "referred": [{"kind": "renewal_discount", "percent_bp": 2_000}],
}
V2 = {**V1, "referrer": [{"kind": "flat_per_conversion", "amount_minor": 7_000}]}
PROPOSED = {
    "schema_version": 1,
    "currency": "USD",
    "referrer": [{"kind": "recurring_percent", "percent_bp": 1_000, "months": 12}],
    "referred": [{"kind": "free_months", "months": 1}],
}


def at(day: str) -> datetime:
    return datetime.fromisoformat(f"2026-{day}T10:00:00+00:00")


class Data:
    """Program with v1 and v2; referrals R1 (v1), R2 (v2), R3 (no version recorded); payments around them."""

    def __init__(self, world, now=NOW, shift=timedelta(0)):
        def when(day):
            return at(day) + shift

        self.program = f.ProgramFactory(tenant=world.a, currency="USD")
        self.v1 = f.ProgramVersionFactory(program=self.program, number=1, rules=V1, created_at=when("01-01"))
        self.v2 = f.ProgramVersionFactory(program=self.program, number=2, rules=V2, created_at=when("05-01"))
        self.p1 = f.ParticipantFactory(program=self.program, name="Priya One")
        self.p2 = f.ParticipantFactory(program=self.program, name="Paul Two")
        self.r1 = f.ReferralFactory(referrer=self.p1, rule_version=self.v1, created_at=when("03-01"))
        self.r2 = f.ReferralFactory(referrer=self.p1, rule_version=self.v2, created_at=when("05-02"))
        self.r3 = f.ReferralFactory(referrer=self.p2, rule_version=None, created_at=when("04-15"))

        def payment(referral, day, amount, **extra):
            return f.ConversionEventFactory(
                tenant=world.a,
                referral=referral,
                kind=extra.pop("kind", "payment"),
                amount_minor=amount,
                currency=extra.pop("currency", "USD"),
                occurred_at=when(day),
                status=extra.pop("status", "processed"),
                **extra,
            )

        payment(self.r1, "03-05", 10_000)  # R1's first payment: before the window, still counts as its conversion
        self.r1_rows = [payment(self.r1, day, 10_000) for day in ("04-05", "05-05", "06-05")]
        self.r2_first = payment(self.r2, "05-10", 20_000, raw={"seats": 3})
        self.r3_first = payment(self.r3, "06-20", 5_000)
        self.r3_eur = payment(self.r3, "06-25", 3_000, currency="EUR")
        # Never part of the preview:
        payment(self.r2, "06-01", 20_000, status="received")
        payment(self.r2, "06-02", 20_000, kind="refund")
        other_program = f.ReferralFactory(referrer=f.ParticipantFactory(program=f.ProgramFactory(tenant=world.a)))
        payment(other_program, "06-03", 99_000)
        f.ConversionEventFactory(tenant=world.b, kind="payment", amount_minor=77_000, occurred_at=when("06-04"))


def test_preview_compares_each_referrals_own_version_with_the_proposal(world):
    data = Data(world)

    preview = preview_module.rules_change_preview(world.a, program=data.program, proposed_rules=PROPOSED, now=NOW)

    assert (preview.conversions, preview.skipped, len(preview.rows)) == (5, 1, 6)
    assert (preview.old_referrer_minor, preview.old_referred_minor, preview.old_total_minor) == (12_000, 5_000, 17_000)
    assert (preview.new_referrer_minor, preview.new_referred_minor, preview.new_total_minor) == (5_500, 25_000, 30_500)
    assert preview.difference_minor == 13_500
    rows = {row.event_id: row for row in preview.rows}
    r2 = rows[data.r2_first.pk]
    assert (r2.old_version, r2.old_referrer_minor, r2.old_referred_minor) == (2, 7_000, 4_000)
    assert (r2.new_referrer_minor, r2.new_referred_minor) == (2_000, 20_000)
    assert "Referrer: Flat 70.00 USD per new paying customer" in r2.old_explanation
    assert "Referrer: 10 % of 200.00 USD (payment in month 1 of 12) = 20.00 USD" in r2.new_explanation
    r3 = rows[data.r3_first.pk]
    assert (r3.old_version, r3.old_total_minor, r3.new_total_minor) == (1, 6_000, 5_500)
    later = [rows[event.pk] for event in data.r1_rows]
    assert [(row.old_total_minor, row.new_total_minor) for row in later] == [(0, 1_000)] * 3
    assert "payment in month 2 of 12" in later[0].new_explanation
    assert rows[data.r3_eur.pk].skipped == "Paid in EUR, not USD: not comparable."


def test_preview_counts_earlier_conversions_for_tiers_and_caps(world):
    data = Data(world)
    tiered = {
        "schema_version": 1,
        "currency": "USD",
        "referrer": [
            {
                "kind": "tiered",
                "tiers": [{"min_referrals": 1, "amount_minor": 1_000}, {"min_referrals": 2, "amount_minor": 3_000}],
            }
        ],
        "referred": [],
    }
    capped = {**tiered, "caps": {"referrer_rewarded_referrals": {"max": 1, "period": "year"}}}

    tier_rows = {
        r.event_id: r
        for r in preview_module.rules_change_preview(world.a, program=data.program, proposed_rules=tiered, now=NOW).rows
    }
    cap_rows = {
        r.event_id: r
        for r in preview_module.rules_change_preview(world.a, program=data.program, proposed_rules=capped, now=NOW).rows
    }

    # P1's R1 converted on 03-05, so R2 (05-10) is P1's 2nd successful referral this year; R3 is P2's 1st.
    assert tier_rows[data.r2_first.pk].new_referrer_minor == 3_000
    assert tier_rows[data.r3_first.pk].new_referrer_minor == 1_000
    assert cap_rows[data.r2_first.pk].new_referrer_minor == 0
    assert "Referrer cap reached" in cap_rows[data.r2_first.pk].new_explanation
    assert cap_rows[data.r3_first.pk].new_referrer_minor == 1_000


def test_per_seat_proposals_use_the_seats_recorded_on_the_event(world):
    data = Data(world)
    per_seat = {**PROPOSED, "referrer": [{"kind": "flat_per_conversion", "amount_minor": 1_000, "per_seat": True}]}

    rows = {
        r.event_id: r
        for r in preview_module.rules_change_preview(
            world.a, program=data.program, proposed_rules=per_seat, now=NOW
        ).rows
    }

    assert rows[data.r2_first.pk].new_referrer_minor == 3_000
    assert rows[data.r3_first.pk].new_referrer_minor == 1_000


def test_weeks_cover_the_whole_window_and_sum_to_the_totals(world):
    data = Data(world)

    preview = preview_module.rules_change_preview(world.a, program=data.program, proposed_rules=PROPOSED, now=NOW)

    assert len(preview.weeks) in (13, 14)
    assert sum(old for _, old, _ in preview.weeks) == preview.old_total_minor
    assert sum(new for _, _, new in preview.weeks) == preview.new_total_minor
    svg = str(preview.chart_svg())
    assert svg.startswith("<svg") and svg.count("<rect") >= 2 * len(preview.weeks)
    assert "Proposed rules" in svg


def test_invalid_proposed_rules_name_the_field_and_nothing_is_written(world):
    data = Data(world)
    versions = ProgramVersion.objects.count()
    with pytest.raises(Exception) as caught:
        preview_module.rules_change_preview(
            world.a,
            program=data.program,
            proposed_rules={**PROPOSED, "referred": [{"kind": "free_months", "months": 99}]},
        )
    assert "rules.referred[0].months" in caught.value.message_dict
    assert ProgramVersion.objects.count() == versions


def test_a_program_without_payments_previews_to_zero(world):
    program = f.ProgramFactory(tenant=world.a)
    preview = preview_module.rules_change_preview(world.a, program=program, proposed_rules=PROPOSED, now=NOW)
    assert (preview.conversions, preview.old_total_minor, preview.new_total_minor, preview.rows) == (0, 0, 0, [])
    assert sum(new for _, _, new in preview.weeks) == 0


# --- API ---------------------------------------------------------------------------------------
def recent_data(world):
    """The same data shifted so that NOW is the real present (the API previews up to now)."""
    return Data(world, shift=timezone.now() - NOW)


def test_preview_api_returns_totals_and_rows(world):
    data = recent_data(world)

    response = world.api(world.key_a).post(
        f"/api/v1/programs/{data.program.pk}/rules/preview", {"rules": PROPOSED}, format="json"
    )

    body = response.json()
    assert response.status_code == 200
    assert body["totals"] == {
        "old": {"referrer_minor": 12_000, "referred_minor": 5_000, "total_minor": 17_000},
        "new": {"referrer_minor": 5_500, "referred_minor": 25_000, "total_minor": 30_500},
        "difference_minor": 13_500,
    }
    assert (body["conversions"], body["skipped"], len(body["rows"])) == (5, 1, 6)
    assert body["proposed_rules"]["referred"][0] == {"kind": "free_months", "months": 1, "on": "conversion"}
    assert ProgramVersion.objects.filter(program=data.program).count() == 2


def test_preview_api_get_replays_the_current_rules(world):
    data = recent_data(world)

    body = world.api(world.key_a).get(f"/api/v1/programs/{data.program.pk}/rules/preview").json()

    # Under the current version (v2) R3 would have earned 70.00 + 10.00 instead of v1's 50.00 + 10.00.
    assert body["totals"]["old"]["total_minor"] == 17_000
    assert body["totals"]["new"]["total_minor"] == 7_000 + 4_000 + 7_000 + 1_000


def test_preview_api_bad_rules_name_the_field(world):
    data = recent_data(world)

    response = world.api(world.key_a).post(
        f"/api/v1/programs/{data.program.pk}/rules/preview",
        {"rules": {**PROPOSED, "currency": "EUR"}},
        format="json",
    )

    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"rules.currency": ["Must be the program's currency, USD."]}


def test_preview_api_without_rules_field_names_it(world):
    program = f.ProgramFactory(tenant=world.a)
    response = world.api(world.key_a).post(f"/api/v1/programs/{program.pk}/rules/preview", {}, format="json")
    assert response.status_code == 400 and "rules" in response.json()["error"]["fields"]


def test_preview_api_for_another_tenants_program_is_404(world):
    data = recent_data(world)
    response = world.api(world.key_b).post(
        f"/api/v1/programs/{data.program.pk}/rules/preview", {"rules": PROPOSED}, format="json"
    )
    assert response.status_code == 404
    assert b"Priya" not in response.content


# --- admin -------------------------------------------------------------------------------------
def test_admin_preview_page_shows_the_comparison_table_and_an_inline_svg_chart(world, client):
    import json

    data = recent_data(world)
    client.force_login(world.marketer_a)
    url = reverse("admin:programs_program_rules_preview", args=[data.program.pk])

    form = client.get(url)
    result = client.post(url, {"rules_json": json.dumps(PROPOSED), "preview": "1"})

    assert form.status_code == 200 and "&quot;amount_minor&quot;: 7000" in form.content.decode()
    page = result.content.decode()
    assert result.status_code == 200
    assert 'id="preview-totals"' in page and 'id="preview-rows"' in page
    assert "170.00 USD" in page and "305.00 USD" in page and "135.00 USD" in page
    assert "<svg" in page and "<script" not in page.split('id="preview-chart"')[1].split("</div>")[0]
    assert "Priya One" in page
    assert ProgramVersion.objects.filter(program=data.program).count() == 2


def test_admin_preview_shows_rule_errors_and_saves_nothing(world, client):
    data = recent_data(world)
    client.force_login(world.marketer_a)
    url = reverse("admin:programs_program_rules_preview", args=[data.program.pk])

    not_json = client.post(url, {"rules_json": "{oops", "preview": "1"})
    invalid = client.post(url, {"rules_json": '{"schema_version": 1}', "apply": "1"})

    assert "Not valid JSON" in not_json.content.decode()
    assert "rules.currency" in invalid.content.decode()
    assert ProgramVersion.objects.filter(program=data.program).count() == 2


def test_admin_preview_can_save_the_proposal_as_a_new_version(world, client):
    import json

    data = recent_data(world)
    client.force_login(world.marketer_a)
    url = reverse("admin:programs_program_rules_preview", args=[data.program.pk])

    response = client.post(url, {"rules_json": json.dumps(PROPOSED), "rules_note": "test recurring", "apply": "1"})

    latest = selectors.program_latest_version(data.program)
    assert response.status_code == 302
    assert (latest.number, latest.note, latest.rules["referrer"][0]["kind"]) == (
        3,
        "test recurring",
        "recurring_percent",
    )
    data.r1.refresh_from_db()
    assert data.r1.rule_version_id == data.v1.pk


def test_admin_preview_of_another_tenant_is_404_and_a_viewer_cannot_save(world, client):
    import json

    data = recent_data(world)
    url = reverse("admin:programs_program_rules_preview", args=[data.program.pk])

    client.force_login(world.marketer_b)
    foreign_get = client.get(url)
    foreign_post = client.post(url, {"rules_json": json.dumps(PROPOSED), "apply": "1"})
    client.force_login(world.viewer_a)
    viewer_preview = client.post(url, {"rules_json": json.dumps(PROPOSED), "preview": "1"})
    viewer_apply = client.post(url, {"rules_json": json.dumps(PROPOSED), "apply": "1"})

    assert foreign_get.status_code == 404 and foreign_post.status_code == 404
    assert viewer_preview.status_code == 200 and 'name="apply"' not in viewer_preview.content.decode()
    assert viewer_apply.status_code == 403
    assert ProgramVersion.objects.filter(program=data.program).count() == 2


def test_a_referral_under_an_unreadable_version_counts_as_paying_nothing(world):
    program = f.ProgramFactory(tenant=world.a, currency="USD")
    legacy = f.ProgramVersionFactory(program=program, number=1, rules={"attribution_model": "first_touch"})
    referral = f.ReferralFactory(referrer=f.ParticipantFactory(program=program), rule_version=legacy)
    f.ConversionEventFactory(
        tenant=world.a, referral=referral, amount_minor=10_000, occurred_at=NOW - timedelta(days=3), status="processed"
    )

    preview = preview_module.rules_change_preview(world.a, program=program, proposed_rules=PROPOSED, now=NOW)

    row = preview.rows[0]
    assert (row.old_version, row.old_total_minor, row.new_total_minor) == (1, 0, 11_000)
    assert "cannot be read" in row.old_explanation
