"""Money shown one way: every amount the admin, the statement (page and CSV), the participant's
dashboard and their e-mails show goes through referral_platform/money.py, in the currency's own
exponent: 500 JPY (0 decimals), 12.34 USD (2), 1.234 KWD (3).

One program per currency, each with a participant, a conversion with its attribution, a referral, a
reward taken through the ledger to a paid payout, an evaluation and payout settings; every admin
changelist and change page that shows money is rendered for a logged-in marketer.
"""

from __future__ import annotations

import csv
import io
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta
from html.parser import HTMLParser

import pytest
from django.urls import reverse
from django.utils import timezone

from programs.dashboard_links import dashboard_path
from referral_platform.money import format_money, format_money_fields
from referral_platform.tenancy.actors import Actor, system_actor
from referral_platform.tenancy.models import Role
from referrals.models import ReferralStatus
from rewards.ledger import participant_account
from rewards.models import AccountKind, LedgerTransaction, ParticipantMessage, RewardStatus
from rewards.payouts import payout_mark_fulfilled, payout_prepare
from rewards.services import reward_approve, reward_create
from tests import factories as f

# amount in minor units, and how it must read
CURRENCIES = {
    "JPY": (500, "500 JPY"),
    "USD": (1234, "12.34 USD"),
    "KWD": (1234, "1.234 KWD"),
}
# What dividing by 100 whatever the currency (the old admin helper), or showing minor units, gives.
WRONG = {
    "JPY": ["5.00 JPY", "500.00 JPY"],
    "USD": ["1234 USD", "1,234.00 USD", "1,234 USD"],
    "KWD": ["12.34 KWD", "1234 KWD", "1,234.00 KWD", "1,234 KWD"],
}
FORMATTED = re.compile(r"^(-?[\d,]+(\.\d+)? (JPY|USD|KWD)|—|-|)$")


@dataclass
class Books:
    """One currency's rows."""

    currency: str
    amount: int
    shown: str
    program: object
    participant: object
    referral: object
    event: object
    attribution: object
    reward: object
    payout: object
    payout_settings: object
    evaluation: object


def _books(tenant, marketer, currency: str) -> Books:
    amount, shown = CURRENCIES[currency]
    program = f.ProgramFactory(tenant=tenant, currency=currency, hold_days=0, auto_approve_limit_minor=amount)
    version = f.ProgramVersionFactory(program=program)
    participant = f.ParticipantFactory(program=program, name=f"Money Person {currency}")
    f.ParticipantStripeProfileFactory(participant=participant)  # a Connect account: cash can be paid out
    f.ReferralLinkFactory(participant=participant)
    referral = f.ReferralFactory(
        referrer=participant,
        rule_version=version,
        referred_annual_revenue_minor=amount,
        status=ReferralStatus.CONVERTED,
        converted_at=timezone.now() - timedelta(hours=2),
    )
    event = f.ConversionEventFactory(tenant=tenant, amount_minor=amount, currency=currency, referral=referral)
    attribution = f.AttributionFactory(
        participant=participant,
        conversion_event=event,
        referral=referral,
        rule_version=version,
        amount_minor=amount,
        currency=currency,
        evidence={"conversion": {"kind": "payment", "amount_minor": amount, "currency": currency}, "sequence": []},
    )
    reward = reward_create(
        tenant=tenant,
        program=program,
        participant=participant,
        amount_minor=amount,
        source_key=f"money-{currency}",
        actor=system_actor(tenant),
        conversion_event=event,
        referral=referral,
        explanation={"amount_minor": amount, "currency": currency, "rule_amount_minor": amount},
        explanation_text=f"Flat {shown} per customer",
        now=timezone.now() - timedelta(minutes=5),
    )
    reward_approve(reward=reward, actor=system_actor(tenant))
    payout_settings = f.PayoutSettingsFactory(program=program, minimum_payout_minor=amount)
    [payout] = payout_prepare(participant=participant)
    payout = payout_mark_fulfilled(payout=payout, actor=marketer, reference=f"tr_{currency}")
    reward.refresh_from_db()
    assert reward.status == RewardStatus.PAID and payout.amount_minor == amount
    evaluation = f.RewardEvaluationFactory(
        conversion_event=event,
        referral=referral,
        status="done",
        rewards_created=1,
        detail={"referrer": [{"participant": participant.pk, "rewards": [{"amount_minor": amount}]}]},
    )
    return Books(
        currency, amount, shown, program, participant, referral, event, attribution, reward, payout,
        payout_settings, evaluation,
    )  # fmt: skip


