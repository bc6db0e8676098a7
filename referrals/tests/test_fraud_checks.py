"""Each fraud check fires on a crafted case with exact evidence, and stays quiet on a near miss."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from programs.models import Participant
from referrals.fraud import check_own_company, policy_for_program, referral_fraud_signals
from referrals.models import FraudPolicy, FraudSignalCode, Referral
from tests import factories as f

pytestmark = pytest.mark.django_db

NOW = timezone.now().replace(microsecond=0)
UA = "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0"


def only_checks(program, **enabled) -> FraudPolicy:
    """A saved policy for ``program`` with only the named checks on (and the given thresholds)."""
    flags = {
        "self_referral_enabled": False,
        "own_company_enabled": False,
        "disposable_email_enabled": False,
        "velocity_enabled": False,
        "duplicate_company_enabled": False,
    }
    return f.FraudPolicyFactory(program=program, **{**flags, **enabled})


def signals_of(referral):
    return {signal.code: signal for signal in referral_fraud_signals(referral=referral)}


@pytest.fixture
def program(world):
    return f.ProgramFactory(tenant=world.a)


@pytest.fixture
def referrer(program):
    return f.ParticipantFactory(program=program, email="John.Doe@gmail.com", external_id="cus_42", name="John Doe")


# --- self-referral: e-mail --------------------------------------------------------------------------
def test_self_referral_by_a_normalised_email_fires_with_both_addresses(program, referrer):
    only_checks(program, self_referral_enabled=True)
    referral = f.ReferralFactory(referrer=referrer, referred_email="johndoe+trial@googlemail.com")

    signal = signals_of(referral)[FraudSignalCode.SELF_REFERRAL_EMAIL]

    source = f"referrer (participant #{referrer.pk})"
    assert signal.evidence == {
        "compared": [
            {"field": "E-mail as given", "referral": "johndoe+trial@googlemail.com", "other": "John.Doe@gmail.com",
             "other_source": source},
            {"field": "E-mail normalised", "referral": "johndoe@gmail.com", "other": "johndoe@gmail.com",
             "other_source": source},
        ],
        "rows": [
            {"role": "referrer", "model": "programs.participant", "id": referrer.pk,
             "at": referrer.created_at.isoformat(), "details": {"name": "John Doe", "email": "John.Doe@gmail.com"}}
        ],
        "params": {"normalisation": "lower-case; +tag removed; Gmail: dots removed, googlemail.com = gmail.com"},
    }  # fmt: skip
    assert "johndoe@gmail.com" in signal.message


@pytest.mark.parametrize(
    "referred_email",
    ["john.doe2@gmail.com", "john.doe@outlook.com", ""],
    ids=["other-mailbox", "same-local-other-domain", "no-email"],
)
def test_self_referral_email_near_misses_do_not_fire(program, referrer, referred_email):
    only_checks(program, self_referral_enabled=True)
    referral = f.ReferralFactory(referrer=referrer, referred_email=referred_email)

    assert signals_of(referral) == {}


def test_dots_only_collapse_for_gmail(program):
    only_checks(program, self_referral_enabled=True)
    referrer = f.ParticipantFactory(program=program, email="john.doe@acme.example")
    referral = f.ReferralFactory(referrer=referrer, referred_email="johndoe@acme.example")

    assert signals_of(referral) == {}


# --- self-referral: visitor ------------------------------------------------------------------------
def test_self_referral_by_the_referrers_own_visitor_id_fires_with_the_rows_that_prove_it(world, program, referrer):
    only_checks(program, self_referral_enabled=True)
    other_program = f.ProgramFactory(tenant=world.a)
    # The referrer once signed up themselves (referred into another program) from browser v-john.
    own_signup = f.ReferralFactory(
        referrer=f.ParticipantFactory(program=other_program),
        referred_email="j.o.h.n.doe@gmail.com",
        visitor_id="v-john",
        created_at=NOW - timedelta(days=200),
    )
    event = f.ConversionEventFactory(
        tenant=world.a, kind="sign_up", customer_external_id="cus_42", visitor_id="v-john", occurred_at=NOW
    )
    referral = f.ReferralFactory(referrer=referrer, referred_email="ceo@prospect.example", visitor_id="v-john")

    signal = signals_of(referral)[FraudSignalCode.SELF_REFERRAL_VISITOR]

    assert signal.evidence == {
        "compared": [
            {"field": "Visitor id", "referral": "v-john", "other": "v-john",
             "other_source": f"referrals.referral #{own_signup.pk}"},
            {"field": "Visitor id", "referral": "v-john", "other": "v-john",
             "other_source": f"referrals.conversionevent #{event.pk}"},
        ],
        "rows": [
            {"role": "the referrer's own sign-up (as a referred person)", "model": "referrals.referral",
             "id": own_signup.pk, "at": own_signup.created_at.isoformat(),
             "details": {"visitor_id": "v-john", "email": "j.o.h.n.doe@gmail.com", "external_id": ""}},
            {"role": "the referrer's own sign-up event", "model": "referrals.conversionevent", "id": event.pk,
             "at": event.occurred_at.isoformat(),
             "details": {"visitor_id": "v-john", "email": "", "customer_external_id": "cus_42",
                         "external_event_id": event.external_event_id}},
        ],
        "params": {"matches": 2},
    }  # fmt: skip


def test_a_different_visitor_or_another_tenants_rows_do_not_count(world, program, referrer):
    only_checks(program, self_referral_enabled=True)
    # Tenant B knows a "John Doe" with the same e-mail and customer id, on the same visitor id.
    f.ReferralFactory(
        referrer=f.ParticipantFactory(program=f.ProgramFactory(tenant=world.b)),
        referred_email="johndoe@gmail.com",
        visitor_id="v-shared",
    )
    f.ConversionEventFactory(tenant=world.b, customer_external_id="cus_42", visitor_id="v-shared")
    f.ConversionEventFactory(tenant=world.a, customer_external_id="cus_42", visitor_id="v-john")

    same_as_b = f.ReferralFactory(referrer=referrer, visitor_id="v-shared")
    near_miss = f.ReferralFactory(referrer=referrer, visitor_id="v-john-2")

    assert signals_of(same_as_b) == {}
    assert signals_of(near_miss) == {}


def test_the_identity_graph_tells_the_referrers_own_visitor_ids(world, program, referrer):
    only_checks(program, self_referral_enabled=True)
    link = f.IdentityLinkFactory(
        tenant=world.a, a_kind="email", a_value="johndoe@gmail.com", b_kind="visitor", b_value="v-graph"
    )
    f.IdentityLinkFactory(tenant=world.b, a_kind="customer", a_value="cus_42", b_kind="visitor", b_value="v-b-only")
    referral = f.ReferralFactory(referrer=referrer, referred_email="it@prospect.example", visitor_id="v-graph")
    near_miss = f.ReferralFactory(referrer=referrer, referred_email="ops@prospect.example", visitor_id="v-b-only")

    signal = signals_of(referral)[FraudSignalCode.SELF_REFERRAL_VISITOR]

    assert signal.evidence["rows"] == [
        {"role": "identity graph: the referrer's e-mail seen with this visitor", "model": "referrals.identitylink",
         "id": link.pk, "at": link.created_at.isoformat(),
         "details": {"visitor_id": "v-graph", "email": "johndoe@gmail.com", "source": "sign_up"}}
    ]  # fmt: skip
    assert signals_of(near_miss) == {}


def test_the_identity_graph_tells_the_referrers_visitors_by_customer_id_whichever_end_holds_it(
    world, program, referrer
):
    only_checks(program, self_referral_enabled=True)
    customer_first = f.IdentityLinkFactory(
        tenant=world.a, a_kind="customer", a_value="cus_42", b_kind="visitor", b_value="v-office", source="conversion"
    )
    visitor_first = f.IdentityLinkFactory(
        tenant=world.a, a_kind="visitor", a_value="v-home", b_kind="customer", b_value="cus_42", source="lead"
    )
    f.IdentityLinkFactory(tenant=world.a, a_kind="customer", a_value="cus_43", b_kind="visitor", b_value="v-other")

    rows = {
        visitor: signals_of(f.ReferralFactory(referrer=referrer, referred_email=f"{visitor}@prospect.example",
                                              visitor_id=visitor))[FraudSignalCode.SELF_REFERRAL_VISITOR]
        .evidence["rows"]
        for visitor in ("v-office", "v-home")
    }  # fmt: skip

    role = "identity graph: the referrer's customer id (the tenant's) seen with this visitor"
    assert rows["v-office"] == [
        {"role": role, "model": "referrals.identitylink", "id": customer_first.pk,
         "at": customer_first.created_at.isoformat(),
         "details": {"visitor_id": "v-office", "customer": "cus_42", "source": "conversion"}}
    ]  # fmt: skip
    assert rows["v-home"][0]["id"] == visitor_first.pk
    assert rows["v-home"][0]["details"] == {"visitor_id": "v-home", "customer": "cus_42", "source": "lead"}
    assert signals_of(f.ReferralFactory(referrer=referrer, visitor_id="v-other")) == {}


def test_the_edge_revealed_by_the_referrals_own_sign_up_is_not_the_referrers(world, program, referrer):
    only_checks(program, self_referral_enabled=True)
    referral = f.ReferralFactory(referrer=referrer, referred_email="johndoe+x@gmail.com", visitor_id="v-self")
    f.IdentityLinkFactory(
        tenant=world.a, a_kind="email", a_value="johndoe+x@gmail.com", b_kind="visitor", b_value="v-self"
    )

    assert set(signals_of(referral)) == {FraudSignalCode.SELF_REFERRAL_EMAIL}


# --- self-referral: IP + user agent ----------------------------------------------------------------
@pytest.fixture
def own_click(world, program, referrer):
    """The referrer's own browser v-john (known from their sign-up event) clicked two days ago."""
    f.ConversionEventFactory(tenant=world.a, kind="sign_up", email="johndoe@gmail.com", visitor_id="v-john")
    return f.ClickFactory(
        link=f.ReferralLinkFactory(participant=referrer),
        visitor_id="v-john",
        ip="198.51.100.7",
        user_agent=UA,
        occurred_at=NOW - timedelta(days=2),
        stream_id="own-1",
    )


