"""The program builder: a marketer builds a program without JSON, and gets exactly the API's rules document."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from django.urls import reverse

from programs.builder import TEMPLATES, worked_example
from programs.models import Program, ProgramStatus, ProgramVersion
from programs.rules import validate_rules
from programs.terms import program_offer_sentence
from referral_platform.money import MoneyInputError, parse_money, parse_percent
from tests import factories as f

pytestmark = pytest.mark.django_db

BUILDER = "admin:programs_program_builder"


class FormValues(HTMLParser):
    """What a browser would submit for the page's builder form (``<template>`` contents excluded)."""

    def __init__(self, html: str, form_id: str = "builder-form"):
        super().__init__()
        self.form_id, self.inside, self.template_depth = form_id, False, 0
        self.values: dict[str, str] = {}
        self.disabled: set[str] = set()
        self.submit_buttons: list[str] = []
        self._select: str | None = None
        self._select_first: str | None = None
        self._textarea: str | None = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form" and attrs.get("id") == self.form_id:
            self.inside = True
        if not self.inside:
            return
        if tag == "template":
            self.template_depth += 1
        if self.template_depth:
            return
        name = attrs.get("name")
        if name and "disabled" in attrs:
            self.disabled.add(name)
        if tag == "input":
            kind = attrs.get("type", "text")
            if kind == "submit":
                self.submit_buttons.append(attrs.get("value", ""))
            elif kind == "checkbox":
                if "checked" in attrs and name:
                    self.values[name] = attrs.get("value", "on")
            elif name:
                self.values[name] = attrs.get("value", "")
        elif tag == "select":
            self._select, self._select_first = name, None
        elif tag == "option" and self._select:
            if self._select_first is None:
                self._select_first = attrs.get("value", "")
                self.values.setdefault(self._select, self._select_first)
            if "selected" in attrs:
                self.values[self._select] = attrs.get("value", "")
        elif tag == "textarea":
            self._textarea = name
            self.values[name] = ""

    def handle_endtag(self, tag):
        if tag == "template" and self.template_depth:
            self.template_depth -= 1
        elif tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None
        elif tag == "form" and self.inside:
            self.inside = False

    def handle_data(self, data):
        if self._textarea and not self.template_depth:
            self.values[self._textarea] += data.removeprefix("\n") if not self.values[self._textarea] else data


def builder_values(client, url) -> dict[str, str]:
    response = client.get(url)
    assert response.status_code == 200
    return FormValues(response.content.decode()).values


def api_program(world, *, slug, document, **settings):
    body = {"name": f"API {slug}", "slug": slug, "kind": "customer", "landing_url": "https://tenant-a.example/"}
    body["rules"] = document
    body.update(settings)
    response = world.api(world.key_a).post("/api/v1/programs", body, format="json")
    assert response.status_code == 201, response.json()
    return Program.objects.get(pk=response.json()["id"])


def latest_rules(program) -> dict:
    return ProgramVersion.objects.filter(program=program).order_by("-number").first().rules


# --- money typed in words --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("typed", "currency", "minor"),
    [("50.00 USD", "USD", 5_000), ("50", "USD", 5_000), ("1,200.5", "USD", 120_050), ("500 JPY", "JPY", 500)],
    ids=["usd-with-code", "usd-bare", "usd-grouped", "jpy"],
)
def test_amounts_typed_in_currency_units_become_minor_units(typed, currency, minor):
    assert parse_money(typed, currency) == minor


@pytest.mark.parametrize(
    ("typed", "currency", "words"),
    [
        ("50.001", "USD", "2 decimals at most"),
        ("50.5 JPY", "JPY", "no decimals"),
        ("50 EUR", "USD", "Amounts are in USD"),
        ("fifty", "USD", "such as 50.00 USD"),
    ],
    ids=["too-many-decimals", "jpy-decimals", "other-currency", "letters"],
)
def test_unreadable_amounts_are_refused_in_words(typed, currency, words):
    with pytest.raises(MoneyInputError, match=words):
        parse_money(typed, currency)


