"""Reward rules: the schema of ``ProgramVersion.rules`` and the pure calculation of rewards.

Nothing here touches the database; the module is the single source of truth for *how much* a
referrer and a referred company earn for an event, and *why*.

Use::

    from programs import rules

    rule_set = rules.parse_rules(version.rules)          # validated, typed; raises RulesError
    outcome = rules.compute_rewards(
        rule_set,
        rules.ConversionContext(kind="payment", amount_minor=12_000, currency="USD", seats=3,
                                previous_successful_referrals=4, months_since_first_payment=0),
    )
    outcome.referrer          # tuple[Reward, ...], each with amount_minor and an explanation
    outcome.referred
    outcome.notes             # why something was not paid (cap reached, not a rewarded event, ...)

Conventions (docs/programs.md): amounts are integer minor units of the rules' ``currency``;
percentages are integer basis points (100 bp = 1 %, 10 000 bp = 100 %); a percentage of an amount
is rounded half up to the minor unit, once (``referral_platform.money.percent_of``).

The document format is ``RULES_JSON_SCHEMA`` (JSON Schema 2020-12) plus the few checks a schema
cannot express (tiers in increasing order, min ≤ max ranges, at least one rule): ``validate_rules``
returns the normalised document (defaults filled in) or raises ``RulesError`` whose ``errors`` map
field paths such as ``referrer[0].percent_bp`` to messages.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from jsonschema import Draft202012Validator

from referral_platform.money import BASIS_POINTS, format_money, format_percent, percent_of

SCHEMA_VERSION = 1
TIMES = "\N{MULTIPLICATION SIGN}"
MAX_AMOUNT_MINOR = 10**12
MAX_RULES_PER_SIDE = 10
# Partner tiers (Participant.tier): a tier listed in ``partner_tiers`` replaces the default referrer
# rules for participants of that tier (e.g. gold resellers earn 30 % instead of 20 %).
MAX_PARTNER_TIERS = 20
PARTNER_TIER_PATTERN = "^[a-z0-9][a-z0-9_-]{0,39}$"

# --- rule kinds and the events that trigger them ------------------------------------------------
FLAT_PER_LEAD = "flat_per_lead"
FLAT_PER_CONVERSION = "flat_per_conversion"
PERCENT_OF_REVENUE = "percent_of_revenue"
RECURRING_PERCENT = "recurring_percent"
TIERED = "tiered"
FREE_MONTHS = "free_months"
RENEWAL_DISCOUNT = "renewal_discount"
ACCOUNT_CREDIT = "account_credit"
FEATURE_UNLOCK = "feature_unlock"
GIFT = "gift"
RULE_KINDS = (
    FLAT_PER_LEAD,
    FLAT_PER_CONVERSION,
    PERCENT_OF_REVENUE,
    RECURRING_PERCENT,
    TIERED,
    FREE_MONTHS,
    RENEWAL_DISCOUNT,
    ACCOUNT_CREDIT,
    FEATURE_UNLOCK,
    GIFT,
)

# ``on``: the event a rule pays on. "conversion" is the referred company's first payment;
# "payment" is every payment (only recurring shares pay on each one).
ON_SIGN_UP = "sign_up"
ON_QUALIFIED = "qualified"
ON_CONVERSION = "conversion"
ON_PAYMENT = "payment"
ALLOWED_ON: dict[str, tuple[str, ...]] = {
    FLAT_PER_LEAD: (ON_QUALIFIED, ON_SIGN_UP),
    FLAT_PER_CONVERSION: (ON_CONVERSION,),
    PERCENT_OF_REVENUE: (ON_CONVERSION,),
    RECURRING_PERCENT: (ON_PAYMENT,),
    TIERED: (ON_CONVERSION,),
    FREE_MONTHS: (ON_CONVERSION, ON_SIGN_UP, ON_QUALIFIED),
    RENEWAL_DISCOUNT: (ON_CONVERSION, ON_SIGN_UP, ON_QUALIFIED),
    ACCOUNT_CREDIT: (ON_CONVERSION, ON_SIGN_UP, ON_QUALIFIED),
    FEATURE_UNLOCK: (ON_CONVERSION, ON_SIGN_UP, ON_QUALIFIED),
    GIFT: (ON_CONVERSION, ON_SIGN_UP, ON_QUALIFIED),
}  # the first entry is the default

# What the reward is, for whoever pays it out.
FORM_CASH = "cash"
FORM_CREDIT = "credit"
FORM_DISCOUNT = "discount"
FORM_FREE_MONTHS = "free_months"
FORM_FEATURE = "feature"
FORM_GIFT = "gift"
FORM_OF_KIND = {
    FLAT_PER_LEAD: FORM_CASH,
    FLAT_PER_CONVERSION: FORM_CASH,
    PERCENT_OF_REVENUE: FORM_CASH,
    RECURRING_PERCENT: FORM_CASH,
    TIERED: FORM_CASH,
    FREE_MONTHS: FORM_FREE_MONTHS,
    RENEWAL_DISCOUNT: FORM_DISCOUNT,
    ACCOUNT_CREDIT: FORM_CREDIT,
    FEATURE_UNLOCK: FORM_FEATURE,
    GIFT: FORM_GIFT,
}

PERIODS = ("month", "quarter", "year")
ATTRIBUTION_MODELS = ("first_touch", "last_touch", "linear", "time_decay", "position_based")
# Program settings a version also snapshots (programs.services.PROGRAM_RULE_FIELDS, besides currency):
# set by the platform from the program when the version is written; values sent by clients are replaced.
SETTINGS_SCHEMA = {
    "attribution_model": {"enum": list(ATTRIBUTION_MODELS)},
    "cookie_window_days": {"type": "integer", "minimum": 1, "maximum": 365},
    "time_decay_half_life_days": {"type": "integer", "minimum": 1, "maximum": 365},
    "hold_days": {"type": "integer", "minimum": 0, "maximum": 365},
    "auto_approve_limit_minor": {"type": "integer", "minimum": 0, "maximum": MAX_AMOUNT_MINOR},
}
CANCELLATION_POLICIES = ("clawback", "forfeit_unpaid", "keep")
QUALIFICATION_CRITERIA = ("budget", "authority", "need", "timeline")
EVENT_KINDS = ("sign_up", "qualified", "payment", "refund", "cancellation")
SIDES = ("referrer", "referred")

# --- the JSON schema ----------------------------------------------------------------------------
_AMOUNT = {"type": "integer", "minimum": 1, "maximum": MAX_AMOUNT_MINOR}
_OPTIONAL_AMOUNT = {"type": "integer", "minimum": 0, "maximum": MAX_AMOUNT_MINOR}
_PERCENT = {"type": "integer", "minimum": 1, "maximum": BASIS_POINTS}
_TEXT = {"type": "string", "maxLength": 300}


def _rule_schema(kind: str, required: Sequence[str], **properties: Any) -> dict:
    return {
        "type": "object",
        "required": ["kind", *required],
        "additionalProperties": False,
        "properties": {
            "kind": {"const": kind},
            "on": {"enum": list(ALLOWED_ON[kind])},
            "description": _TEXT,
            **properties,
        },
    }


_PER_SEAT = {"per_seat": {"type": "boolean"}, "max_seats": {"type": "integer", "minimum": 1, "maximum": 100_000}}

RULE_SCHEMAS: dict[str, dict] = {
    FLAT_PER_LEAD: _rule_schema(FLAT_PER_LEAD, ["amount_minor"], amount_minor=_AMOUNT),
    FLAT_PER_CONVERSION: _rule_schema(
        FLAT_PER_CONVERSION, ["amount_minor"], amount_minor=_AMOUNT, max_amount_minor=_AMOUNT, **_PER_SEAT
    ),
    PERCENT_OF_REVENUE: _rule_schema(PERCENT_OF_REVENUE, ["percent_bp"], percent_bp=_PERCENT, max_amount_minor=_AMOUNT),
    RECURRING_PERCENT: _rule_schema(
        RECURRING_PERCENT,
        ["percent_bp", "months"],
        percent_bp=_PERCENT,
        months={"type": "integer", "minimum": 1, "maximum": 120},
        max_amount_minor=_AMOUNT,
    ),
    TIERED: _rule_schema(
        TIERED,
        ["tiers"],
        tiers={
            "type": "array",
            "minItems": 1,
            "maxItems": 20,
            "items": {
                "type": "object",
                "required": ["min_referrals"],
                "additionalProperties": False,
                "properties": {
                    "min_referrals": {"type": "integer", "minimum": 1, "maximum": 100_000},
                    "amount_minor": _AMOUNT,
                    "percent_bp": _PERCENT,
                },
                "oneOf": [{"required": ["amount_minor"]}, {"required": ["percent_bp"]}],
            },
        },
        max_amount_minor=_AMOUNT,
        **_PER_SEAT,
    ),
    FREE_MONTHS: _rule_schema(FREE_MONTHS, ["months"], months={"type": "integer", "minimum": 1, "maximum": 36}),
    RENEWAL_DISCOUNT: _rule_schema(RENEWAL_DISCOUNT, ["percent_bp"], percent_bp=_PERCENT),
    ACCOUNT_CREDIT: _rule_schema(
        ACCOUNT_CREDIT, ["amount_minor"], amount_minor=_AMOUNT, max_amount_minor=_AMOUNT, **_PER_SEAT
    ),
    FEATURE_UNLOCK: _rule_schema(
        FEATURE_UNLOCK,
        ["feature"],
        feature={"type": "string", "minLength": 1, "maxLength": 100},
        months={"type": "integer", "minimum": 1, "maximum": 120},
    ),
    GIFT: _rule_schema(
        GIFT, ["gift"], gift={"type": "string", "minLength": 1, "maxLength": 200}, value_minor=_OPTIONAL_AMOUNT
    ),
}

_RANGE = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "min": {"type": "integer", "minimum": 0, "maximum": MAX_AMOUNT_MINOR},
        "max": {"type": "integer", "minimum": 0, "maximum": MAX_AMOUNT_MINOR},
    },
}

RULES_JSON_SCHEMA: dict = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Program rules (ProgramVersion.rules)",
    "type": "object",
    "required": ["schema_version", "currency", "referrer", "referred"],
    "additionalProperties": False,
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION},
        "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
        **SETTINGS_SCHEMA,
        "referrer": {"type": "array", "maxItems": MAX_RULES_PER_SIDE, "items": {"$ref": "#/$defs/rule"}},
        "referred": {"type": "array", "maxItems": MAX_RULES_PER_SIDE, "items": {"$ref": "#/$defs/rule"}},
        "caps": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "referrer_rewarded_referrals": {
                    "type": ["object", "null"],
                    "required": ["max", "period"],
                    "additionalProperties": False,
                    "properties": {
                        "max": {"type": "integer", "minimum": 1, "maximum": 100_000},
                        "period": {"enum": list(PERIODS)},
                    },
                },
                "max_bill_discount_bp": _PERCENT,
            },
        },
        "eligibility": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "industries": {
                    "type": "array",
                    "maxItems": 50,
                    "items": {"type": "string", "minLength": 1, "maxLength": 100},
                },
                "company_size": _RANGE,
                "annual_revenue_minor": _RANGE,
            },
        },
        "qualification": {
            "type": "object",
            "additionalProperties": False,
            "properties": {name: {"type": "boolean"} for name in QUALIFICATION_CRITERIA},
        },
        "cancellation": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "policy": {"enum": list(CANCELLATION_POLICIES)},
                "within_days": {"type": "integer", "minimum": 0, "maximum": 730},
            },
        },
        "partner_tiers": {
            "type": "object",
            "maxProperties": MAX_PARTNER_TIERS,
            "propertyNames": {"pattern": PARTNER_TIER_PATTERN},
            "additionalProperties": {
                "type": "object",
                "required": ["referrer"],
                "additionalProperties": False,
                "properties": {
                    "referrer": {"type": "array", "maxItems": MAX_RULES_PER_SIDE, "items": {"$ref": "#/$defs/rule"}},
                    "description": _TEXT,
                },
            },
        },
    },
    "$defs": {
        "rule": {
            "type": "object",
            "required": ["kind"],
            "properties": {"kind": {"enum": list(RULE_KINDS)}},
            "allOf": [
                {"if": {"properties": {"kind": {"const": kind}}}, "then": {"$ref": f"#/$defs/{kind}"}}
                for kind in RULE_KINDS
            ],
        },
        **RULE_SCHEMAS,
    },
}

_VALIDATOR = Draft202012Validator(RULES_JSON_SCHEMA)

DEFAULT_CAPS = {"referrer_rewarded_referrals": None, "max_bill_discount_bp": BASIS_POINTS}
DEFAULT_ELIGIBILITY = {"industries": [], "company_size": {}, "annual_revenue_minor": {}}
DEFAULT_QUALIFICATION = dict.fromkeys(QUALIFICATION_CRITERIA, False)
DEFAULT_CANCELLATION = {"policy": "clawback", "within_days": 60}


class RulesError(ValueError):
    """Invalid rules; ``errors`` maps a field path (``referrer[0].percent_bp``) to a message."""

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{path}: {message}" for path, message in errors.items()))


class CurrencyMismatch(ValueError):
    """The event's currency is not the rules' currency; amounts cannot be compared."""


def _path(parts: Sequence[Any]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "rules"


def _message(error) -> str:
    if error.validator == "additionalProperties":
        return error.message.replace("Additional properties are not allowed", "Unknown field(s)")
    if error.validator == "required":
        return "This field is required."
    if error.validator == "pattern" and error.path and list(error.path)[-1] == "currency":
        return "Use a three-letter ISO 4217 code in capitals, e.g. USD."
    if error.validator == "pattern" and list(error.path) == ["partner_tiers"]:
        return f"Partner tier {error.instance!r}: use 1-40 lower-case letters, digits, '-' or '_' (e.g. gold)."
    if error.validator == "oneOf" and error.schema_path and "tiers" in list(error.schema_path):
        return "A tier needs exactly one of amount_minor or percent_bp."
    if error.validator == "const" and error.path and list(error.path)[-1] == "schema_version":
        return f"Must be {SCHEMA_VERSION}."
    return error.message


def _schema_errors(document: Any) -> dict[str, str]:
    errors: dict[str, str] = {}
    for error in sorted(_VALIDATOR.iter_errors(document), key=lambda e: (len(e.path), list(map(str, e.path)))):
        path = list(error.path)
        if error.validator == "required":
            missing = error.message.split("'")[1] if "'" in error.message else ""
            path = [*path, missing] if missing else path
        key = _path(path)
        if error.validator in {"allOf", "if"}:
            continue
        errors.setdefault(key, _message(error))
    return errors


def validate_rules(document: Any, *, require_reward: bool = True) -> dict:
    """The normalised rules document (defaults filled in), or ``RulesError`` naming every bad field.

    ``require_reward``: refuse a document without any reward rule (what a marketer submits); stored
    versions may have none (a program's first version before its rewards were set).
    """
    if not isinstance(document, Mapping):
        raise RulesError({"rules": "Rules must be a JSON object."})
    errors = _schema_errors(document)
    if errors:
        raise RulesError(errors)
    normalised = _normalise(_integral(document))
    errors = _semantic_errors(normalised, require_reward=require_reward)
    if errors:
        raise RulesError(errors)
    return normalised


def _integral(value: Any) -> Any:
    """JSON Schema counts 12.0 as an integer; store it as 12 so no float reaches money arithmetic."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {key: _integral(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_integral(item) for item in value]
    return value


def _normalise(document: Mapping) -> dict:
    def rule(raw: Mapping) -> dict:
        item = {key: value for key, value in raw.items()}
        item.setdefault("on", ALLOWED_ON[item["kind"]][0])
        if item["kind"] in {FLAT_PER_CONVERSION, TIERED, ACCOUNT_CREDIT}:
            item.setdefault("per_seat", False)
        if item["kind"] == TIERED:
            item["tiers"] = [dict(tier) for tier in item["tiers"]]
        return item

    settings = {key: document[key] for key in SETTINGS_SCHEMA if key in document}
    eligibility = {**DEFAULT_ELIGIBILITY, **document.get("eligibility", {})}
    eligibility["industries"] = sorted({name.strip().lower() for name in eligibility["industries"] if name.strip()})
    return {
        "schema_version": SCHEMA_VERSION,
        "currency": document["currency"],
        "referrer": [rule(item) for item in document["referrer"]],
        "referred": [rule(item) for item in document["referred"]],
        "caps": {**DEFAULT_CAPS, **document.get("caps", {})},
        "eligibility": eligibility,
        "qualification": {**DEFAULT_QUALIFICATION, **document.get("qualification", {})},
        "cancellation": {**DEFAULT_CANCELLATION, **document.get("cancellation", {})},
        # Only present when used, so documents without tiers normalise exactly as before.
        **(
            {
                "partner_tiers": {
                    name: {**tier, "referrer": [rule(item) for item in tier["referrer"]]}
                    for name, tier in sorted(document["partner_tiers"].items())
                }
            }
            if document.get("partner_tiers")
            else {}
        ),
        **settings,
    }


def _semantic_errors(document: dict, *, require_reward: bool) -> dict[str, str]:
    errors: dict[str, str] = {}
    if require_reward and not document["referrer"] and not document["referred"]:
        errors["referrer"] = "Give at least one reward rule (for the referrer or the referred company)."
    rule_lists = [(side, document[side]) for side in SIDES]
    rule_lists += [
        (f"partner_tiers.{name}.referrer", tier["referrer"]) for name, tier in document.get("partner_tiers", {}).items()
    ]
    for side, items in rule_lists:
        for index, item in enumerate(items):
            if item["kind"] == TIERED:
                thresholds = [tier["min_referrals"] for tier in item["tiers"]]
                for position in range(1, len(thresholds)):
                    if thresholds[position] <= thresholds[position - 1]:
                        errors[f"{side}[{index}].tiers[{position}].min_referrals"] = (
                            "Tiers must be listed with strictly increasing min_referrals."
                        )
                        break
            if item.get("max_seats") and not item.get("per_seat"):
                errors[f"{side}[{index}].max_seats"] = "max_seats only applies to per-seat rules (per_seat: true)."
    for name in ("company_size", "annual_revenue_minor"):
        bounds = document["eligibility"][name]
        if "min" in bounds and "max" in bounds and bounds["min"] > bounds["max"]:
            errors[f"eligibility.{name}.max"] = "max must be greater than or equal to min."
    return errors


# --- typed rules --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tier:
    min_referrals: int
    amount_minor: int | None = None
    percent_bp: int | None = None


@dataclass(frozen=True)
class RewardRule:
    kind: str
    on: str
    amount_minor: int | None = None
    percent_bp: int | None = None
    months: int | None = None
    tiers: tuple[Tier, ...] = ()
    per_seat: bool = False
    max_seats: int | None = None
    max_amount_minor: int | None = None
    feature: str = ""
    gift: str = ""
    value_minor: int | None = None
    description: str = ""

    @property
    def form(self) -> str:
        return FORM_OF_KIND[self.kind]


@dataclass(frozen=True)
class RewardedReferralsCap:
    max: int
    period: str


@dataclass(frozen=True)
class RuleSet:
    """A validated rules document, typed. Build it with ``parse_rules``."""

    currency: str
    referrer: tuple[RewardRule, ...]
    referred: tuple[RewardRule, ...]
    rewarded_referrals_cap: RewardedReferralsCap | None
    max_bill_discount_bp: int
    industries: tuple[str, ...]
    company_size: tuple[int | None, int | None]
    annual_revenue_minor: tuple[int | None, int | None]
    qualification: tuple[str, ...]  # required criteria
    cancellation_policy: str
    cancellation_within_days: int
    document: dict = field(compare=False, repr=False)
    # Partner tier name → the referrer rules that replace ``referrer`` for participants of that tier.
    partner_tiers: Mapping[str, tuple[RewardRule, ...]] = field(default_factory=dict, compare=False)

    def side(self, name: str, tier: str = "") -> tuple[RewardRule, ...]:
        """The rules of one side; for the referrer, a partner tier listed in ``partner_tiers`` overrides."""
        if name != "referrer":
            return self.referred
        if tier and tier in self.partner_tiers:
            return self.partner_tiers[tier]
        return self.referrer

    def tier_applies(self, tier: str) -> bool:
        return bool(tier) and tier in self.partner_tiers

    @property
    def counting_period(self) -> str:
        """The period ``previous_successful_referrals`` is counted in: the cap's, else a calendar year."""
        return self.rewarded_referrals_cap.period if self.rewarded_referrals_cap else "year"


def _rule_from(item: Mapping) -> RewardRule:
    return RewardRule(
        kind=item["kind"],
        on=item["on"],
        amount_minor=item.get("amount_minor"),
        percent_bp=item.get("percent_bp"),
        months=item.get("months"),
        tiers=tuple(Tier(**tier) for tier in item.get("tiers", ())),
        per_seat=item.get("per_seat", False),
        max_seats=item.get("max_seats"),
        max_amount_minor=item.get("max_amount_minor"),
        feature=item.get("feature", ""),
        gift=item.get("gift", ""),
        value_minor=item.get("value_minor"),
        description=item.get("description", ""),
    )


# Parsed rule sets by their document's canonical JSON: a version's rules never change, and a conversion's
# processing parses them several times (schema validation is the costly part). Bounded; errors are not kept.
_PARSED: dict[str, RuleSet] = {}
_PARSED_MAX = 512


def parse_rules(document: Mapping | RuleSet) -> RuleSet:
    """Validate ``document`` and return it typed (a ``RuleSet`` is returned unchanged). The same document
    parses to the same (immutable) ``RuleSet``, computed once per process."""
    if isinstance(document, RuleSet):
        return document
    try:
        key = json.dumps(document, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):  # not a JSON document: validated each time (and refused there)
        return _parse(document)
    parsed = _PARSED.get(key)
    if parsed is None:
        parsed = _parse(document)
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.clear()
        _PARSED[key] = parsed
    return parsed


# Parsed rule sets by their saved version's row (tenant, id, number): a ProgramVersion never changes once written
# (its save() and a database trigger refuse every UPDATE), so its rules are parsed once per process without
# turning the document into canonical JSON on every call (issue 15: a chunk of 200 referrals asked ~5 times each).
_BY_VERSION: dict[tuple[int, int, int], RuleSet] = {}


def version_rules(version) -> RuleSet:
    """``parse_rules(version.rules)`` of a ``ProgramVersion``, remembered by its row when it is saved (an unsaved
    one is parsed from its document each time). Raises ``RulesError`` as ``parse_rules`` does (not remembered)."""
    if version.pk is None:
        return parse_rules(version.rules)
    key = (version.tenant_id, version.pk, version.number)
    parsed = _BY_VERSION.get(key)
    if parsed is None:
        parsed = parse_rules(version.rules)
        if len(_BY_VERSION) >= _PARSED_MAX:
            _BY_VERSION.clear()
        _BY_VERSION[key] = parsed
    return parsed


def _parse(document: Mapping) -> RuleSet:
    doc = validate_rules(document, require_reward=False)
    cap = doc["caps"]["referrer_rewarded_referrals"]
    eligibility = doc["eligibility"]
    return RuleSet(
        currency=doc["currency"],
        referrer=tuple(_rule_from(item) for item in doc["referrer"]),
        referred=tuple(_rule_from(item) for item in doc["referred"]),
        rewarded_referrals_cap=RewardedReferralsCap(**cap) if cap else None,
        max_bill_discount_bp=doc["caps"]["max_bill_discount_bp"],
        industries=tuple(eligibility["industries"]),
        company_size=(eligibility["company_size"].get("min"), eligibility["company_size"].get("max")),
        annual_revenue_minor=(
            eligibility["annual_revenue_minor"].get("min"),
            eligibility["annual_revenue_minor"].get("max"),
        ),
        qualification=tuple(name for name in QUALIFICATION_CRITERIA if doc["qualification"][name]),
        cancellation_policy=doc["cancellation"]["policy"],
        cancellation_within_days=doc["cancellation"]["within_days"],
        document=doc,
        partner_tiers={
            name: tuple(_rule_from(item) for item in tier["referrer"])
            for name, tier in doc.get("partner_tiers", {}).items()
        },
    )


# --- the calculation ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ConversionContext:
    """The event being rewarded.

    - ``kind``: "sign_up", "qualified", "payment", "refund" or "cancellation".
    - ``amount_minor`` / ``currency``: the payment (payments only; other events may leave them 0 / "").
    - ``seats``: seats the referred company bought (per-seat rules).
    - ``previous_successful_referrals``: the referrer's *other* referrals already rewarded in the
      rules' ``counting_period`` (the calendar month / quarter / year of the event), not this one.
      For the later payments of a referral, pass the count as it was when this referral converted.
    - ``months_since_first_payment``: whole months between the referral's first payment and this
      payment (0 for the first month); recurring shares stop after their ``months``.
    - ``is_first_payment``: this payment is the referral's conversion. Defaults to
      ``months_since_first_payment == 0``.
    - ``bill_amount_minor``: the referred company's bill a discount or free month applies to
      (defaults to ``amount_minor``).
    - ``referrer_bill_minor``: the referrer's next bill, for referrer-side discounts and free months
      (customer programs); unknown → those rewards carry no computed value.
    - ``participant_tier``: the referrer's partner tier (``Participant.tier``); when the rules list it
      under ``partner_tiers``, that tier's referrer rules replace the default ones.
    """

    kind: str
    amount_minor: int = 0
    currency: str = ""
    seats: int = 1
    previous_successful_referrals: int = 0
    months_since_first_payment: int = 0
    is_first_payment: bool | None = None
    bill_amount_minor: int | None = None
    referrer_bill_minor: int | None = None
    participant_tier: str = ""

    def __post_init__(self):
        problems = []
        if self.kind not in EVENT_KINDS:
            problems.append(f"kind must be one of {', '.join(EVENT_KINDS)}")
        for name in ("amount_minor", "previous_successful_referrals", "months_since_first_payment"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                problems.append(f"{name} must be a non-negative integer")
        if not isinstance(self.seats, int) or self.seats < 1:
            problems.append("seats must be a positive integer")
        for name in ("bill_amount_minor", "referrer_bill_minor"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 0):
                problems.append(f"{name} must be a non-negative integer or None")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def first_payment(self) -> bool:
        if self.is_first_payment is not None:
            return self.is_first_payment
        return self.months_since_first_payment == 0

    def bill_for(self, side: str) -> int | None:
        if side == "referrer":
            return self.referrer_bill_minor
        return self.bill_amount_minor if self.bill_amount_minor is not None else (self.amount_minor or None)


@dataclass(frozen=True)
class Reward:
    """One reward for one side. ``amount_minor`` is its value to the tenant in ``currency``
    (0 for a feature unlock, or for a discount whose bill is not known yet)."""

    side: str
    rule_index: int
    kind: str
    form: str
    amount_minor: int
    currency: str
    explanation: str
    percent_bp: int | None = None
    months: int | None = None
    item: str = ""
    capped: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class RewardOutcome:
    currency: str
    referrer: tuple[Reward, ...]
    referred: tuple[Reward, ...]
    notes: tuple[str, ...] = ()

    @property
    def referrer_total_minor(self) -> int:
        return sum(reward.amount_minor for reward in self.referrer)

    @property
    def referred_total_minor(self) -> int:
        return sum(reward.amount_minor for reward in self.referred)

    @property
    def total_minor(self) -> int:
        return self.referrer_total_minor + self.referred_total_minor

    def as_dict(self) -> dict:
        return {
            "currency": self.currency,
            "referrer": [reward.as_dict() for reward in self.referrer],
            "referred": [reward.as_dict() for reward in self.referred],
            "referrer_total_minor": self.referrer_total_minor,
            "referred_total_minor": self.referred_total_minor,
            "total_minor": self.total_minor,
            "notes": list(self.notes),
        }


def _fires(rule: RewardRule, context: ConversionContext) -> bool:
    if rule.on == ON_SIGN_UP:
        return context.kind == "sign_up"
    if rule.on == ON_QUALIFIED:
        return context.kind == "qualified"
    if rule.on == ON_CONVERSION:
        return context.kind == "payment" and context.first_payment
    if rule.on == ON_PAYMENT:
        return context.kind == "payment" and context.months_since_first_payment < (rule.months or 0)
    return False


def _seats(rule: RewardRule, context: ConversionContext) -> tuple[int, str]:
    """Seats to multiply by, and the explanation's wording of it."""
    if not rule.per_seat:
        return 1, ""
    if rule.max_seats and context.seats > rule.max_seats:
        return rule.max_seats, f" (seats capped at {rule.max_seats} of {context.seats})"
    return context.seats, ""


def _apply_rule_max(rule: RewardRule, amount: int, explanation: str, money) -> tuple[int, str, bool]:
    if rule.max_amount_minor is not None and amount > rule.max_amount_minor:
        return rule.max_amount_minor, f"{explanation}, capped at {money(rule.max_amount_minor)} (rule maximum)", True
    return amount, explanation, False


def _tier_for(rule: RewardRule, nth: int) -> Tier | None:
    chosen = None
    for tier in rule.tiers:
        if tier.min_referrals <= nth:
            chosen = tier
    return chosen


def _ordinal(number: int) -> str:
    suffix = "th" if 10 <= number % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    return f"{number}{suffix}"


def _compute_rule(
    rule: RewardRule, index: int, side: str, rule_set: RuleSet, context: ConversionContext
) -> Reward | None:
    currency = rule_set.currency

    def money(amount: int) -> str:
        return format_money(amount, currency)

    base = {"side": side, "rule_index": index, "kind": rule.kind, "form": rule.form, "currency": currency}
    capped = False

    if rule.kind in {FLAT_PER_LEAD, FLAT_PER_CONVERSION, ACCOUNT_CREDIT}:
        seats, seat_note = _seats(rule, context)
        amount = rule.amount_minor * seats
        what = {
            FLAT_PER_LEAD: "per qualified lead" if rule.on == ON_QUALIFIED else "per sign-up",
            FLAT_PER_CONVERSION: "per new paying customer",
            ACCOUNT_CREDIT: "account credit",
        }[rule.kind]
        if rule.per_seat:
            explanation = (
                f"{money(rule.amount_minor)} {what} {TIMES} {seats} seat{'s' if seats != 1 else ''}{seat_note}"
            )
            explanation += f" = {money(amount)}"
        else:
            explanation = f"Flat {money(amount)} {what}" if rule.kind != ACCOUNT_CREDIT else f"{money(amount)} {what}"
        amount, explanation, capped = _apply_rule_max(rule, amount, explanation, money)
        return Reward(**base, amount_minor=amount, explanation=explanation, capped=capped)

    if rule.kind in {PERCENT_OF_REVENUE, RECURRING_PERCENT}:
        amount = percent_of(context.amount_minor, rule.percent_bp)
        explanation = f"{format_percent(rule.percent_bp)} of {money(context.amount_minor)}"
        if rule.kind == RECURRING_PERCENT:
            explanation += f" (payment in month {context.months_since_first_payment + 1} of {rule.months})"
        explanation += f" = {money(amount)}"
        amount, explanation, capped = _apply_rule_max(rule, amount, explanation, money)
        return Reward(
            **base,
            amount_minor=amount,
            explanation=explanation,
            percent_bp=rule.percent_bp,
            months=rule.months,
            capped=capped,
        )

    if rule.kind == TIERED:
        nth = context.previous_successful_referrals + 1
        tier = _tier_for(rule, nth)
        counted = f"{_ordinal(nth)} successful referral this {rule_set.counting_period}"
        if tier is None:
            return Reward(
                **base,
                amount_minor=0,
                explanation=f"{counted}: tiers start at {rule.tiers[0].min_referrals} referrals, nothing yet",
            )
        tier_label = f"tier from {tier.min_referrals} referral{'s' if tier.min_referrals != 1 else ''}"
        if tier.amount_minor is not None:
            seats, seat_note = _seats(rule, context)
            amount = tier.amount_minor * seats
            explanation = f"{counted}: {tier_label} pays {money(tier.amount_minor)}"
            if rule.per_seat:
                explanation += f" {TIMES} {seats} seat{'s' if seats != 1 else ''}{seat_note}"
        else:
            amount = percent_of(context.amount_minor, tier.percent_bp)
            explanation = (
                f"{counted}: {tier_label} pays {format_percent(tier.percent_bp)} of {money(context.amount_minor)}"
            )
        explanation += f" = {money(amount)}"
        amount, explanation, capped = _apply_rule_max(rule, amount, explanation, money)
        return Reward(**base, amount_minor=amount, explanation=explanation, percent_bp=tier.percent_bp, capped=capped)

    if rule.kind == FREE_MONTHS:
        bill = context.bill_for(side)
        plural = "s" if rule.months != 1 else ""
        if bill is None:
            explanation = f"{rule.months} free month{plural} (value set by the next bill)"
            return Reward(**base, amount_minor=0, explanation=explanation, months=rule.months)
        amount = rule.months * bill
        explanation = f"{rule.months} free month{plural} {TIMES} {money(bill)} monthly bill = {money(amount)}"
        return Reward(**base, amount_minor=amount, explanation=explanation, months=rule.months)

    if rule.kind == RENEWAL_DISCOUNT:
        # The per-bill cap is applied across all discounts of a side in _cap_bill_discounts.
        bill = context.bill_for(side)
        if bill is None:
            explanation = f"{format_percent(rule.percent_bp)} off the next renewal (value set by that bill)"
            return Reward(**base, amount_minor=0, explanation=explanation, percent_bp=rule.percent_bp)
        amount = percent_of(bill, rule.percent_bp)
        explanation = f"{format_percent(rule.percent_bp)} off the next renewal of {money(bill)} = {money(amount)}"
        return Reward(**base, amount_minor=amount, explanation=explanation, percent_bp=rule.percent_bp)

    if rule.kind == FEATURE_UNLOCK:
        duration = f" for {rule.months} month{'s' if rule.months != 1 else ''}" if rule.months else ""
        return Reward(
            **base,
            amount_minor=0,
            explanation=f"Feature unlocked: {rule.feature}{duration} (no cash value)",
            months=rule.months,
            item=rule.feature,
        )

    if rule.kind == GIFT:
        value = rule.value_minor or 0
        cost = f" (cost {money(value)})" if value else ""
        return Reward(**base, amount_minor=value, explanation=f"Gift: {rule.gift}{cost}", item=rule.gift)

    raise AssertionError(f"unhandled rule kind {rule.kind}")  # pragma: no cover - schema forbids it


def _cap_bill_discounts(
    rewards: list[Reward], side: str, rule_set: RuleSet, context: ConversionContext
) -> list[Reward]:
    """At most ``max_bill_discount_bp`` of one bill comes off it, however many discounts a side gets."""
    discounts = [reward for reward in rewards if reward.form == FORM_DISCOUNT]
    total_bp = sum(reward.percent_bp or 0 for reward in discounts)
    limit_bp = rule_set.max_bill_discount_bp
    if total_bp <= limit_bp:
        return rewards
    bill = context.bill_for(side)
    # Scale every discount down proportionally; the last one absorbs the rounding so the sum is exact.
    capped: list[Reward] = []
    remaining_bp = limit_bp
    remaining_minor = percent_of(bill, limit_bp) if bill is not None else 0
    for position, reward in enumerate(discounts):
        last = position == len(discounts) - 1
        share_bp = remaining_bp if last else (reward.percent_bp * limit_bp) // total_bp
        share_minor = 0
        if bill is not None:
            share_minor = remaining_minor if last else percent_of(bill, share_bp)
        remaining_bp -= share_bp
        remaining_minor -= share_minor
        note = (
            f"{reward.explanation}, capped at {format_percent(limit_bp)} of one bill in total"
            f" → {format_percent(share_bp)}"
        )
        if bill is not None:
            note += f" = {format_money(share_minor, rule_set.currency)}"
        capped.append(
            Reward(
                **{
                    **reward.as_dict(),
                    "amount_minor": share_minor,
                    "percent_bp": share_bp,
                    "explanation": note,
                    "capped": True,
                }
            )
        )
    replaced = iter(capped)
    return [next(replaced) if reward.form == FORM_DISCOUNT else reward for reward in rewards]


def compute_rewards(rules: Mapping | RuleSet, context: ConversionContext) -> RewardOutcome:
    """The rewards ``rules`` grant the referrer and the referred company for ``context``.

    Pure and deterministic. Raises ``RulesError`` for an invalid document and ``CurrencyMismatch``
    when the event carries a different currency than the rules.
    """
    rule_set = parse_rules(rules)
    notes: list[str] = []
    if context.currency and context.currency.upper() != rule_set.currency:
        raise CurrencyMismatch(
            f"event currency {context.currency} differs from the rules' currency {rule_set.currency}"
        )
    if context.kind in {"refund", "cancellation"}:
        notes.append(
            f"A {context.kind} earns no reward; the cancellation policy ({rule_set.cancellation_policy}) applies."
        )
        return RewardOutcome(currency=rule_set.currency, referrer=(), referred=(), notes=tuple(notes))

    if rule_set.tier_applies(context.participant_tier):
        notes.append(f"Partner tier {context.participant_tier!r}: that tier's referrer rules apply.")
    sides: dict[str, list[Reward]] = {}
    for side in SIDES:
        rewards = [
            reward
            for index, rule in enumerate(rule_set.side(side, context.participant_tier))
            if _fires(rule, context) and (reward := _compute_rule(rule, index, side, rule_set, context)) is not None
        ]
        sides[side] = _cap_bill_discounts(rewards, side, rule_set, context)

    cap = rule_set.rewarded_referrals_cap
    if cap and sides["referrer"] and context.previous_successful_referrals >= cap.max:
        withheld = sum(reward.amount_minor for reward in sides["referrer"])
        notes.append(
            f"Referrer cap reached: {context.previous_successful_referrals} referrals already rewarded this "
            f"{cap.period} (at most {cap.max}); {format_money(withheld, rule_set.currency)} not granted."
        )
        sides["referrer"] = []
    return RewardOutcome(
        currency=rule_set.currency,
        referrer=tuple(sides["referrer"]),
        referred=tuple(sides["referred"]),
        notes=tuple(notes),
    )


# --- eligibility and qualification ----------------------------------------------------------------
@dataclass(frozen=True)
class CompanyProfile:
    """What is known about a referred company. Unknown values (None / "") never disqualify."""

    industry: str = ""
    employees: int | None = None
    annual_revenue_minor: int | None = None


def eligibility_problems(rules: Mapping | RuleSet, company: CompanyProfile) -> list[str]:
    """Why ``company`` is outside the ideal-customer profile (empty when it may be referred)."""
    rule_set = parse_rules(rules)
    problems = []
    industry = company.industry.strip().lower()
    if rule_set.industries and industry and industry not in rule_set.industries:
        problems.append(f"industry {company.industry!r} is not one of: {', '.join(rule_set.industries)}")
    low, high = rule_set.company_size
    if company.employees is not None:
        if low is not None and company.employees < low:
            problems.append(f"{company.employees} employees is below the minimum of {low}")
        if high is not None and company.employees > high:
            problems.append(f"{company.employees} employees is above the maximum of {high}")
    low, high = rule_set.annual_revenue_minor
    if company.annual_revenue_minor is not None:
        revenue = format_money(company.annual_revenue_minor, rule_set.currency)
        if low is not None and company.annual_revenue_minor < low:
            problems.append(f"annual revenue {revenue} is below {format_money(low, rule_set.currency)}")
        if high is not None and company.annual_revenue_minor > high:
            problems.append(f"annual revenue {revenue} is above {format_money(high, rule_set.currency)}")
    return problems


def qualification_missing(rules: Mapping | RuleSet, answers: Mapping[str, bool]) -> list[str]:
    """The required checklist items (budget, authority, need, timeline) ``answers`` does not confirm."""
    rule_set = parse_rules(rules)
    return [name for name in rule_set.qualification if not answers.get(name)]


def empty_rules(currency: str) -> dict:
    """A valid document that grants nothing (a program's rules before its rewards are set)."""
    return validate_rules(
        {"schema_version": SCHEMA_VERSION, "currency": currency, "referrer": [], "referred": []},
        require_reward=False,
    )


def has_rewards(rules: Mapping | RuleSet) -> bool:
    rule_set = parse_rules(rules)
    return bool(rule_set.referrer or rule_set.referred)


def example_rules(currency: str = "USD") -> dict:
    """A sensible starting document for a new program (double-sided, capped)."""
    return validate_rules(
        {
            "schema_version": SCHEMA_VERSION,
            "currency": currency,
            "referrer": [{"kind": FLAT_PER_CONVERSION, "amount_minor": 5_000}],
            "referred": [{"kind": RENEWAL_DISCOUNT, "percent_bp": 2_000}],
            "caps": {"referrer_rewarded_referrals": {"max": 12, "period": "year"}},
        }
    )