def test_same_ip_and_browser_as_the_referrers_own_click_fires(program, referrer, own_click):
    only_checks(program, self_referral_enabled=True)
    click = f.ClickFactory(
        link=own_click.link, visitor_id="v-incognito", ip="198.51.100.7", user_agent=UA, occurred_at=NOW
    )
    referral = f.ReferralFactory(referrer=referrer, visitor_id="v-incognito", created_at=NOW + timedelta(minutes=5))

    signal = signals_of(referral)[FraudSignalCode.SELF_REFERRAL_DEVICE]

    source = f"click #{own_click.pk} by the referrer's visitor v-john"
    since = referral.created_at - timedelta(days=30)
    assert signal.evidence == {
        "compared": [
            {"field": "IP address", "referral": "198.51.100.7", "other": "198.51.100.7", "other_source": source},
            {"field": "User agent", "referral": UA, "other": UA, "other_source": source},
        ],
        "rows": [
            {"role": "click of the referred visitor on the referrer's link", "model": "referrals.click",
             "id": click.pk, "at": click.occurred_at.isoformat(),
             "details": {"link": click.link_id, "visitor_id": "v-incognito", "ip": "198.51.100.7", "user_agent": UA}},
            {"role": "the referrer's own click", "model": "referrals.click", "id": own_click.pk,
             "at": own_click.occurred_at.isoformat(),
             "details": {"link": own_click.link_id, "visitor_id": "v-john", "ip": "198.51.100.7", "user_agent": UA}},
        ],
        "params": {"activity_days": 30, "activity_since": since.isoformat(), "matching_clicks": 1},
    }  # fmt: skip
    assert FraudSignalCode.SELF_REFERRAL_VISITOR not in signals_of(referral)