@pytest.fixture
def books(world) -> dict[str, Books]:
    marketer = Actor(kind="member", tenant=world.a, user=world.marketer_a, role=Role.MARKETER)
    return {currency: _books(world.a, marketer, currency) for currency in CURRENCIES}


class FieldValues(HTMLParser):
    """The text the admin shows for each field: changelist cells (``td.field-x``), read-only form rows
    (``div.field-x div.readonly``) and inline cells, by field name."""

    VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"})

    def __init__(self, html: str):
        super().__init__()
        self.values: dict[str, list[str]] = defaultdict(list)
        self.stack: list[dict] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        if tag in self.VOID:
            return
        classes = (dict(attrs).get("class") or "").split()
        field = next((name.removeprefix("field-") for name in classes if name.startswith("field-")), None)
        self.stack.append({"tag": tag, "field": field, "readonly": "readonly" in classes, "text": [], "value": None})

    def handle_endtag(self, tag):
        while self.stack:
            element = self.stack.pop()
            text = " ".join("".join(element["text"]).split())
            if element["readonly"]:
                holder = next((e for e in reversed(self.stack) if e["field"]), None)
                if holder is not None:
                    holder["value"] = text
            if element["field"]:
                self.values[element["field"]].append(text if element["value"] is None else element["value"])
            if element["tag"] == tag:
                return

    def handle_data(self, data):
        for element in self.stack:
            element["text"].append(data)


def _page(client, url, params=None) -> str:
    response = client.get(url, params or {})
    assert response.status_code == 200, (url, response.status_code)
    return response.content.decode()


def _assert_money_fields(page: str, fields: list[str], books: Books, *, where: str):
    """Each named field shows formatted money, this currency's amount among them; no wrong form anywhere."""
    values = FieldValues(page).values
    for field in fields:
        assert values[field], f"{where}: no {field!r} shown"
        bare = [value for value in values[field] if not FORMATTED.match(value)]
        assert not bare, f"{where}: {field!r} shows {bare}, not formatted money"
    assert any(books.shown in value for field in fields for value in values[field]), (
        f"{where}: {books.shown!r} is not among {[values[field] for field in fields]}"
    )
    _assert_no_wrong_form(page, books, where=where)


def _assert_no_wrong_form(text: str, books: Books, *, where: str):
    # Inputs are left out: a marketer edits minor units (the rules JSON, an amount field).
    text = re.sub(r"<textarea[^>]*>.*?</textarea>", "", text, flags=re.S)
    for wrong in WRONG[books.currency]:
        assert wrong not in text, f"{where}: shows {wrong!r} (expected {books.shown!r})"
    assert not re.search(rf'_minor&quot;: {books.amount}\b|_minor": {books.amount}\b', text), (
        f"{where}: a JSON document shows the raw {books.amount} in minor units"
    )


def _admin(name: str, *args) -> str:
    return reverse(f"admin:{name}", args=args)


# (admin changelist URL name, money columns, filter narrowing the list to one currency's rows)
CHANGELISTS = {
    "reward": ("rewards_reward_changelist", ["amount", "net"], lambda b: {"program__id__exact": b.program.pk}),
    "payout": ("rewards_payout_changelist", ["amount"], lambda b: {"program__id__exact": b.program.pk}),
    "ledger account": ("rewards_ledgeraccount_changelist", ["balance"], lambda b: {"currency": b.currency}),
    "payout settings": ("rewards_payoutsettings_changelist", ["minimum_payout_shown"], lambda b: {}),
    "conversion event": (
        "referrals_conversionevent_changelist",
        ["amount"],
        lambda b: {"q": b.event.external_event_id},
    ),
    "attribution": ("referrals_attribution_changelist", ["amount"], lambda b: {"program__id__exact": b.program.pk}),
}


