"""Processing conversion events and attributing them: matching, stages, stitching, window, versions,
idempotence and explanations, against real rows in Postgres."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone

from programs.models import ProgramVersion
from referrals import services
from referrals.models import (
    Attribution,
    ConversionEvent,
    ConversionEventStatus,
    Referral,
    ReferralStatus,
    Touchpoint,
)
from referrals.selectors import attribution_explanation, identity_cluster
from tests.factories import ProgramVersionFactory

from .builders import click, program_for, referrer_with_link

NOW = timezone.now().replace(microsecond=0)


def receive(tenant, **fields):
    """Store an event through the real receive service (as the API does) and return it."""
    data = {
        "external_event_id": fields.pop("external_event_id", f"evt_{ConversionEvent.objects.count() + 1}"),
        "kind": fields.pop("kind", "payment"),
        "occurred_at": fields.pop("occurred_at", NOW),
        "amount_minor": fields.pop("amount_minor", 100_00),
        "currency": fields.pop("currency", "USD"),
        **fields,
    }
    raw = {key: (value.isoformat() if hasattr(value, "isoformat") else value) for key, value in data.items()}
    return services.conversion_event_receive(tenant=tenant, raw=raw, **data).event


def process(event):
    return services.conversion_event_process(event_id=event.pk)


def shares(event):
    return {row.participant.name: str(row.share) for row in Attribution.objects.filter(conversion_event=event)}


@pytest.fixture
def linear(world):
    program = program_for(world.a, attribution_model="linear", cookie_window_days=30)
    dana, dana_link = referrer_with_link(program)
    ravi, ravi_link = referrer_with_link(program, name="Ravi Menon", company="Contoso")
    return program, (dana, dana_link), (ravi, ravi_link)


def _signup(tenant, **extra):
    return services.signup_record(tenant=tenant, actor="test", occurred_at=NOW - timedelta(days=1), **extra)


# --- matching and stages -------------------------------------------------------------------------
@pytest.mark.django_db
def test_a_payment_converts_the_referral_and_credits_the_referrer(world, linear):
    _, (dana, link), _ = linear
    click(link, visitor_id="vis-1", at=NOW - timedelta(days=3))
    _signup(world.a, email="jane@globalbank.example", visitor_id="vis-1", customer_external_id="cus_1")

    event = process(receive(world.a, customer_external_id="cus_1", amount_minor=250_00))

    assert event.status == ConversionEventStatus.PROCESSED, event.error
    referral = Referral.objects.get()
    assert event.referral == referral and referral.status == ReferralStatus.CONVERTED
    assert referral.converted_at == NOW
    row = Attribution.objects.get(conversion_event=event)
    assert (row.participant, row.share, row.amount_minor, row.currency) == (dana, Decimal("1"), 250_00, "USD")
    assert (row.model, row.rule_version.number, row.referral) == ("linear", 1, referral)
    assert [item["ref"] for item in row.touchpoints] == [f"click:{link.clicks.get().pk}"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("start", "kind", "end"),
    [
        (ReferralStatus.SIGNED_UP, "qualified", ReferralStatus.QUALIFIED),
        (ReferralStatus.CONVERTED, "cancellation", ReferralStatus.CHURNED),
        (ReferralStatus.CONVERTED, "refund", ReferralStatus.CONVERTED),
        (ReferralStatus.CLICKED, "sign_up", ReferralStatus.SIGNED_UP),
    ],
    ids=["qualified", "cancellation-churns", "refund-keeps-stage", "sign-up"],
)
def test_event_kinds_move_the_referral_to_their_stage(world, linear, start, kind, end):
    _, (_, link), _ = linear
    click(link, visitor_id="vis-1", at=NOW - timedelta(days=3))
    _signup(world.a, email="jane@globalbank.example", visitor_id="vis-1", customer_external_id="cus_1")
    Referral.objects.update(status=start)

    event = process(
        receive(world.a, kind=kind, customer_external_id="cus_1", amount_minor=0 if kind != "refund" else 10)
    )

    assert event.status == ConversionEventStatus.PROCESSED, event.error
    referral = Referral.objects.get()
    assert referral.status == end
    if start != end:
        assert getattr(referral, Referral.status_machine.timestamps[end]) == NOW


@pytest.mark.django_db
def test_an_out_of_order_event_leaves_the_stage_and_says_why(world, linear):
    _, (_, link), _ = linear
    click(link, visitor_id="vis-1", at=NOW - timedelta(days=3))
    _signup(world.a, email="jane@globalbank.example", visitor_id="vis-1")
    Referral.objects.update(status=ReferralStatus.CONVERTED)

    event = process(receive(world.a, kind="qualified", email="jane@globalbank.example", amount_minor=0))

    assert Referral.objects.get().status == ReferralStatus.CONVERTED
    assert "stage unchanged" in event.error and event.status == ConversionEventStatus.PROCESSED


@pytest.mark.django_db
def test_a_payment_for_a_clicked_visitor_without_a_referral_creates_one(world, linear):
    _, _, (ravi, link) = linear
    click(link, visitor_id="vis-9", at=NOW - timedelta(days=2))

    event = process(receive(world.a, visitor_id="vis-9", email="new@prospect.example"))

    referral = Referral.objects.get()
    assert (referral.referrer, referral.source, referral.status) == (ravi, "conversion", ReferralStatus.CONVERTED)
    assert shares(event) == {"Ravi Menon": "1.000000"}


@pytest.mark.django_db
def test_an_event_nobody_referred_is_unattributed_and_writes_no_rows(world, linear):
    event = process(receive(world.a, customer_external_id="cus_unknown"))

    assert event.status == ConversionEventStatus.UNATTRIBUTED and event.referral is None
    assert "No referral matched" in event.error
    assert not Attribution.objects.exists() and not Referral.objects.exists()


@pytest.mark.django_db
def test_a_rejected_referral_gets_no_credit(world, linear):
    _, (_, link), _ = linear
    click(link, visitor_id="vis-1", at=NOW - timedelta(days=3))
    _signup(world.a, email="jane@globalbank.example", visitor_id="vis-1", customer_external_id="cus_1")
    services.referral_reject(referral=Referral.objects.get(), actor="test", reason="Existing customer")

    event = process(receive(world.a, customer_external_id="cus_1"))

    assert event.status == ConversionEventStatus.UNATTRIBUTED and "rejected" in event.error
    assert Referral.objects.get().status == ReferralStatus.REJECTED
    assert not Attribution.objects.exists()


@pytest.mark.django_db
def test_a_foreign_currency_fails_the_event_with_the_reason_and_converts_nothing(world, linear):
    _, (_, link), _ = linear
    click(link, visitor_id="vis-1", at=NOW - timedelta(days=3))
    _signup(world.a, email="jane@globalbank.example", visitor_id="vis-1", customer_external_id="cus_1")

    event = process(receive(world.a, customer_external_id="cus_1", currency="EUR"))

    assert event.status == ConversionEventStatus.FAILED
    assert "currency" in event.error and "EUR" in event.error and "USD" in event.error
    assert Referral.objects.get().status == ReferralStatus.SIGNED_UP
    assert not Attribution.objects.exists()
    assert event.amount_minor == 100_00 and event.currency == "EUR"  # stored as received, never converted


@pytest.mark.django_db
def test_processing_twice_does_nothing_the_second_time(world, linear):
    _, (_, link), _ = linear
    click(link, visitor_id="vis-1", at=NOW - timedelta(days=3))
    _signup(world.a, email="jane@globalbank.example", visitor_id="vis-1", customer_external_id="cus_1")
    event = process(receive(world.a, customer_external_id="cus_1"))
    rows = list(Attribution.objects.values())

    again = process(event)

    assert again.processed_at == event.processed_at
    assert list(Attribution.objects.values()) == rows


# --- identity stitching and the cookie window -----------------------------------------------------
@pytest.mark.django_db
def test_touches_on_two_devices_are_stitched_once_the_customer_id_links_them(world, linear):
    # Given: the laptop clicked Dana's link and signed up; before that the phone had clicked Ravi's link,
    # and nothing yet ties the phone to the customer
    _, (dana, dana_link), (ravi, ravi_link) = linear
    click(dana_link, visitor_id="vis-laptop", at=NOW - timedelta(days=20))
    click(ravi_link, visitor_id="vis-phone", at=NOW - timedelta(days=2))
    _signup(world.a, email="jane@globalbank.example", visitor_id="vis-laptop", customer_external_id="cus_7")
    assert identity_cluster(world.a, customer_ids=["cus_7"]).visitor_ids == {"vis-laptop"}

    # When: the payment arrives from the phone (its visitor id and the customer id)
    event = process(receive(world.a, customer_external_id="cus_7", visitor_id="vis-phone"))

    # Then: both devices' touches count, under the referral's linear model
    assert identity_cluster(world.a, customer_ids=["cus_7"]).visitor_ids == {"vis-laptop", "vis-phone"}
    assert shares(event) == {"Dana Whitfield": "0.500000", "Ravi Menon": "0.500000"}
    assert event.referral.referrer == dana  # the referrer of record stays the first one
    evidence = Attribution.objects.filter(conversion_event=event).first().evidence
    assert evidence["identity"]["visitor_ids"] == ["vis-laptop", "vis-phone"]
    assert [item["participant"] for item in evidence["sequence"]] == [dana.pk, ravi.pk]


@pytest.mark.django_db
def test_a_device_linked_only_by_email_through_a_lead_form_is_stitched(world, linear):
    _, (_, dana_link), (_, ravi_link) = linear
    click(dana_link, visitor_id="vis-tablet", at=NOW - timedelta(days=9))
    services.identity_link(tenant=world.a, source="test", visitor_id="vis-tablet", email="jane@globalbank.example")
    click(ravi_link, visitor_id="vis-phone", at=NOW - timedelta(days=3))
    _signup(world.a, email="jane@globalbank.example", visitor_id="vis-phone", customer_external_id="cus_8")

    event = process(receive(world.a, customer_external_id="cus_8"))

    assert shares(event) == {"Dana Whitfield": "0.500000", "Ravi Menon": "0.500000"}


@pytest.mark.django_db
def test_touches_before_the_cookie_window_get_no_credit_and_are_listed_as_excluded(world, linear):
    _, (_, dana_link), (_, ravi_link) = linear  # 30-day window
    # The window is counted back from the sign-up (one day ago), not from the payment.
    old_click = click(dana_link, visitor_id="vis-1", at=NOW - timedelta(days=32))
    click(ravi_link, visitor_id="vis-1", at=NOW - timedelta(days=29))
    _signup(world.a, email="jane@globalbank.example", visitor_id="vis-1", customer_external_id="cus_1")

    event = process(receive(world.a, customer_external_id="cus_1"))

    assert shares(event) == {"Ravi Menon": "1.000000"}
    row = Attribution.objects.get(conversion_event=event)
    assert [item["ref"] for item in row.evidence["excluded_before_window"]] == [f"click:{old_click.pk}"]
    assert any("outside the cookie window" in line for line in attribution_explanation(row))


@pytest.mark.django_db
def test_touches_after_the_conversion_and_bot_clicks_are_ignored(world, linear):
    _, (_, dana_link), (_, ravi_link) = linear
    click(dana_link, visitor_id="vis-1", at=NOW - timedelta(days=2))
    click(ravi_link, visitor_id="vis-1", at=NOW - timedelta(days=1), is_bot=True)
    click(ravi_link, visitor_id="vis-1", at=NOW + timedelta(hours=1))
    _signup(world.a, email="jane@globalbank.example", visitor_id="vis-1", customer_external_id="cus_1")

    event = process(receive(world.a, customer_external_id="cus_1"))

    assert shares(event) == {"Dana Whitfield": "1.000000"}


@pytest.mark.django_db
def test_self_reported_answers_without_a_participant_are_evidence_without_credit(world, linear):
    _, (_, link), _ = linear
    click(link, visitor_id="vis-1", at=NOW - timedelta(days=2))
    _signup(
        world.a,
        email="jane@globalbank.example",
        visitor_id="vis-1",
        customer_external_id="cus_1",
        how_did_you_hear="Podcast ad",
    )

    event = process(receive(world.a, customer_external_id="cus_1"))

    row = Attribution.objects.get(conversion_event=event)
    assert row.share == 1
    assert [item["detail"] for item in row.evidence["uncredited"]] == ["Podcast ad"]
    assert any("Podcast ad" in line for line in attribution_explanation(row))


@pytest.mark.django_db
def test_an_answer_naming_a_referrers_code_credits_that_referrer(world, linear):
    _, (_, dana_link), (ravi, ravi_link) = linear
    click(dana_link, visitor_id="vis-1", at=NOW - timedelta(days=2))
    _signup(
        world.a,
        email="jane@globalbank.example",
        visitor_id="vis-1",
        customer_external_id="cus_1",
        how_did_you_hear=ravi_link.code,
    )

    event = process(receive(world.a, customer_external_id="cus_1"))

    assert Touchpoint.objects.get(kind="self_reported").participant == ravi
    assert shares(event) == {"Dana Whitfield": "0.500000", "Ravi Menon": "0.500000"}


# --- models and rule versions ---------------------------------------------------------------------
@pytest.mark.django_db
def test_position_based_on_a_multi_touch_journey_with_exact_amounts(world):
    program = program_for(world.a, attribution_model="position_based")
    people = [referrer_with_link(program, name=f"{n} Person", company=f"{n} Co") for n in ("Ann", "Bob", "Cy", "Di")]
    for days, (_, link) in zip((8, 6, 4, 2), people, strict=True):
        click(link, visitor_id="vis-1", at=NOW - timedelta(days=days))
    _signup(world.a, email="jane@globalbank.example", visitor_id="vis-1", customer_external_id="cus_1")

    event = process(receive(world.a, customer_external_id="cus_1", amount_minor=999))

    rows = {row.participant.name: row for row in Attribution.objects.filter(conversion_event=event)}
    assert {name: str(row.share) for name, row in rows.items()} == {
        "Ann Person": "0.400000",
        "Bob Person": "0.100000",
        "Cy Person": "0.100000",
        "Di Person": "0.400000",
    }
    assert sum(row.share for row in rows.values()) == 1
    assert sum(row.amount_minor for row in rows.values()) == 999
    assert sorted(row.amount_minor for row in rows.values()) == [100, 100, 399, 400]


@pytest.mark.django_db
def test_time_decay_uses_the_half_life_of_the_rule_version(world):
    program = program_for(world.a, attribution_model="time_decay", time_decay_half_life_days=5)
    (_, old_link), (_, new_link) = (
        referrer_with_link(program, name="Old Touch", company="O"),
        referrer_with_link(program, name="New Touch", company="N"),
    )
    # Ages are counted back from the sign-up (one day ago), when the credit is decided.
    click(old_link, visitor_id="vis-1", at=NOW - timedelta(days=6))
    click(new_link, visitor_id="vis-1", at=NOW - timedelta(days=1))
    _signup(world.a, email="jane@globalbank.example", visitor_id="vis-1", customer_external_id="cus_1")

    event = process(receive(world.a, customer_external_id="cus_1", amount_minor=300))

    assert shares(event) == {"Old Touch": "0.333333", "New Touch": "0.666667"}  # weights 1/2 and 1


@pytest.mark.django_db
def test_existing_referrals_keep_their_rule_version_after_a_rule_change(world, linear):
    program, (_, dana_link), (_, ravi_link) = linear
    click(dana_link, visitor_id="vis-1", at=NOW - timedelta(days=4))
    click(ravi_link, visitor_id="vis-1", at=NOW - timedelta(days=2))
    _signup(world.a, email="old@prospect.example", visitor_id="vis-1", customer_external_id="cus_old")
    # The rules change: first touch from now on.
    ProgramVersionFactory(
        program=program, number=2, rules={**ProgramVersion.objects.get().rules, "attribution_model": "first_touch"}
    )
    program.attribution_model = "first_touch"
    program.save()
    click(dana_link, visitor_id="vis-2", at=NOW - timedelta(days=4))
    click(ravi_link, visitor_id="vis-2", at=NOW - timedelta(days=2))
    _signup(world.a, email="new@prospect.example", visitor_id="vis-2", customer_external_id="cus_new")

    old_event = process(receive(world.a, customer_external_id="cus_old"))
    new_event = process(receive(world.a, customer_external_id="cus_new"))

    old_referral, new_referral = old_event.referral, new_event.referral
    assert (old_referral.rule_version.number, new_referral.rule_version.number) == (1, 2)
    assert shares(old_event) == {"Dana Whitfield": "0.500000", "Ravi Menon": "0.500000"}  # still linear
    assert shares(new_event) == {"Dana Whitfield": "1.000000"}  # first touch under version 2
    assert {row.model for row in Attribution.objects.filter(conversion_event=old_event)} == {"linear"}
    assert {row.rule_version.number for row in Attribution.objects.filter(conversion_event=new_event)} == {2}


# --- idempotent re-runs -----------------------------------------------------------------------------
@pytest.mark.django_db
def test_rerunning_attribution_keeps_the_same_rows_and_values(world, linear):
    _, (_, dana_link), (_, ravi_link) = linear
    click(dana_link, visitor_id="vis-1", at=NOW - timedelta(days=4))
    click(ravi_link, visitor_id="vis-1", at=NOW - timedelta(days=2))
    _signup(world.a, email="jane@globalbank.example", visitor_id="vis-1", customer_external_id="cus_1")
    event = process(receive(world.a, customer_external_id="cus_1"))
    before = sorted(Attribution.objects.values_list("pk", "participant_id", "share", "amount_minor", "touchpoints"))

    services.attribution_run(event=event)
    services.attribution_run(event=event)

    after = sorted(Attribution.objects.values_list("pk", "participant_id", "share", "amount_minor", "touchpoints"))
    assert after == before and len(after) == 2


@pytest.mark.django_db(transaction=True)
def test_concurrent_reruns_of_one_event_leave_one_set_of_rows(world, linear):
    _, (_, dana_link), (_, ravi_link) = linear
    click(dana_link, visitor_id="vis-1", at=NOW - timedelta(days=4))
    click(ravi_link, visitor_id="vis-1", at=NOW - timedelta(days=2))
    _signup(world.a, email="jane@globalbank.example", visitor_id="vis-1", customer_external_id="cus_1")
    event = receive(world.a, customer_external_id="cus_1")
    barrier = threading.Barrier(8)
    errors = []

    def run(index):
        try:
            barrier.wait()
            if index % 2:
                services.conversion_event_process(event_id=event.pk)
            else:
                services.attribution_run(event=event)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert not errors
    event.refresh_from_db()
    assert event.status == ConversionEventStatus.PROCESSED
    rows = Attribution.objects.filter(conversion_event=event)
    assert sorted((row.participant.name, str(row.share)) for row in rows) == [
        ("Dana Whitfield", "0.500000"),
        ("Ravi Menon", "0.500000"),
    ]
    assert Referral.objects.get().status == ReferralStatus.CONVERTED


# --- explanations and the read API -----------------------------------------------------------------
@pytest.mark.django_db
def test_the_explanation_says_why_the_participant_got_credit(world, linear):
    _, (_, dana_link), (_, ravi_link) = linear
    click(dana_link, visitor_id="vis-1", at=NOW - timedelta(days=4))
    click(ravi_link, visitor_id="vis-1", at=NOW - timedelta(days=2))
    _signup(world.a, email="jane@globalbank.example", visitor_id="vis-1", customer_external_id="cus_1")
    event = process(receive(world.a, external_event_id="evt_explain", customer_external_id="cus_1"))
    row = Attribution.objects.get(conversion_event=event, participant__name="Ravi Menon")

    text = "\n".join(attribution_explanation(row))

    assert "payment event evt_explain of 100.00 USD" in text
    assert "rule version 1" in text and "Linear" in text and "30-day cookie window" in text
    assert "Ravi Menon therefore receives 50.0000 % of the credit (50.00 USD)" in text
    assert "← this participant" in text
    assert "vis-1" in text and "cus_1" in text


@pytest.mark.django_db
def test_attribution_api_lists_an_events_rows_with_their_explanation(world, linear):
    _, (_, dana_link), (_, ravi_link) = linear
    click(dana_link, visitor_id="vis-1", at=NOW - timedelta(days=4))
    click(ravi_link, visitor_id="vis-1", at=NOW - timedelta(days=2))
    _signup(world.a, email="jane@globalbank.example", visitor_id="vis-1", customer_external_id="cus_1")
    event = process(receive(world.a, customer_external_id="cus_1"))
    client = world.api(world.key_a)

    listing = client.get(f"/api/v1/attributions?conversion={event.pk}")
    detail = client.get(f"/api/v1/attributions/{listing.json()['results'][0]['id']}")
    conversion = client.get(f"/api/v1/conversions/{event.pk}")

    rows = listing.json()["results"]
    assert listing.status_code == 200 and len(rows) == 2
    assert sum(Decimal(row["share"]) for row in rows) == 1
    assert {row["model"] for row in rows} == {"linear"} and {row["rule_version"] for row in rows} == {1}
    assert detail.status_code == 200 and detail.json()["explanation"][0].startswith("Conversion: payment")
    assert len(detail.json()["touchpoints"]) == 1
    assert conversion.json()["status"] == "processed" and sorted(conversion.json()["attributions"]) == sorted(
        row["id"] for row in rows
    )
    assert client.get("/api/v1/attributions?conversion=abc").json()["error"]["fields"] == {
        "conversion": ["conversion must be an integer id."]
    }