@pytest.mark.parametrize(
    ("ip", "user_agent", "days_after_own_click"),
    [
        ("198.51.100.7", "Mozilla/5.0 (Macintosh) Safari/17.0", 0),
        ("198.51.100.8", UA, 0),
        ("198.51.100.7", UA, 31),
    ],
    ids=["same-ip-other-browser", "same-browser-other-ip", "own-click-older-than-the-window"],
)
def test_device_near_misses_do_not_fire(program, referrer, own_click, ip, user_agent, days_after_own_click):
    only_checks(program, self_referral_enabled=True)
    at = own_click.occurred_at + timedelta(days=2 + days_after_own_click)
    f.ClickFactory(link=own_click.link, visitor_id="v-new", ip=ip, user_agent=user_agent, occurred_at=at)
    referral = f.ReferralFactory(referrer=referrer, visitor_id="v-new", created_at=at)

    assert signals_of(referral) == {}


def test_bot_clicks_are_not_the_referrers_activity(program, referrer, own_click):
    only_checks(program, self_referral_enabled=True)
    own_click.is_bot = True
    own_click.save()
    f.ClickFactory(link=own_click.link, visitor_id="v-new", ip="198.51.100.7", user_agent=UA, occurred_at=NOW)
    referral = f.ReferralFactory(referrer=referrer, visitor_id="v-new", created_at=NOW)

    assert signals_of(referral) == {}