def test_percentages_are_typed_as_percent():
    assert [parse_percent(text) for text in ("12.5", "20 %", "0.25")] == [1_250, 2_000, 25]
    with pytest.raises(MoneyInputError, match="two decimals"):
        parse_percent("12.125")


# --- the builder writes the API's document -----------------------------------------------------------
@pytest.mark.parametrize("key", list(TEMPLATES), ids=list(TEMPLATES))
def test_each_template_built_without_json_equals_the_api_document(world, client, key):
    template = TEMPLATES[key]
    client.force_login(world.marketer_a)
    values = builder_values(client, reverse(BUILDER) + f"?template={key}")
    assert not any(name.endswith("rules_json") for name in values)  # no JSON anywhere in the builder
    values.update({"name": f"Built {key}", "slug": f"built-{key}", "landing_url": "https://tenant-a.example/"})

    response = client.post(reverse(BUILDER), values)

    assert response.status_code == 302, FormValues(response.content.decode()).values
    built = Program.objects.get(tenant=world.a, slug=f"built-{key}")
    from_api = api_program(world, slug=f"api-{key}", document=template.document("USD"), **template.settings)
    assert latest_rules(built) == latest_rules(from_api)
    assert (built.kind, built.access, built.status) == (from_api.kind, from_api.access, ProgramStatus.DRAFT)