@pytest.mark.parametrize("currency", list(CURRENCIES))
@pytest.mark.parametrize("changelist", list(CHANGELISTS))
def test_admin_lists_show_each_amount_in_its_currency_exponent(client, world, books, changelist, currency):
    client.force_login(world.marketer_a)
    name, fields, narrow = CHANGELISTS[changelist]
    mine = books[currency]

    page = _page(client, _admin(name), narrow(mine))

    _assert_money_fields(page, fields, mine, where=f"{changelist} list")


# (change page URL name, the object's attribute, money fields shown on it)
CHANGE_PAGES = {
    "reward": ("rewards_reward_change", "reward", ["amount", "net", "reversed", "clawed_back"]),
    "payout": ("rewards_payout_change", "payout", ["gross", "amount"]),
    "payout settings": ("rewards_payoutsettings_change", "payout_settings", ["minimum_payout_shown"]),
    "conversion event": ("referrals_conversionevent_change", "event", ["amount"]),
    "attribution": ("referrals_attribution_change", "attribution", ["amount"]),
    "referral": ("referrals_referral_change", "referral", ["referred_annual_revenue_shown"]),
    "program": ("programs_program_change", "program", ["auto_approve_limit_shown"]),
}


@pytest.mark.parametrize("currency", list(CURRENCIES))
@pytest.mark.parametrize("change_page", list(CHANGE_PAGES))
def test_admin_change_pages_show_each_amount_in_its_currency_exponent(client, world, books, change_page, currency):
    client.force_login(world.marketer_a)
    name, attribute, fields = CHANGE_PAGES[change_page]
    mine = books[currency]

    page = _page(client, _admin(name, getattr(mine, attribute).pk))

    _assert_money_fields(page, fields, mine, where=f"{change_page} page")


@pytest.mark.parametrize("currency", list(CURRENCIES))
def test_ledger_pages_and_json_documents_show_formatted_amounts(client, world, books, currency):
    client.force_login(world.marketer_a)
    mine = books[currency]
    accrual = LedgerTransaction.objects.get(reward=mine.reward, kind="accrual")
    paid_account = participant_account(mine.participant, AccountKind.PAID, currency)

    transaction_page = _page(client, _admin("rewards_ledgertransaction_change", accrual.pk))
    account_page = _page(client, _admin("rewards_ledgeraccount_change", paid_account.pk))
    transactions = _page(client, _admin("rewards_ledgertransaction_changelist"), {"q": f"reward:{mine.reward.pk}"})
    reward_page = _page(client, _admin("rewards_reward_change", mine.reward.pk))
    evaluation_page = _page(client, _admin("rewards_rewardevaluation_change", mine.evaluation.pk))
    attribution_page = _page(client, _admin("referrals_attribution_change", mine.attribution.pk))

    _assert_money_fields(transaction_page, ["amount"], mine, where="ledger transaction entries")
    _assert_money_fields(account_page, ["balance"], mine, where="ledger account page")
    assert "-" + mine.shown in FieldValues(transaction_page).values["amount"]  # the credit leg, signed
    assert mine.shown in " ".join(FieldValues(transactions).values["reward"]), "a reward reads with its amount"
    event_page = FieldValues(_page(client, _admin("referrals_conversionevent_change", mine.event.pk))).values
    assert event_page["amount"] == [mine.shown, mine.shown], "the event's amount, then its attribution's (inline)"
    for where, page in (("reward", reward_page), ("evaluation", evaluation_page), ("attribution", attribution_page)):
        assert f"&quot;: &quot;{mine.shown}&quot;" in page, f"{where}: the JSON document does not show {mine.shown}"
        _assert_no_wrong_form(page, mine, where=f"{where} JSON")