# --- disposable e-mail -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("email", "domain", "entry"),
    [("buyer@mailinator.com", "mailinator.com", "mailinator.com"),
     ("buyer@eu.mailinator.com", "eu.mailinator.com", "mailinator.com")],
    ids=["listed-domain", "sub-domain"],
)  # fmt: skip
def test_disposable_domain_fires_naming_the_list_entry(program, email, domain, entry):
    only_checks(program, disposable_email_enabled=True)
    referral = f.ReferralFactory(referrer=f.ParticipantFactory(program=program), referred_email=email)

    signal = signals_of(referral)[FraudSignalCode.DISPOSABLE_EMAIL]

    assert signal.evidence["compared"] == [
        {
            "field": "E-mail domain",
            "referral": domain,
            "other": entry,
            "other_source": "disposable domain list (referrals/data/disposable_domains.txt)",
        }
    ]
    assert signal.evidence["params"]["list"] == "referrals/data/disposable_domains.txt"


@pytest.mark.parametrize(
    "email", ["buyer@xmailinator.example", "buyer@mailinator.com.example", "buyer@gmail.com"], ids=str
)
def test_disposable_near_misses_do_not_fire(program, email):
    only_checks(program, disposable_email_enabled=True)
    referral = f.ReferralFactory(referrer=f.ParticipantFactory(program=program), referred_email=email)

    assert signals_of(referral) == {}


# --- velocity --------------------------------------------------------------------------------------
def _burst(referrer, minutes_ago):
    """Referrals of different companies (own domains) by one referrer, ``minutes_ago`` before NOW."""
    return [
        f.ReferralFactory(
            referrer=referrer,
            created_at=NOW - timedelta(minutes=m),
            referred_email=f"buyer@company-{referrer.pk}-{i}.example",
        )
        for i, m in enumerate(minutes_ago)
    ]


def test_more_than_n_referrals_in_the_hour_fires_with_the_rows_and_window(program):
    only_checks(program, velocity_enabled=True, velocity_max_per_hour=3)
    referrer = f.ParticipantFactory(program=program)
    burst = _burst(referrer, [59, 40, 20, 0])
    _burst(f.ParticipantFactory(program=program), [30, 10, 5, 1])  # someone else's burst does not count

    signal = signals_of(burst[-1])[FraudSignalCode.VELOCITY]

    assert signal.evidence["compared"] == [
        {
            "field": "Referrals by this referrer in the hour",
            "referral": 4,
            "other": 3,
            "other_source": "the program's limit (velocity_max_per_hour)",
        }
    ]
    assert [row["id"] for row in signal.evidence["rows"]] == [r.pk for r in burst]
    assert [row["at"] for row in signal.evidence["rows"]] == [r.created_at.isoformat() for r in burst]
    assert signal.evidence["params"] == {
        "max_per_hour": 3,
        "window_start": (NOW - timedelta(hours=1)).isoformat(),
        "window_end": NOW.isoformat(),
        "count": 4,
    }
    # The third referral of the burst had only 3 in its hour: not flagged.
    assert FraudSignalCode.VELOCITY not in signals_of(burst[-2])