EVERY_KIND_TYPED = {
    "name": "Every kind",
    "slug": "every-kind",
    "kind": "customer",
    "access": "open",
    "landing_url": "https://tenant-a.example/join",
    "currency": "USD",
    "hold_days": "14",
    "auto_approve_limit": "250.00 USD",
    "cookie_window_days": "60",
    "attribution_model": "first_touch",
    "time_decay_half_life_days": "7",
    "cap_max": "20",
    "cap_period": "quarter",
    "max_bill_discount": "50",
    "industries": "Software, Fintech",
    "company_size_min": "10",
    "company_size_max": "500",
    "revenue_min": "1,000,000 USD",
    "revenue_max": "",
    "qualify_budget": "on",
    "qualify_need": "on",
    "cancellation_policy": "forfeit_unpaid",
    "cancellation_within_days": "45",
    "note": "launch",
    "referrer-TOTAL_FORMS": "7",
    "referrer-INITIAL_FORMS": "0",
    "referrer-MIN_NUM_FORMS": "0",
    "referrer-MAX_NUM_FORMS": "30",
    "referrer-0-kind": "flat_per_conversion",
    "referrer-0-amount": "50.00 USD",
    "referrer-0-per_seat": "on",
    "referrer-0-max_seats": "20",
    "referrer-0-max_amount": "500",
    "referrer-1-kind": "flat_per_lead",
    "referrer-1-on": "qualified",
    "referrer-1-amount": "25",
    "referrer-2-kind": "percent_of_revenue",
    "referrer-2-percent": "12.5",
    "referrer-2-max_amount": "1,000.00 USD",
    "referrer-3-kind": "recurring_percent",
    "referrer-3-percent": "20 %",
    "referrer-3-months": "12",
    "referrer-4-kind": "tiered",
    "referrer-4-tiers": "from 1: 50.00 USD\nfrom 5: 75 USD\nfrom 10: 15 %",
    "referrer-5-kind": "account_credit",
    "referrer-5-amount": "30.00",
    "referrer-5-description": "Credit on your next invoice.",
    "referrer-6-kind": "recurring_percent",
    "referrer-6-percent": "30",
    "referrer-6-months": "24",
    "referrer-6-partner_tier": "gold",
    "referred-TOTAL_FORMS": "5",
    "referred-INITIAL_FORMS": "0",
    "referred-MIN_NUM_FORMS": "0",
    "referred-MAX_NUM_FORMS": "30",
    "referred-0-kind": "free_months",
    "referred-0-months": "2",
    "referred-0-on": "sign_up",
    "referred-1-kind": "renewal_discount",
    "referred-1-percent": "10",
    "referred-2-kind": "feature_unlock",
    "referred-2-feature": "SSO",
    "referred-2-months": "6",
    "referred-3-kind": "gift",
    "referred-3-gift": "a company hoodie",
    "referred-3-gift_value": "40.00 USD",
    "referred-4-kind": "",  # the blank row a browser sends along is ignored
}
EVERY_KIND_JSON = {
    "schema_version": 1,
    "currency": "USD",
    "referrer": [
        {
            "kind": "flat_per_conversion",
            "amount_minor": 5_000,
            "per_seat": True,
            "max_seats": 20,
            "max_amount_minor": 50_000,
        },
        {"kind": "flat_per_lead", "on": "qualified", "amount_minor": 2_500},
        {"kind": "percent_of_revenue", "percent_bp": 1_250, "max_amount_minor": 100_000},
        {"kind": "recurring_percent", "percent_bp": 2_000, "months": 12},
        {
            "kind": "tiered",
            "tiers": [
                {"min_referrals": 1, "amount_minor": 5_000},
                {"min_referrals": 5, "amount_minor": 7_500},
                {"min_referrals": 10, "percent_bp": 1_500},
            ],
        },
        {"kind": "account_credit", "amount_minor": 3_000, "description": "Credit on your next invoice."},
    ],
    "referred": [
        {"kind": "free_months", "months": 2, "on": "sign_up"},
        {"kind": "renewal_discount", "percent_bp": 1_000},
        {"kind": "feature_unlock", "feature": "SSO", "months": 6},
        {"kind": "gift", "gift": "a company hoodie", "value_minor": 4_000},
    ],
    "caps": {"referrer_rewarded_referrals": {"max": 20, "period": "quarter"}, "max_bill_discount_bp": 5_000},
    "eligibility": {
        "industries": ["software", "fintech"],
        "company_size": {"min": 10, "max": 500},
        "annual_revenue_minor": {"min": 100_000_000},
    },
    "qualification": {"budget": True, "need": True},
    "cancellation": {"policy": "forfeit_unpaid", "within_days": 45},
    "partner_tiers": {"gold": {"referrer": [{"kind": "recurring_percent", "percent_bp": 3_000, "months": 24}]}},
}
EVERY_KIND_SETTINGS = {
    "kind": "customer",
    "access": "open",
    "cookie_window_days": 60,
    "attribution_model": "first_touch",
    "hold_days": 14,
    "auto_approve_limit_minor": 25_000,
}


def test_a_program_with_every_reward_kind_typed_in_the_builder_equals_the_api_document(world, client):
    kinds = {rule["kind"] for side in ("referrer", "referred") for rule in EVERY_KIND_JSON[side]}
    assert len(kinds) == 10  # every kind of programs.rules.RULE_KINDS
    client.force_login(world.marketer_a)

    response = client.post(reverse(BUILDER), EVERY_KIND_TYPED)

    assert response.status_code == 302, FormValues(response.content.decode()).values
    built = Program.objects.get(tenant=world.a, slug="every-kind")
    from_api = api_program(world, slug="every-kind-api", document=EVERY_KIND_JSON, **EVERY_KIND_SETTINGS)
    assert latest_rules(built) == latest_rules(from_api)
    assert built.auto_approve_limit_minor == 25_000 and built.hold_days == 14


def test_an_existing_program_reopens_in_the_builder_exactly_as_it_is(world, client):
    source = api_program(world, slug="source", document=EVERY_KIND_JSON, **EVERY_KIND_SETTINGS)
    client.force_login(world.marketer_a)
    values = builder_values(client, reverse("admin:programs_program_builder_edit", args=[source.pk]))
    values.update({"name": "Copy", "slug": "copy"})

    response = client.post(reverse(BUILDER), values)

    assert response.status_code == 302
    assert latest_rules(Program.objects.get(tenant=world.a, slug="copy")) == latest_rules(source)


