"""The program builder: a guided form that writes the same rules document as the JSON API.

A marketer types amounts in the program's currency ("50.00 USD", "500 JPY") and percentages as percent
("12.5"); ``ProgramBuilder`` turns the form into the program's settings and a rules document
(``programs.rules``), validated by the same services the API uses (``program_validate``,
``rules_validate``), and maps every error back onto the form field that caused it, in words.

Steps (sections of one page): the program (kind, access) → who gets what (a list of rewards for the
referrer and for the referred company) → when it pays → limits → eligibility and qualification →
cancellation → review. ``TEMPLATES`` are starting points; ``rules_to_rows`` fills the form from an
existing document, so an existing program opens in the builder as it is.

No database writes here: the admin view saves through ``programs.services``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.forms import formset_factory
from django.utils.text import slugify

from referral_platform.money import (
    MoneyInputError,
    currency_exponent,
    format_money,
    money_input_text,
    parse_money,
    parse_percent,
    percent_input_text,
)

from . import rules as R
from .models import AttributionModel, Program, ProgramAccess, ProgramKind, ProgramStatus, ProgramVersion
from .services import PROGRAM_EDITABLE_FIELDS, program_validate, rules_validate

# --- the reward types a marketer picks from ------------------------------------------------------
REWARD_TYPES = [
    ("", "— no reward —"),
    (R.FLAT_PER_CONVERSION, "Cash: a flat amount per new paying customer"),
    (R.FLAT_PER_LEAD, "Cash: a flat amount per sign-up or qualified lead"),
    (R.PERCENT_OF_REVENUE, "Cash: a % of the first payment"),
    (R.RECURRING_PERCENT, "Cash: a % of every payment, for N months (recurring)"),
    (R.TIERED, "Cash: tiers that grow with the number of referrals"),
    (R.ACCOUNT_CREDIT, "Account credit"),
    (R.FREE_MONTHS, "Free months of the subscription"),
    (R.RENEWAL_DISCOUNT, "A % off the next renewal"),
    (R.FEATURE_UNLOCK, "A feature unlocked"),
    (R.GIFT, "A gift"),
]
PAYS_WHEN = [
    ("", "The usual moment for this reward"),
    (R.ON_SIGN_UP, "At sign-up"),
    (R.ON_QUALIFIED, "When the lead is qualified"),
    (R.ON_CONVERSION, "At the first payment (conversion)"),
    (R.ON_PAYMENT, "On every payment (recurring)"),
]
PAYS_WHEN_LABEL = dict(PAYS_WHEN)
# Which inputs each reward type uses: (required, optional). Others are ignored for that type.
TYPE_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    R.FLAT_PER_LEAD: (("amount",), ()),
    R.FLAT_PER_CONVERSION: (("amount",), ("per_seat", "max_seats", "max_amount")),
    R.PERCENT_OF_REVENUE: (("percent",), ("max_amount",)),
    R.RECURRING_PERCENT: (("percent", "months"), ("max_amount",)),
    R.TIERED: (("tiers",), ("per_seat", "max_seats", "max_amount")),
    R.ACCOUNT_CREDIT: (("amount",), ("per_seat", "max_seats", "max_amount")),
    R.FREE_MONTHS: (("months",), ()),
    R.RENEWAL_DISCOUNT: (("percent",), ()),
    R.FEATURE_UNLOCK: (("feature",), ("months",)),
    R.GIFT: (("gift",), ("gift_value",)),
}
# A document key of a rule → the builder input that holds it.
RULE_KEY_TO_FIELD = {
    "kind": "kind",
    "on": "on",
    "amount_minor": "amount",
    "percent_bp": "percent",
    "months": "months",
    "tiers": "tiers",
    "per_seat": "per_seat",
    "max_seats": "max_seats",
    "max_amount_minor": "max_amount",
    "feature": "feature",
    "gift": "gift",
    "value_minor": "gift_value",
    "description": "description",
}
FIELD_LABELS = {
    "amount": "Amount",
    "percent": "Percent",
    "months": "Months",
    "tiers": "Tiers",
    "feature": "Feature",
    "gift": "Gift",
}
# Rules document paths (outside the reward lists) → builder inputs.
DOCUMENT_PATH_TO_FIELD = {
    "rules.caps.referrer_rewarded_referrals": "cap_max",
    "rules.caps.referrer_rewarded_referrals.max": "cap_max",
    "rules.caps.referrer_rewarded_referrals.period": "cap_period",
    "rules.caps.max_bill_discount_bp": "max_bill_discount",
    "rules.eligibility.industries": "industries",
    "rules.eligibility.company_size.min": "company_size_min",
    "rules.eligibility.company_size.max": "company_size_max",
    "rules.eligibility.annual_revenue_minor.min": "revenue_min",
    "rules.eligibility.annual_revenue_minor.max": "revenue_max",
    "rules.cancellation.policy": "cancellation_policy",
    "rules.cancellation.within_days": "cancellation_within_days",
    "rules.currency": "currency",
    "auto_approve_limit_minor": "auto_approve_limit",
}
_TIER_LINE = re.compile(
    r"^\s*(?:from\s+)?(?P<n>\d+)(?:\s*(?:st|nd|rd|th))?(?:\s+referrals?)?\s*[:=]\s*(?P<value>.+?)\s*$", re.I
)


def _input_error(field_name: str, exc: MoneyInputError) -> ValidationError:
    return ValidationError({field_name: str(exc)})


# --- templates: starting points ------------------------------------------------------------------
@dataclass(frozen=True)
class ProgramTemplate:
    key: str
    title: str
    summary: str
    settings: Mapping[str, Any]
    rules: Any  # callable(currency) -> rules document (without defaults)

    def document(self, currency: str) -> dict:
        return {"schema_version": R.SCHEMA_VERSION, "currency": currency, **self.rules(currency)}


def _major(currency: str, amount: int) -> int:
    """``amount`` whole units of ``currency`` in minor units."""
    return amount * 10 ** currency_exponent(currency)


TEMPLATES: dict[str, ProgramTemplate] = {
    template.key: template
    for template in [
        ProgramTemplate(
            key="give_get",
            title="Give a friend a free month, get 50",
            summary="Double-sided customer referral: the friend gets a free month, the referrer 50 in cash when "
            "the friend subscribes.",
            settings={"kind": ProgramKind.CUSTOMER, "access": ProgramAccess.OPEN},
            rules=lambda c: {
                "referrer": [{"kind": R.FLAT_PER_CONVERSION, "amount_minor": _major(c, 50)}],
                "referred": [{"kind": R.FREE_MONTHS, "months": 1, "on": R.ON_CONVERSION}],
                "caps": {"referrer_rewarded_referrals": {"max": 12, "period": "year"}},
            },
        ),
        ProgramTemplate(
            key="affiliate",
            title="Affiliate: 20 % recurring for 12 months",
            summary="Partners earn 20 % of every payment of the customers they bring, for their first year.",
            settings={"kind": ProgramKind.PARTNER, "access": ProgramAccess.GATED},
            rules=lambda c: {
                "referrer": [{"kind": R.RECURRING_PERCENT, "percent_bp": 2_000, "months": 12}],
                "referred": [],
            },
        ),
        ProgramTemplate(
            key="reseller",
            title="Reseller: 30 % margin",
            summary="Resellers keep 30 % of every payment of the customers they sell to (for up to ten years).",
            settings={"kind": ProgramKind.RESELLER, "access": ProgramAccess.INVITE_ONLY},
            rules=lambda c: {
                "referrer": [{"kind": R.RECURRING_PERCENT, "percent_bp": 3_000, "months": 120}],
                "referred": [],
                "cancellation": {"policy": "forfeit_unpaid", "within_days": 30},
            },
        ),
        ProgramTemplate(
            key="employee_bounty",
            title="Employee referral bounty",
            summary="Employees earn 100 per qualified lead and 500 per new customer they introduce.",
            settings={"kind": ProgramKind.EMPLOYEE, "access": ProgramAccess.INVITE_ONLY},
            rules=lambda c: {
                "referrer": [
                    {"kind": R.FLAT_PER_LEAD, "amount_minor": _major(c, 100), "on": R.ON_QUALIFIED},
                    {"kind": R.FLAT_PER_CONVERSION, "amount_minor": _major(c, 500)},
                ],
                "referred": [],
                "qualification": {"budget": True, "need": True},
                "cancellation": {"policy": "keep", "within_days": 0},
            },
        ),
        ProgramTemplate(
            key="partner_tiers",
            title="Partner tiers",
            summary="A share that grows with volume (10 %, 15 % from the 5th customer, 20 % from the 10th); gold "
            "partners get 25 % of every payment for a year.",
            settings={"kind": ProgramKind.PARTNER, "access": ProgramAccess.GATED},
            rules=lambda c: {
                "referrer": [
                    {
                        "kind": R.TIERED,
                        "tiers": [
                            {"min_referrals": 1, "percent_bp": 1_000},
                            {"min_referrals": 5, "percent_bp": 1_500},
                            {"min_referrals": 10, "percent_bp": 2_000},
                        ],
                    }
                ],
                "referred": [{"kind": R.RENEWAL_DISCOUNT, "percent_bp": 1_000}],
                "partner_tiers": {
                    "gold": {"referrer": [{"kind": R.RECURRING_PERCENT, "percent_bp": 2_500, "months": 12}]}
                },
            },
        ),
    ]
}


# --- forms ------------------------------------------------------------------------------------
class RewardForm(forms.Form):
    """One reward of one side. Only the inputs its type uses are read (TYPE_FIELDS)."""

    kind = forms.ChoiceField(label="Reward", choices=REWARD_TYPES, required=False)
    on = forms.ChoiceField(label="Pays when", choices=PAYS_WHEN, required=False)
    amount = forms.CharField(label="Amount", required=False, max_length=40, help_text="e.g. 50.00 USD")
    percent = forms.CharField(label="Percent", required=False, max_length=12, help_text="e.g. 12.5 for 12.5 %")
    months = forms.IntegerField(label="Months", required=False, min_value=1, max_value=120)
    tiers = forms.CharField(
        label="Tiers",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 28}),
        help_text="One tier a line: “from 5: 75.00 USD” or “from 10: 15 %”.",
    )
    per_seat = forms.BooleanField(label="Per seat the customer buys", required=False)
    max_seats = forms.IntegerField(label="Seats counted at most", required=False, min_value=1, max_value=100_000)
    max_amount = forms.CharField(label="At most, each time", required=False, max_length=40)
    feature = forms.CharField(label="Feature", required=False, max_length=100)
    gift = forms.CharField(label="Gift", required=False, max_length=200)
    gift_value = forms.CharField(label="Gift's cost to you", required=False, max_length=40)
    description = forms.CharField(label="Note shown in the terms", required=False, max_length=300)
    partner_tier = forms.CharField(
        label="Only for partners of tier",
        required=False,
        max_length=40,
        help_text="Leave empty for everyone; “gold” makes it the reward of gold partners instead.",
    )

    def __init__(self, *args, currency: str = "USD", side: str = "referrer", **kwargs):
        super().__init__(*args, **kwargs)
        self.currency = currency
        self.side = side
        if side != "referrer":
            del self.fields["partner_tier"]
        self.rule: dict | None = None
        self.tier_name = ""

    def _money(self, name: str) -> int | None:
        text = self.cleaned_data.get(name) or ""
        if not text.strip():
            return None
        try:
            return parse_money(text, self.currency)
        except MoneyInputError as exc:
            self.add_error(name, str(exc))
            return None

    def _percent(self, name: str) -> int | None:
        text = self.cleaned_data.get(name) or ""
        if not text.strip():
            return None
        try:
            return parse_percent(text)
        except MoneyInputError as exc:
            self.add_error(name, str(exc))
            return None

    def _tiers(self) -> list[dict] | None:
        text = self.cleaned_data.get("tiers") or ""
        tiers, problems = [], []
        for number, line in enumerate((line for line in text.splitlines() if line.strip()), start=1):
            match = _TIER_LINE.match(line)
            if not match:
                problems.append(f"Line {number}: write “from 5: 75.00 {self.currency}” or “from 5: 15 %”.")
                continue
            value = match["value"]
            try:
                if value.rstrip().endswith("%"):
                    tiers.append({"min_referrals": int(match["n"]), "percent_bp": parse_percent(value)})
                else:
                    tiers.append({"min_referrals": int(match["n"]), "amount_minor": parse_money(value, self.currency)})
            except MoneyInputError as exc:
                problems.append(f"Line {number}: {exc}")
        if problems:
            self.add_error("tiers", problems)
            return None
        return tiers

    def clean(self):
        cleaned = super().clean()
        kind = cleaned.get("kind") or ""
        self.tier_name = (cleaned.get("partner_tier") or "").strip().lower()
        if not kind:
            return cleaned
        required, optional = TYPE_FIELDS[kind]
        used = set(required) | set(optional)
        rule: dict[str, Any] = {"kind": kind}
        on = cleaned.get("on") or ""
        if on:
            if on not in R.ALLOWED_ON[kind]:
                allowed = ", ".join(PAYS_WHEN_LABEL[name].lower() for name in R.ALLOWED_ON[kind])
                self.add_error("on", f"This reward can be paid: {allowed}.")
            rule["on"] = on
        for name in required:
            value = cleaned.get(name)
            if value in (None, "") or (isinstance(value, str) and not value.strip()):
                self.add_error(name, f"{FIELD_LABELS[name]} is needed for this reward.")
        if "amount" in used and (amount := self._money("amount")) is not None:
            rule["amount_minor"] = amount
        if "percent" in used and (percent := self._percent("percent")) is not None:
            rule["percent_bp"] = percent
        if "months" in used and cleaned.get("months") is not None:
            rule["months"] = cleaned["months"]
        if "tiers" in used and (cleaned.get("tiers") or "").strip():
            tiers = self._tiers()
            if tiers is not None:
                rule["tiers"] = tiers
        if "per_seat" in used:
            rule["per_seat"] = bool(cleaned.get("per_seat"))
            if cleaned.get("max_seats") is not None:
                rule["max_seats"] = cleaned["max_seats"]
        if "max_amount" in used and (maximum := self._money("max_amount")) is not None:
            rule["max_amount_minor"] = maximum
        for name in ("feature", "gift"):
            if name in used and (cleaned.get(name) or "").strip():
                rule[name] = cleaned[name].strip()
        if "gift_value" in used and (value := self._money("gift_value")) is not None:
            rule["value_minor"] = value
        if (cleaned.get("description") or "").strip():
            rule["description"] = cleaned["description"].strip()
        self.rule = rule
        return cleaned


RewardFormSet = formset_factory(RewardForm, extra=1, max_num=R.MAX_RULES_PER_SIDE * 3, validate_max=True)


class ProgramBuilderForm(forms.Form):
    # 1. The program
    name = forms.CharField(max_length=200)
    slug = forms.SlugField(
        max_length=80, required=False, help_text="Part of the program's public addresses; made from the name if empty."
    )
    description = forms.CharField(max_length=2000, required=False, widget=forms.Textarea(attrs={"rows": 2, "cols": 60}))
    kind = forms.ChoiceField(label="Who refers", choices=ProgramKind.choices)
    access = forms.ChoiceField(label="Who may join", choices=ProgramAccess.choices)
    landing_url = forms.URLField(
        label="Landing page", max_length=500, help_text="Where referral links send visitors (an allowed domain)."
    )
    currency = forms.RegexField(
        r"^[A-Za-z]{3}$",
        max_length=3,
        help_text="Three letters, e.g. USD.",
        error_messages={"invalid": "Use a three-letter currency code such as USD."},
    )
    # 3. When it pays
    hold_days = forms.IntegerField(
        label="Hold rewards for (days)", min_value=0, max_value=365, help_text="Long enough for refunds to settle."
    )
    auto_approve_limit = forms.CharField(
        label="Approve automatically up to",
        max_length=40,
        help_text="Larger rewards wait for a person to approve them; 0 reviews every reward.",
    )
    cookie_window_days = forms.IntegerField(
        label="A link counts for (days)", min_value=1, max_value=365, help_text="How long after the click."
    )
    attribution_model = forms.ChoiceField(label="When several people referred", choices=AttributionModel.choices)
    time_decay_half_life_days = forms.IntegerField(label="Time-decay half-life (days)", min_value=1, max_value=365)
    # 4. Limits
    cap_max = forms.IntegerField(
        label="Referrals rewarded per referrer at most",
        required=False,
        min_value=1,
        max_value=100_000,
        help_text="Empty: no limit.",
    )
    cap_period = forms.ChoiceField(label="per", choices=[(p, p) for p in R.PERIODS], initial="year")
    max_bill_discount = forms.CharField(label="Discounts take at most (% of one bill)", max_length=12, initial="100")
    # 5. Eligibility and qualification
    industries = forms.CharField(
        label="Industries accepted", required=False, max_length=2000, help_text="Comma-separated; empty: any."
    )
    company_size_min = forms.IntegerField(label="Employees, at least", required=False, min_value=0)
    company_size_max = forms.IntegerField(label="Employees, at most", required=False, min_value=0)
    revenue_min = forms.CharField(label="Annual revenue, at least", required=False, max_length=40)
    revenue_max = forms.CharField(label="Annual revenue, at most", required=False, max_length=40)
    qualify_budget = forms.BooleanField(label="Budget confirmed", required=False)
    qualify_authority = forms.BooleanField(label="Decision maker involved", required=False)
    qualify_need = forms.BooleanField(label="Need confirmed", required=False)
    qualify_timeline = forms.BooleanField(label="Timeline agreed", required=False)
    # 6. Cancellation
    cancellation_policy = forms.ChoiceField(
        label="If the customer cancels",
        choices=[
            ("clawback", "Take rewards back (unpaid ones cancelled, paid ones deducted)"),
            ("forfeit_unpaid", "Cancel unpaid rewards; paid ones are kept"),
            ("keep", "Rewards are kept"),
        ],
    )
    cancellation_within_days = forms.IntegerField(label="…within (days)", min_value=0, max_value=730)
    # 7. Review
    note = forms.CharField(label="Why (kept with the version)", max_length=300, required=False)

    def __init__(self, *args, currency: str = "USD", **kwargs):
        super().__init__(*args, **kwargs)
        self.currency = currency
        self.amounts: dict[str, int | None] = {}

    def clean_currency(self):
        return self.cleaned_data["currency"].upper()

    def clean(self):
        cleaned = super().clean()
        for name in ("auto_approve_limit", "revenue_min", "revenue_max"):
            text = (cleaned.get(name) or "").strip()
            if not text:
                self.amounts[name] = None
                continue
            try:
                self.amounts[name] = parse_money(text, self.currency)
            except MoneyInputError as exc:
                self.add_error(name, str(exc))
        text = (cleaned.get("max_bill_discount") or "").strip()
        try:
            self.amounts["max_bill_discount"] = parse_percent(text) if text else R.BASIS_POINTS
        except MoneyInputError as exc:
            self.add_error("max_bill_discount", str(exc))
        return cleaned


# --- documents ↔ form values -----------------------------------------------------------------
def rule_to_row(rule: Mapping, currency: str, tier_name: str = "") -> dict:
    row: dict[str, Any] = {"kind": rule["kind"], "on": rule.get("on", "")}
    if "amount_minor" in rule:
        row["amount"] = money_input_text(rule["amount_minor"], currency)
    if "percent_bp" in rule:
        row["percent"] = percent_input_text(rule["percent_bp"])
    if "months" in rule:
        row["months"] = rule["months"]
    if "tiers" in rule:
        lines = []
        for tier in rule["tiers"]:
            value = (
                money_input_text(tier["amount_minor"], currency)
                if "amount_minor" in tier
                else f"{percent_input_text(tier['percent_bp'])} %"
            )
            lines.append(f"from {tier['min_referrals']}: {value}")
        row["tiers"] = "\n".join(lines)
    row["per_seat"] = bool(rule.get("per_seat"))
    if rule.get("max_seats"):
        row["max_seats"] = rule["max_seats"]
    if "max_amount_minor" in rule:
        row["max_amount"] = money_input_text(rule["max_amount_minor"], currency)
    for key in ("feature", "gift", "description"):
        if rule.get(key):
            row[key] = rule[key]
    if "value_minor" in rule:
        row["gift_value"] = money_input_text(rule["value_minor"], currency)
    if tier_name:
        row["partner_tier"] = tier_name
    return row


def rules_to_rows(document: Mapping) -> dict[str, list[dict]]:
    currency = document["currency"]
    referrer = [rule_to_row(rule, currency) for rule in document.get("referrer", [])]
    for name, tier in sorted((document.get("partner_tiers") or {}).items()):
        referrer += [rule_to_row(rule, currency, name) for rule in tier.get("referrer", [])]
    return {"referrer": referrer, "referred": [rule_to_row(rule, currency) for rule in document.get("referred", [])]}


def settings_initial(program: Program | None, document: Mapping, overrides: Mapping | None = None) -> dict:
    """The main form's initial values from a program's settings and a rules document."""
    currency = document["currency"]
    initial: dict[str, Any] = {}
    if program is not None:
        initial.update({name: getattr(program, name) for name in PROGRAM_EDITABLE_FIELDS})
    initial.update(overrides or {})
    initial["currency"] = currency
    limit = initial.pop("auto_approve_limit_minor", 50_000 if program is None else program.auto_approve_limit_minor)
    initial["auto_approve_limit"] = money_input_text(limit, currency)
    caps = {**R.DEFAULT_CAPS, **document.get("caps", {})}
    cap = caps.get("referrer_rewarded_referrals")
    initial["cap_max"] = cap["max"] if cap else None
    initial["cap_period"] = cap["period"] if cap else "year"
    initial["max_bill_discount"] = percent_input_text(caps["max_bill_discount_bp"])
    eligibility = {**R.DEFAULT_ELIGIBILITY, **document.get("eligibility", {})}
    initial["industries"] = ", ".join(eligibility.get("industries", []))
    size = eligibility.get("company_size", {})
    initial["company_size_min"], initial["company_size_max"] = size.get("min"), size.get("max")
    revenue = eligibility.get("annual_revenue_minor", {})
    for name, key in (("revenue_min", "min"), ("revenue_max", "max")):
        initial[name] = money_input_text(revenue[key], currency) if key in revenue else ""
    qualification = {**R.DEFAULT_QUALIFICATION, **document.get("qualification", {})}
    for name in R.QUALIFICATION_CRITERIA:
        initial[f"qualify_{name}"] = qualification[name]
    cancellation = {**R.DEFAULT_CANCELLATION, **document.get("cancellation", {})}
    initial["cancellation_policy"] = cancellation["policy"]
    initial["cancellation_within_days"] = cancellation["within_days"]
    return initial


NEW_PROGRAM_DEFAULTS = {
    "kind": ProgramKind.CUSTOMER,
    "access": ProgramAccess.OPEN,
    "cookie_window_days": 90,
    "attribution_model": AttributionModel.LAST_TOUCH,
    "time_decay_half_life_days": 7,
    "hold_days": 30,
    "auto_approve_limit_minor": 50_000,
}


# --- the builder --------------------------------------------------------------------------------
@dataclass
class ProgramBuilder:
    """The builder's forms, bound or not, for a new program (``program=None``) or an existing one."""

    form: ProgramBuilderForm
    sides: dict[str, Any]
    program: Program | None = None
    tenant: Any = None
    document: dict | None = None
    settings: dict = field(default_factory=dict)
    side_errors: dict[str, list[str]] = field(default_factory=dict)
    _row_of: dict[str, list[int]] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        *,
        tenant,
        program: Program | None = None,
        document: Mapping | None = None,
        data: Mapping | None = None,
        template: str | None = None,
        read_only: bool = False,
    ) -> ProgramBuilder:
        """``data``: a POST; else the form is filled from ``template`` (new programs) or ``document``."""
        currency = (program.currency if program is not None else tenant.default_currency) or "USD"
        overrides: dict[str, Any] = {}
        if data is None and template in TEMPLATES:
            chosen = TEMPLATES[template]
            document = chosen.document(currency)
            overrides = {**NEW_PROGRAM_DEFAULTS, **dict(chosen.settings)} if program is None else {}
            if program is None:
                overrides["name"] = chosen.title
        if document is None:
            document = R.empty_rules(currency)
        if program is None and not overrides:
            overrides = dict(NEW_PROGRAM_DEFAULTS)
        if data is not None:
            posted = str(data.get("currency") or "").strip().upper()
            if re.fullmatch(r"[A-Z]{3}", posted) and (program is None or program.status == ProgramStatus.DRAFT):
                currency = posted
        initial = settings_initial(program, document, overrides)
        if program is None and data is None and tenant is not None:
            initial.setdefault("landing_url", _default_landing_url(tenant))
        rows = rules_to_rows(document)
        form = ProgramBuilderForm(data, initial=initial, currency=currency)
        sides = {
            side: RewardFormSet(
                data, prefix=side, initial=rows[side] or None, form_kwargs={"currency": currency, "side": side}
            )
            for side in R.SIDES
        }
        if program is not None and program.status != ProgramStatus.DRAFT:
            form.fields["currency"].disabled = True
            form.fields["currency"].help_text = "The currency can only change while the program is a draft."
        if read_only:
            for each in [form, *(f for formset in sides.values() for f in formset.forms)]:
                for bound_field in each.fields.values():
                    bound_field.disabled = True
        return cls(form=form, sides=sides, program=program, tenant=tenant)

    # --- validation ---------------------------------------------------------------------------
    def is_valid(self) -> bool:
        forms_ok = self.form.is_valid()
        sides_ok = all(formset.is_valid() for formset in self.sides.values())
        # The settings are checked by the service even when a reward row is wrong, so every problem
        # shows at once; the rules only once every row could be read.
        self.settings = self._settings()
        try:
            program_validate(tenant=self.tenant, data=self._changed_settings(), program=self.program)
        except ValidationError as exc:
            self.add_errors(exc)
        if not (forms_ok and sides_ok):
            return False
        self.document = self._document()
        try:
            self.document = rules_validate(program=Program(currency=self.settings["currency"]), rules=self.document)
        except ValidationError as exc:
            self.add_errors(exc)
        return not self.has_errors()

    def has_errors(self) -> bool:
        return bool(
            self.form.errors
            or self.side_errors
            or any(f.errors for formset in self.sides.values() for f in formset.forms)
        )

    def _changed_settings(self) -> dict:
        if self.program is None:
            return self.settings
        return {name: value for name, value in self.settings.items() if getattr(self.program, name) != value}

    def changed_settings(self) -> dict:
        return self._changed_settings()

    def _settings(self) -> dict:
        data = self.form.cleaned_data
        settings = {
            name: data[name] for name in PROGRAM_EDITABLE_FIELDS if name in data and name != "auto_approve_limit_minor"
        }
        if self.form.amounts.get("auto_approve_limit") is not None or "auto_approve_limit" in data:
            settings["auto_approve_limit_minor"] = self.form.amounts.get("auto_approve_limit") or 0
        settings["slug"] = data.get("slug") or (
            self.program.slug if self.program is not None else slugify(data.get("name") or "")[:80]
        )
        if self.program is not None and self.program.status != ProgramStatus.DRAFT:
            settings["currency"] = self.program.currency
        return settings

    def _document(self) -> dict:
        data = self.form.cleaned_data
        currency = (
            data["currency"]
            if self.program is None or self.program.status == ProgramStatus.DRAFT
            else (self.program.currency)
        )
        document: dict[str, Any] = {"schema_version": R.SCHEMA_VERSION, "currency": currency}
        tiers: dict[str, list[dict]] = {}
        self._row_of = {}
        for side, formset in self.sides.items():
            document[side] = []
            self._row_of[side] = []
            for index, row in enumerate(formset.forms):
                if row.rule is None:
                    continue
                if side == "referrer" and row.tier_name:
                    tiers.setdefault(row.tier_name, []).append(row.rule)
                    self._row_of.setdefault(f"partner_tiers.{row.tier_name}.referrer", []).append(index)
                else:
                    document[side].append(row.rule)
                    self._row_of[side].append(index)
        cap_max = data.get("cap_max")
        document["caps"] = {
            "referrer_rewarded_referrals": {"max": cap_max, "period": data["cap_period"]} if cap_max else None,
            "max_bill_discount_bp": self.form.amounts["max_bill_discount"],
        }
        size = {
            key: data[f"company_size_{key}"] for key in ("min", "max") if data.get(f"company_size_{key}") is not None
        }
        revenue = {
            key: self.form.amounts[f"revenue_{key}"]
            for key in ("min", "max")
            if self.form.amounts.get(f"revenue_{key}") is not None
        }
        document["eligibility"] = {
            "industries": [name.strip() for name in (data.get("industries") or "").split(",") if name.strip()],
            "company_size": size,
            "annual_revenue_minor": revenue,
        }
        document["qualification"] = {name: bool(data.get(f"qualify_{name}")) for name in R.QUALIFICATION_CRITERIA}
        document["cancellation"] = {
            "policy": data["cancellation_policy"],
            "within_days": data["cancellation_within_days"],
        }
        if tiers:
            document["partner_tiers"] = {name: {"referrer": rules} for name, rules in tiers.items()}
        return document

    # --- errors in words, on the field that caused them ----------------------------------------
    _RULE_PATH = re.compile(
        r"^rules\.(?P<list>referrer|referred|partner_tiers\.[^.\[]+\.referrer)\[(?P<i>\d+)\](?:\.(?P<key>\w+))?"
    )

    def add_errors(self, exc: ValidationError) -> None:
        for path, messages in exc.message_dict.items():
            match = self._RULE_PATH.match(path)
            if match:
                rows = self._row_of.get(match["list"], [])
                index = int(match["i"])
                key = RULE_KEY_TO_FIELD.get(match["key"] or "")
                side = "referred" if match["list"] == "referred" else "referrer"
                if index < len(rows):
                    row = self.sides[side].forms[rows[index]]
                    row.add_error(key if key in row.fields else None, [_plain(m) for m in messages])
                    continue
            if path in ("rules.referrer", "rules.referred", "rules"):
                self.side_errors.setdefault("referrer", []).extend(messages)
                continue
            if path.startswith("rules.partner_tiers"):
                self.side_errors.setdefault("referrer", []).extend(f"Partner tier: {m}" for m in messages)
                continue
            name = DOCUMENT_PATH_TO_FIELD.get(path, path)
            if name.startswith("rules.eligibility.industries"):
                name = "industries"
            target = name if name in self.form.fields else None
            prefix = "" if target else f"{path}: "
            self.form.add_error(target, [f"{prefix}{_plain(m)}" for m in messages])

    def errors_by_name(self) -> dict[str, list[str]]:
        """Every error keyed by the HTML name of its input ("referrer-0-amount"; "__all__" for the form)."""
        errors: dict[str, list[str]] = {}
        for name, messages in self.form.errors.items():
            key = self.form.add_prefix(name) if name != "__all__" else "__all__"
            errors.setdefault(key, []).extend(messages)
        for side, formset in self.sides.items():
            for row in formset.forms:
                for name, messages in row.errors.items():
                    key = row.add_prefix(name) if name != "__all__" else f"{row.prefix}-kind"
                    errors.setdefault(key, []).extend(messages)
            errors_of_side = self.side_errors.get(side, [])
            if errors_of_side:
                errors.setdefault(f"{side}-__all__", []).extend(errors_of_side)
            errors_of_side = list(formset.non_form_errors())
            if errors_of_side:
                errors.setdefault(f"{side}-__all__", []).extend(errors_of_side)
        return errors

    # --- what the marketer sees beside the form ---------------------------------------------
    def preview_version(self) -> tuple[Program, ProgramVersion]:
        """Unsaved program + version carrying the builder's settings and document (for the live terms)."""
        from django.utils import timezone

        settings = self.settings
        program = Program(
            tenant=self.tenant,
            status=self.program.status if self.program is not None else ProgramStatus.DRAFT,
            **settings,
        )
        rules = {**self.document, **{name: settings[name] for name in _JUDGING if name in settings}}
        version = ProgramVersion(program=program, number=0, rules=rules, created_at=timezone.now())
        return program, version