def test_a_viewer_sees_editable_amounts_formatted_in_place_of_the_number(client, world, books):
    client.force_login(world.viewer_a)
    mine = books["KWD"]

    page = _page(client, _admin("programs_program_change", mine.program.pk))

    values = FieldValues(page).values
    assert values["auto_approve_limit_shown"] == [mine.shown]
    assert 'name="auto_approve_limit_minor"' not in page and "auto_approve_limit_minor" not in values


@pytest.mark.parametrize("currency", list(CURRENCIES))
def test_the_statement_page_and_csv_show_each_amount_in_its_currency_exponent(client, world, books, currency):
    client.force_login(world.marketer_a)
    mine = books[currency]
    today = timezone.now().date()
    query = {"participant": mine.participant.pk, "start": str(today - timedelta(days=1)), "end": str(today)}

    page = _page(client, _admin("rewards_statement"), query)
    download = client.get(_admin("rewards_statement"), {**query, "format": "csv"})

    assert mine.shown in page and "reconciled" in page
    assert not re.search(r"<td>\s*-?\d+\s*</td>", page), "a statement cell shows a bare number"
    _assert_no_wrong_form(page, mine, where="statement page")
    rows = list(csv.reader(io.StringIO(download.content.decode())))
    header = rows[2]
    entries = [dict(zip(header, row, strict=True)) for row in rows[3:]]
    assert header[4:6] == ["amount_minor", "amount"]
    assert all(entry["amount"] == format_money(int(entry["amount_minor"]), currency) for entry in entries)
    paid = [entry for entry in entries if entry["row"] == "entry" and entry["account"] == "paid"]
    assert [(entry["amount_minor"], entry["amount"]) for entry in paid] == [(str(mine.amount), mine.shown)]
    closing = {entry["account"]: entry["amount"] for entry in entries if entry["row"] == "closing"}
    assert closing["paid"] == mine.shown


@pytest.mark.parametrize("currency", list(CURRENCIES))
def test_the_participant_dashboard_and_emails_show_each_amount_in_its_currency_exponent(client, world, books, currency):
    mine = books[currency]

    page = _page(client, dashboard_path(mine.participant))
    emails = list(ParticipantMessage.objects.filter(participant=mine.participant, kind__startswith="reward_"))

    values = re.findall(r"<strong>([^<]*)</strong>", page.split('id="balances"', 1)[1].split("</div>\n", 1)[0])
    assert mine.shown in page and all(FORMATTED.match(value) for value in values)
    _assert_no_wrong_form(page, mine, where="dashboard")
    assert {message.kind for message in emails} >= {"reward_approved", "reward_paid"}
    for message in emails:
        assert mine.shown in message.subject and mine.shown in message.body, message.body
        _assert_no_wrong_form(message.subject + message.body, mine, where=f"e-mail {message.kind}")


@pytest.mark.parametrize(
    ("document", "currency", "shown"),
    [
        ({"amount_minor": 500, "currency": "JPY"}, "", {"amount": "500 JPY", "currency": "JPY"}),
        (
            {"rewards": [{"amount_minor": 1234}], "total_minor": 1234},
            "KWD",
            {"rewards": [{"amount": "1.234 KWD"}], "total": "1.234 KWD"},
        ),
        (
            {"conversion": {"amount_minor": 1234, "currency": "USD"}, "cap_minor": 5},
            "JPY",
            {"conversion": {"amount": "12.34 USD", "currency": "USD"}, "cap": "5 JPY"},
        ),
        ({"amount_minor": 1234}, "", {"amount_minor": 1234}),
        (
            {"amount_minor": None, "flag_minor": True, "amount": 1},
            "USD",
            {"amount_minor": None, "flag_minor": True, "amount": 1},
        ),
    ],
    ids=["own-currency", "inherited-currency", "nearest-currency-wins", "no-currency-kept", "non-amounts-kept"],
)
def test_format_money_fields_formats_minor_amounts_in_the_nearest_currency(document, currency, shown):
    assert format_money_fields(document, currency) == shown