# --- refusals ------------------------------------------------------------------------------------
def test_invalid_builder_input_is_refused_next_to_the_field_and_nothing_is_saved(world, client):
    client.force_login(world.marketer_a)
    bad = {
        **EVERY_KIND_TYPED,
        "referrer-0-amount": "50.001 USD",
        "referrer-3-months": "",
        "referrer-4-tiers": "from 5: 75 USD\nfrom 1: 50 USD",
        "company_size_min": "600",
        "landing_url": "https://elsewhere.example/",
    }
    programs, versions = Program.objects.count(), ProgramVersion.objects.count()

    response = client.post(reverse(BUILDER), bad)

    page = response.content.decode()
    assert response.status_code == 200
    assert (Program.objects.count(), ProgramVersion.objects.count()) == (programs, versions)
    errors = response.context["builder"].errors_by_name()
    assert errors["referrer-0-amount"] == ["USD has 2 decimals at most, such as 50.00 USD."]
    assert errors["referrer-3-months"] == ["Months is needed for this reward."]
    assert "id_referrer-0-amount_error" in page and "USD has 2 decimals at most" in page
    assert "landing_url" in errors and "allowed landing domains" in errors["landing_url"][0]


def test_rule_level_errors_land_on_the_reward_row_that_caused_them(world, client):
    client.force_login(world.marketer_a)
    bad = {**EVERY_KIND_TYPED, "referrer-4-tiers": "from 5: 75 USD\nfrom 1: 50 USD", "company_size_min": "600"}

    response = client.post(reverse(BUILDER), bad)

    errors = response.context["builder"].errors_by_name()
    assert "referrer-4-tiers" in errors and "increasing" in errors["referrer-4-tiers"][0]
    assert "company_size_max" in errors
    assert not Program.objects.filter(slug="every-kind").exists()


def test_a_program_without_any_reward_is_refused_with_the_reason(world, client):
    client.force_login(world.marketer_a)
    values = {k: v for k, v in EVERY_KIND_TYPED.items() if not k.startswith(("referrer-", "referred-"))}
    values.update({f"{side}-{k}": v for side in ("referrer", "referred") for k, v in {
        "TOTAL_FORMS": "1", "INITIAL_FORMS": "0", "MIN_NUM_FORMS": "0", "MAX_NUM_FORMS": "30", "0-kind": ""
    }.items()})  # fmt: skip

    response = client.post(reverse(BUILDER), values)

    assert response.status_code == 200
    assert "at least one reward" in response.content.decode()
    assert not Program.objects.filter(slug="every-kind").exists()


def test_a_viewer_opens_the_builder_read_only_and_cannot_save(world, client):
    program = api_program(world, slug="seen", document=TEMPLATES["give_get"].document("USD"))
    client.force_login(world.viewer_a)
    url = reverse("admin:programs_program_builder_edit", args=[program.pk])

    page = client.get(url)
    values = FormValues(page.content.decode())
    posted = client.post(url, {**values.values, "name": "Renamed by a viewer", "confirm": "1"})

    assert page.status_code == 200 and "builder-readonly" in page.content.decode()
    assert {"name", "referrer-0-amount"} <= values.disabled and not values.submit_buttons
    assert posted.status_code == 403
    program.refresh_from_db()
    assert program.name == "API seen" and ProgramVersion.objects.filter(program=program).count() == 1


def test_another_tenant_cannot_open_or_preview_a_programs_builder(world, client):
    program = api_program(world, slug="private", document=TEMPLATES["give_get"].document("USD"))
    client.force_login(world.marketer_b)

    opened = client.get(reverse("admin:programs_program_builder_edit", args=[program.pk]))
    previewed = client.post(reverse("admin:programs_program_builder_edit_preview", args=[program.pk]), {})
    saved = client.post(reverse("admin:programs_program_builder_edit", args=[program.pk]), {"name": "x"})

    assert (opened.status_code, previewed.status_code, saved.status_code) == (404, 404, 404)
    assert ProgramVersion.objects.filter(program=program).count() == 1