@pytest.mark.parametrize("first_minutes_ago", [60, 61], ids=["exactly-an-hour-before", "just-over-an-hour"])
def test_velocity_near_miss_outside_the_hour_does_not_fire(program, first_minutes_ago):
    only_checks(program, velocity_enabled=True, velocity_max_per_hour=3)
    referrer = f.ParticipantFactory(program=program)
    burst = _burst(referrer, [first_minutes_ago, 40, 20, 0])

    assert signals_of(burst[-1]) == {}


# --- duplicate company -----------------------------------------------------------------------------
def test_same_normalised_company_name_already_referred_fires(program):
    only_checks(program, duplicate_company_enabled=True)
    earlier = f.ReferralFactory(
        referrer=f.ParticipantFactory(program=program),
        referred_company="Acme, Inc.",
        referred_email="cto@acme-corp.example",
        created_at=NOW - timedelta(days=10),
    )
    referral = f.ReferralFactory(
        referrer=f.ParticipantFactory(program=program),
        referred_company="ACME inc",
        referred_email="buyer@acme.example",
        created_at=NOW,
    )

    signal = signals_of(referral)[FraudSignalCode.DUPLICATE_COMPANY]

    assert signal.evidence == {
        "compared": [
            {"field": "Company", "referral": "ACME inc", "other": "Acme, Inc.", "normalised": "acme",
             "other_source": f"referral #{earlier.pk} ({earlier.created_at:%Y-%m-%d %H:%M} UTC)"}
        ],
        "rows": [
            {"role": "earlier referral of the same company", "model": "referrals.referral", "id": earlier.pk,
             "at": earlier.created_at.isoformat(),
             "details": {"matched_on": ["name"], "company": "Acme, Inc.", "email": "cto@acme-corp.example",
                         "referrer": earlier.referrer_id}}
        ],
        "params": {"window_days": 90, "since": (NOW - timedelta(days=90)).isoformat(), "matches": 1,
                   "company_domain_checked": "acme.example"},
    }  # fmt: skip


def test_same_company_domain_and_same_mailbox_fire(program):
    only_checks(program, duplicate_company_enabled=True)
    by_domain = f.ReferralFactory(
        referrer=f.ParticipantFactory(program=program),
        referred_company="Globex Holdings",
        referred_email="a@globex.example",
        created_at=NOW - timedelta(days=3),
    )
    by_mailbox = f.ReferralFactory(
        referrer=f.ParticipantFactory(program=program),
        referred_company="Someone",
        referred_email="jo.smith+1@gmail.com",
        created_at=NOW - timedelta(days=2),
    )
    on_domain = f.ReferralFactory(
        referrer=f.ParticipantFactory(program=program),
        referred_company="Globex EMEA",
        referred_email="b@globex.example",
        created_at=NOW,
    )
    on_mailbox = f.ReferralFactory(
        referrer=f.ParticipantFactory(program=program),
        referred_company="Other",
        referred_email="josmith@gmail.com",
        created_at=NOW,
    )

    domain_signal = signals_of(on_domain)[FraudSignalCode.DUPLICATE_COMPANY]
    mailbox_signal = signals_of(on_mailbox)[FraudSignalCode.DUPLICATE_COMPANY]

    assert [(row["id"], row["details"]["matched_on"]) for row in domain_signal.evidence["rows"]] == [
        (by_domain.pk, ["domain"])
    ]
    assert domain_signal.evidence["compared"][0] == {
        "field": "Company e-mail domain",
        "referral": "globex.example",
        "other": "globex.example",
        "other_source": f"referral #{by_domain.pk} ({by_domain.created_at:%Y-%m-%d %H:%M} UTC)",
    }
    assert [(row["id"], row["details"]["matched_on"]) for row in mailbox_signal.evidence["rows"]] == [
        (by_mailbox.pk, ["email"])
    ]
    assert mailbox_signal.evidence["compared"][0]["normalised"] == "josmith@gmail.com"