_JUDGING = (
    "attribution_model",
    "cookie_window_days",
    "time_decay_half_life_days",
    "currency",
    "hold_days",
    "auto_approve_limit_minor",
)


def _plain(message: str) -> str:
    """Schema words → the builder's words (min_referrals, amount_minor … are JSON names)."""
    return (
        message.replace("min_referrals", "the number of referrals")
        .replace("amount_minor or percent_bp", "an amount or a percentage")
        .replace("max_seats only applies to per-seat rules (per_seat: true).", "Tick “per seat” to limit the seats.")
    )


def _default_landing_url(tenant) -> str:
    """The first allowed landing domain as a URL, to start from (a wildcard ".acme.com" → acme.com)."""
    domains = [domain.strip().lstrip(".") for domain in (tenant.allowed_landing_domains or []) if domain.strip()]
    return f"https://{domains[0]}/" if domains else ""


# --- a worked example -----------------------------------------------------------------------------
EXAMPLE_MONTHS = 12
EXAMPLE_SEATS = 5


def worked_example(document: Mapping, *, referrer_name: str = "Dana", company: str = "Acme") -> list[str]:
    """A referred company paying 100 a month for a year (5 seats): what each side gets, in sentences.

    Pure: runs ``rules.compute_rewards`` over the year's events (sign-up, qualified, 12 payments)."""
    rule_set = R.parse_rules(document)
    currency = rule_set.currency
    monthly = _major(currency, 100)

    def money(amount: int) -> str:
        return format_money(amount, currency)

    events = [
        R.ConversionContext(kind="sign_up", seats=EXAMPLE_SEATS),
        R.ConversionContext(kind="qualified", seats=EXAMPLE_SEATS),
    ]
    events += [
        R.ConversionContext(
            kind="payment",
            amount_minor=monthly,
            currency=currency,
            seats=EXAMPLE_SEATS,
            months_since_first_payment=month,
            referrer_bill_minor=monthly,
        )
        for month in range(EXAMPLE_MONTHS)
    ]
    totals = {side: 0 for side in R.SIDES}
    first: dict[tuple[str, int], tuple[str, int, int]] = {}
    for context in events:
        outcome = R.compute_rewards(rule_set, context)
        for side in R.SIDES:
            for reward in getattr(outcome, side):
                totals[side] += reward.amount_minor
                key = (side, reward.rule_index)
                explanation, count, total = first.get(key, (reward.explanation, 0, 0))
                first[key] = (explanation, count + 1, total + reward.amount_minor)
    lines = [
        f"Example: {referrer_name} refers {company}, which signs up, buys {EXAMPLE_SEATS} seats and pays "
        f"{money(monthly)} a month for a year ({money(monthly * EXAMPLE_MONTHS)})."
    ]
    for side, who in (("referrer", referrer_name), ("referred", company)):
        parts = []
        for (each_side, _), (explanation, count, total) in sorted(first.items()):
            if each_side != side:
                continue
            times = f" ({count} payments, {money(total)} in all)" if count > 1 else ""
            parts.append(f"{explanation}{times}")
        verb = "earns" if side == "referrer" else "gets"
        if parts:
            lines.append(f"{who} {verb} {money(totals[side])} in value: " + "; ".join(parts) + ".")
        else:
            lines.append(f"{who} {verb} nothing.")
    return lines