# --- editing a live program ------------------------------------------------------------------------
def test_editing_an_active_program_shows_the_90_day_replay_before_saving_a_new_version(world, client):
    program = api_program(world, slug="live", document=TEMPLATES["give_get"].document("USD"))
    Program.objects.filter(pk=program.pk).update(status=ProgramStatus.ACTIVE)
    client.force_login(world.marketer_a)
    url = reverse("admin:programs_program_builder_edit", args=[program.pk])
    values = {**builder_values(client, url), "referrer-0-amount": "75.00 USD"}

    first = client.post(url, values)
    assert first.status_code == 200 and 'id="replay-preview"' in first.content.decode()
    assert ProgramVersion.objects.filter(program=program).count() == 1

    confirmed = client.post(url, {**values, "confirm": "1"})
    assert confirmed.status_code == 302
    assert latest_rules(program)["referrer"][0]["amount_minor"] == 7_500
    assert ProgramVersion.objects.filter(program=program).count() == 2


# --- the live panel ------------------------------------------------------------------------------
def test_the_live_panel_states_the_offer_terms_and_a_worked_example(world, client):
    client.force_login(world.marketer_a)
    values = builder_values(client, reverse(BUILDER) + "?template=give_get")
    values["landing_url"] = "https://tenant-a.example/"

    body = client.post(reverse("admin:programs_program_builder_preview"), values).json()
    broken = client.post(
        reverse("admin:programs_program_builder_preview"), {**values, "referrer-0-amount": "lots"}
    ).json()

    assert body["ok"] and body["offer"] == "Give a friend a free month — get 50.00 USD when they subscribe."
    assert any(s["title"] == "What you earn" for s in body["sections"])
    assert body["example"][1].startswith("Dana earns 50.00 USD")
    assert not broken["ok"] and broken["errors"]["referrer-0-amount"] == ["Write an amount such as 50.00 USD."]
    assert not Program.objects.filter(tenant=world.a).exists()


def test_worked_example_adds_up_a_year_of_payments():
    document = validate_rules(TEMPLATES["affiliate"].document("USD"))
    lines = worked_example(document)
    assert "pays 100.00 USD a month for a year (1,200.00 USD)" in lines[0]
    assert lines[1].startswith("Dana earns 240.00 USD")


@pytest.mark.parametrize(
    ("key", "sentence"),
    [
        ("give_get", "Give a friend a free month — get 50.00 USD when they subscribe."),
        ("affiliate", "Refer a customer — get 20 % of every payment for 12 months."),
        (
            "employee_bounty",
            "Refer a friend — get 100.00 USD when they are qualified and 500.00 USD when they subscribe.",
        ),
    ],
    ids=["give-get", "affiliate", "employee"],
)
def test_program_offer_sentence_says_the_offer_in_words(key, sentence):
    template = TEMPLATES[key]
    program = Program(kind=template.settings["kind"])
    assert program_offer_sentence(program, template.document("USD")) == sentence
    assert program_offer_sentence(program, {"bad": "rules"}) == ""


def test_builder_pages_for_the_owner_load(world, client):
    program = f.ProgramFactory(tenant=world.a)
    f.ProgramVersionFactory(program=program)
    client.force_login(world.owner_a)
    for url in [
        reverse(BUILDER),
        reverse(BUILDER) + "?template=partner_tiers",
        reverse("admin:programs_program_builder_edit", args=[program.pk]),
        reverse("admin:programs_program_changelist"),
        reverse("admin:programs_program_change", args=[program.pk]),
    ]:
        assert client.get(url).status_code == 200, url