def test_duplicate_company_near_misses_do_not_fire(world, program):
    only_checks(program, duplicate_company_enabled=True)
    other = f.ParticipantFactory(program=program)
    f.ReferralFactory(referrer=other, referred_company="Initech", referred_email="a@gmail.com",
                      created_at=NOW - timedelta(days=1))  # fmt: skip
    f.ReferralFactory(referrer=other, referred_company="Hooli", referred_email="x@hooli.example",
                      created_at=NOW - timedelta(days=91))  # fmt: skip
    f.ReferralFactory(referrer=f.ParticipantFactory(program=f.ProgramFactory(tenant=world.a)),
                      referred_company="Umbrella", created_at=NOW - timedelta(days=1))  # fmt: skip
    f.ReferralFactory(referrer=f.ParticipantFactory(program=f.ProgramFactory(tenant=world.b)),
                      referred_company="Stark", referred_email="s@stark.example")  # fmt: skip

    free_mail = f.ReferralFactory(referrer=other, referred_company="Vandelay", referred_email="b@gmail.com")
    too_old = f.ReferralFactory(referrer=other, referred_company="Hooli XYZ", referred_email="y@hooli.example")
    other_program = f.ReferralFactory(referrer=other, referred_company="Umbrella Corp")
    other_tenant = f.ReferralFactory(referrer=other, referred_company="Stark", referred_email="t@stark.example")
    near_name = f.ReferralFactory(referrer=other, referred_company="Initech Labs", referred_email="z@z.example")

    for referral in (free_mail, too_old, other_program, other_tenant, near_name):
        assert signals_of(referral) == {}, referral.referred_company


def test_a_later_referral_does_not_flag_the_earlier_one(program):
    only_checks(program, duplicate_company_enabled=True)
    first = f.ReferralFactory(
        referrer=f.ParticipantFactory(program=program), referred_company="Acme", created_at=NOW - timedelta(days=1)
    )
    second = f.ReferralFactory(referrer=f.ParticipantFactory(program=program), referred_company="Acme", created_at=NOW)

    assert signals_of(first) == {}
    assert set(signals_of(second)) == {FraudSignalCode.DUPLICATE_COMPANY}


# --- own company -----------------------------------------------------------------------------------
def test_a_colleague_of_the_referrers_company_fires_with_domains_and_names_as_given_and_normalised(program):
    only_checks(program, own_company_enabled=True)
    dana = f.ParticipantFactory(
        program=program, name="Dana Whitfield", email="dana@northwind.co.uk", company="Northwind Traders Ltd"
    )
    referral = f.ReferralFactory(
        referrer=dana, referred_email="Pat@Sales.Northwind.co.uk", referred_company="NORTHWIND TRADERS"
    )

    signal = signals_of(referral)[FraudSignalCode.OWN_COMPANY]

    source = f"referrer (participant #{dana.pk})"
    assert signal.evidence == {
        "compared": [
            {"field": "Company e-mail domain", "referral": "sales.northwind.co.uk", "other": "northwind.co.uk",
             "other_source": source, "normalised": "northwind.co.uk"},
            {"field": "Company", "referral": "NORTHWIND TRADERS", "other": "Northwind Traders Ltd",
             "other_source": source, "normalised": "northwindtraders"},
        ],
        "rows": [
            {"role": "referrer", "model": "programs.participant", "id": dana.pk, "at": dana.created_at.isoformat(),
             "details": {"name": "Dana Whitfield", "email": "dana@northwind.co.uk",
                         "company": "Northwind Traders Ltd"}},
        ],
        "params": {
            "matched_on": ["domain", "name"],
            "domain_rule": "same registrable domain (eTLD+1 by the Public Suffix List; sub-domains count as their "
                           "domain); free-mail and disposable domains do not count",
            "name_rule": "accents, case, punctuation, spaces, a leading 'the' and trailing legal forms removed",
        },
    }  # fmt: skip
    assert signal.message == (
        "The referral looks like the referrer's own company: the referred e-mail Pat@Sales.Northwind.co.uk is at "
        "northwind.co.uk, the domain of the referrer's e-mail dana@northwind.co.uk; and the referred company "
        '"NORTHWIND TRADERS" is the referrer\'s own company "Northwind Traders Ltd" (both "northwindtraders" once '
        "normalised)."
    )
    assert signal.label == "Own company: the referrer's own e-mail domain or company name"


def _unsaved_referral(referrer_email, referrer_company, referred_email, referred_company):
    referrer = Participant(pk=7, name="Dana Whitfield", email=referrer_email, company=referrer_company, created_at=NOW)
    return Referral(referrer=referrer, referred_email=referred_email, referred_company=referred_company, created_at=NOW)


@pytest.mark.parametrize(
    ("referrer_email", "referrer_company", "referred_email", "referred_company", "matched_on"),
    [
        ("dana@acme.co.uk", "", "pat@acme.co.uk", "", ["domain"]),
        ("dana@acme.co.uk", "", "pat@sales.acme.co.uk", "", ["domain"]),
        ("dana@eu.acme.com", "", "pat@acme.com", "", ["domain"]),
        ("Dana@ACME.com", "", "pat@acme.COM", "", ["domain"]),
        ("dana@acme.com", "Acme Inc.", "buyer@acme-holdings.example", "ACME", ["name"]),
        ("dana@acme.com", "Acme", "pat@acme.com", "Acme, Inc.", ["domain", "name"]),
        ("dana@gmail.com", "Globex GmbH", "pat@gmail.com", "globex", ["name"]),
    ],
    ids=[
        "same-domain",
        "colleague-on-a-sub-domain",
        "referrer-on-a-sub-domain",
        "domain-case",
        "company-name-with-legal-form",
        "domain-and-name",
        "name-on-free-mail",
    ],
)
def test_own_company_matches(
    django_assert_num_queries, referrer_email, referrer_company, referred_email, referred_company, matched_on
):
    referral = _unsaved_referral(referrer_email, referrer_company, referred_email, referred_company)

    with django_assert_num_queries(0):  # a pure check: it reads only the referral and its referrer
        signal = check_own_company(referral=referral)

    assert signal is not None and signal.code == FraudSignalCode.OWN_COMPANY
    assert signal.evidence["params"]["matched_on"] == matched_on


@pytest.mark.parametrize(
    ("referrer_email", "referrer_company", "referred_email", "referred_company"),
    [
        ("dana@acme.com", "", "pat@acme.co.uk", ""),
        ("dana@acme.com", "", "pat@acme-corp.com", ""),
        ("dana@acme.com", "", "pat@acme.com.evil.example", ""),
        ("dana@gmail.com", "Northwind", "pat@gmail.com", "Contoso"),
        ("dana@gmail.com", "", "pat@googlemail.com", ""),
        ("dana@yahoo.co.uk", "", "pat@mail.yahoo.co.uk", ""),
        ("dana@mailinator.com", "", "pat@mailinator.com", ""),
        ("dana@acme.herokuapp.com", "", "pat@globex.herokuapp.com", ""),
        ("dana@northwind.example", "Northwind Traders", "pat@contoso.example", "Northwind Labs"),
        ("dana@northwind.example", "", "pat@contoso.example", ""),
        ("dana@northwind.example", "Northwind", "pat@contoso.example", ""),
        ("dana@northwind.example", "Northwind", "Dana+trial@northwind.example", "Northwind"),
    ],
    ids=[
        "same-name-other-suffix",
        "lookalike-domain",
        "acme-as-a-sub-domain-elsewhere",
        "both-on-gmail",
        "gmail-and-googlemail",
        "same-free-provider-sub-domain",
        "both-on-a-disposable-domain",
        "neighbours-under-a-private-suffix",
        "similar-company-name",
        "no-company-names",
        "referred-company-missing",
        "the-referrers-own-mailbox-is-self-referral-not-a-colleague",
    ],
)
def test_own_company_near_misses_do_not_fire(referrer_email, referrer_company, referred_email, referred_company):
    referral = _unsaved_referral(referrer_email, referrer_company, referred_email, referred_company)

    assert check_own_company(referral=referral) is None


def test_a_self_referral_is_one_flag_and_a_colleague_another(program):
    # Given both checks on, and Dana at Northwind
    only_checks(program, self_referral_enabled=True, own_company_enabled=True)
    dana = f.ParticipantFactory(program=program, email="dana@northwind.example", company="Northwind")

    # When she refers her own mailbox, then a colleague
    herself = f.ReferralFactory(referrer=dana, referred_email="dana+trial@northwind.example")
    colleague = f.ReferralFactory(referrer=dana, referred_email="sam@northwind.example")

    # Then each gets the one signal that says what it is
    assert set(signals_of(herself)) == {FraudSignalCode.SELF_REFERRAL_EMAIL}
    assert set(signals_of(colleague)) == {FraudSignalCode.OWN_COMPANY}


def test_own_company_is_silent_when_the_program_turns_it_off(program):
    only_checks(program, self_referral_enabled=True, duplicate_company_enabled=True)
    dana = f.ParticipantFactory(program=program, email="dana@northwind.example", company="Northwind")

    colleague = f.ReferralFactory(referrer=dana, referred_email="sam@northwind.example", referred_company="Northwind")

    assert signals_of(colleague) == {}


# --- per-program configuration ---------------------------------------------------------------------
def test_a_program_without_a_policy_runs_every_check_with_the_defaults(program):
    policy = policy_for_program(program)

    assert policy.pk is None
    assert (policy.self_referral_enabled, policy.disposable_email_enabled) == (True, True)
    assert policy.own_company_enabled is True
    assert (policy.velocity_enabled, policy.velocity_max_per_hour) == (True, 5)
    assert (policy.duplicate_company_enabled, policy.duplicate_company_window_days) == (True, 90)


def test_turning_checks_off_per_program_silences_them(world, program, referrer):
    quiet = f.ProgramFactory(tenant=world.a)
    only_checks(quiet)  # every check off
    loud_referral = f.ReferralFactory(referrer=referrer, referred_email="johndoe+x@gmail.com")
    quiet_referrer = f.ParticipantFactory(program=quiet, email="johndoe@gmail.com")
    quiet_referral = f.ReferralFactory(referrer=quiet_referrer, referred_email="johndoe+x@gmail.com")
    disposable = f.ReferralFactory(referrer=quiet_referrer, referred_email="a@mailinator.com")

    assert FraudSignalCode.SELF_REFERRAL_EMAIL in signals_of(loud_referral)  # default policy: on
    assert signals_of(quiet_referral) == {}
    assert signals_of(disposable) == {}


def test_thresholds_come_from_the_programs_policy(program):
    policy = only_checks(program, velocity_enabled=True, velocity_max_per_hour=10, duplicate_company_enabled=True)
    referrer = f.ParticipantFactory(program=program)
    burst = _burst(referrer, [50, 40, 30, 20, 10, 0])
    f.ReferralFactory(referrer=f.ParticipantFactory(program=program), referred_company="Wayne",
                      created_at=NOW - timedelta(days=45))  # fmt: skip
    wayne = f.ReferralFactory(referrer=f.ParticipantFactory(program=program), referred_company="Wayne", created_at=NOW)

    assert signals_of(burst[-1]) == {}
    assert set(signals_of(wayne)) == {FraudSignalCode.DUPLICATE_COMPANY}

    policy.velocity_max_per_hour = 5
    policy.duplicate_company_window_days = 30
    policy.save()

    assert set(signals_of(burst[-1])) == {FraudSignalCode.VELOCITY}
    assert signals_of(wayne) == {}
