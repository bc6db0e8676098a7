"""NPS-triggered invitations (R-25): promoters get exactly one invitation through real SMTP; everyone else,
repeats, suppressed and unsubscribed people get none."""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime
from urllib.parse import urlsplit

import pytest
from django.db import connection
from rest_framework.test import APIClient

from engagement.models import Ask, AskStatus, Communication, Moment, MomentOutcome
from engagement.services import ask_send, asks_due
from programs.mailing import email_opt_out
from programs.models import Participant

from .helpers import nps_payload, nps_program, quiet_evenings

pytestmark = pytest.mark.django_db(transaction=True)


def post(world, payload):
    return world.api(world.key_a).post("/api/v1/nps-responses", payload, format="json")


def test_a_score_of_9_sends_exactly_one_invitation_whose_links_work(world, smtp_inbox, client):
    program = nps_program(world.a)

    response = post(world, nps_payload(score=9))

    assert response.status_code == 201, response.content
    [message] = smtp_inbox.to("pat@customer.example")
    body = smtp_inbox.text(message)
    referral_link = re.search(r"http://\S+/r/\S+", body).group(0)
    dashboard_link = re.search(r"http://\S+/p/\S+/", body).group(0)
    redirect = client.get(urlsplit(referral_link).path)
    assert redirect.status_code == 302 and redirect["Location"].startswith(program.landing_url)
    assert client.get(urlsplit(dashboard_link).path).status_code == 200
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    unsubscribe = "".join(message["List-Unsubscribe"].split()).strip("<>")
    assert unsubscribe in body.replace("\r", "")
    participant = Participant.objects.get(tenant=world.a, email="pat@customer.example")
    assert participant.source == "trigger" and participant.program == program
    assert Ask.objects.get().status == AskStatus.SENT


def test_a_score_of_6_sends_nothing(world, smtp_inbox):
    nps_program(world.a)

    assert post(world, nps_payload(score=6)).status_code == 201

    assert smtp_inbox.messages == []
    assert Moment.objects.get().outcome == MomentOutcome.NOT_PROMOTER
    assert not Ask.objects.exists() and not Participant.objects.filter(email="pat@customer.example").exists()


def test_a_second_promoter_response_inside_the_suppression_window_sends_nothing(world, smtp_inbox):
    nps_program(world.a, suppression_days=90)
    post(world, nps_payload(response_id="first", score=10))

    post(world, nps_payload(response_id="second", score=9))

    assert len(smtp_inbox.to("pat@customer.example")) == 1
    assert Moment.objects.get(external_id="second").outcome == MomentOutcome.SUPPRESSED


def test_suppression_spans_triggers_an_event_after_an_nps_ask_sends_nothing(world, smtp_inbox):
    from engagement.models import TriggerPolicy

    program = nps_program(world.a)
    TriggerPolicy.objects.create(tenant=world.a, program=program, trigger="renewal", delay_minutes=0)
    post(world, nps_payload(score=10))

    response = world.api(world.key_a).post(
        "/api/v1/events",
        {
            "event_id": "ren-1",
            "type": "renewal",
            "customer_external_id": "cust-pat@customer.example",
            "email": "pat@customer.example",
            "occurred_at": "2026-11-27T10:00:00Z",
        },
        format="json",
    )

    assert response.status_code == 201
    assert len(smtp_inbox.messages) == 1
    assert Moment.objects.get(external_id="ren-1").outcome == MomentOutcome.SUPPRESSED


def test_the_same_response_posted_twice_sends_one_invitation(world, smtp_inbox):
    nps_program(world.a)

    first, second = post(world, nps_payload()), post(world, nps_payload())

    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]
    assert len(smtp_inbox.messages) == 1 and Moment.objects.count() == 1


def test_the_same_response_posted_concurrently_sends_one_invitation(world, smtp_inbox):
    nps_program(world.a)
    barrier, statuses = threading.Barrier(6), []

    def send():
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {world.key_a}")
        barrier.wait()
        try:
            statuses.append(client.post("/api/v1/nps-responses", nps_payload(), format="json").status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=send) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(statuses) == [200] * 5 + [201]
    assert len(smtp_inbox.messages) == 1
    assert Moment.objects.count() == 1 and Ask.objects.count() == 1 and Communication.objects.count() == 1


def test_two_different_promoter_responses_of_one_person_concurrently_send_one_invitation(world, smtp_inbox):
    nps_program(world.a)
    barrier = threading.Barrier(4)

    def send(index):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {world.key_a}")
        barrier.wait()
        try:
            client.post("/api/v1/nps-responses", nps_payload(response_id=f"r{index}", score=10), format="json")
        finally:
            connection.close()

    threads = [threading.Thread(target=send, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(smtp_inbox.messages) == 1
    assert Moment.objects.filter(outcome=MomentOutcome.SUPPRESSED).count() == 3


def test_quiet_hours_delay_the_send_to_the_next_allowed_local_time(world, smtp_inbox, monkeypatch):
    nps_program(world.a, **quiet_evenings(world.a, "Europe/Berlin"))
    evening = datetime(2026, 11, 27, 21, 30, tzinfo=UTC)  # 22:30 in Berlin: quiet until 08:00
    monkeypatch.setattr("django.utils.timezone.now", lambda: evening)

    post(world, nps_payload(answered_at="2026-11-27T21:00:00Z"))

    ask = Ask.objects.get()
    assert ask.status == AskStatus.SCHEDULED and smtp_inbox.messages == []
    assert ask.scheduled_for == datetime(2026, 11, 28, 7, 0, tzinfo=UTC)  # 08:00 Berlin (CET, UTC+1)
    assert asks_due(now=datetime(2026, 11, 28, 6, 59, tzinfo=UTC)) == []
    ask_send(ask_id=ask.pk, now=datetime(2026, 11, 28, 6, 59, tzinfo=UTC))
    assert smtp_inbox.messages == []

    assert asks_due(now=datetime(2026, 11, 28, 7, 0, tzinfo=UTC)) == [ask.pk]
    ask_send(ask_id=ask.pk, now=datetime(2026, 11, 28, 7, 0, tzinfo=UTC))

    assert len(smtp_inbox.messages) == 1
    assert Ask.objects.get().status == AskStatus.SENT


def test_the_daily_cap_moves_further_asks_to_the_next_day(world, smtp_inbox):
    nps_program(world.a, daily_cap=1)

    post(world, nps_payload(response_id="a", email="a@customer.example"))
    post(world, nps_payload(response_id="b", email="b@customer.example"))

    assert len(smtp_inbox.messages) == 1
    waiting = Ask.objects.get(email="b@customer.example")
    assert waiting.status == AskStatus.SCHEDULED and "daily cap" in waiting.note


def test_an_unsubscribed_promoter_is_never_asked(world, smtp_inbox):
    nps_program(world.a)
    email_opt_out(tenant_id=world.a.pk, email="Pat@Customer.example")

    post(world, nps_payload(score=10))

    assert smtp_inbox.messages == []
    assert Moment.objects.get().outcome == MomentOutcome.UNSUBSCRIBED


@pytest.mark.parametrize(
    "change, field",
    [
        ({"score": 11}, "score"),
        ({"score": "ten"}, "score"),
        ({"email": "not-an-address"}, "email"),
        ({"answered_at": "yesterday"}, "answered_at"),
        ({"response_id": ""}, "response_id"),
        ({"customer_external_id": ""}, "customer_external_id"),
    ],
    ids=["score-too-high", "score-not-a-number", "bad-email", "bad-date", "no-response-id", "no-customer"],
)
def test_bad_input_is_a_400_naming_the_field_and_nothing_is_written(world, smtp_inbox, change, field):
    nps_program(world.a)

    response = post(world, nps_payload(**change))

    assert response.status_code == 400
    assert field in response.json()["error"]["fields"] and field in response.json()["error"]["message"]
    assert not Moment.objects.exists() and not Ask.objects.exists() and smtp_inbox.messages == []


def test_a_review_link_is_asked_for_when_the_policy_has_one(world, smtp_inbox):
    nps_program(world.a, review_url="https://www.g2.com/products/acme/reviews")

    post(world, nps_payload(score=10))

    assert "https://www.g2.com/products/acme/reviews" in smtp_inbox.text(smtp_inbox.messages[0])


def test_the_report_follows_responses_to_revenue(world, smtp_inbox):
    from engagement.selectors import nps_funnel
    from tests import factories as f

    nps_program(world.a)
    post(world, nps_payload(response_id="p", score=10))
    post(world, nps_payload(response_id="d", score=3, email="det@customer.example"))
    participant = Participant.objects.get(email="pat@customer.example")
    referral = f.ReferralFactory(referrer=participant, converted_at=datetime(2026, 11, 27, tzinfo=UTC))
    f.ConversionEventFactory(tenant=world.a, referral=referral, kind="payment", amount_minor=9_900, currency="USD")

    [month] = nps_funnel(world.a)

    assert month == {
        "month": "2026-11",
        "responses": 2,
        "promoters": 1,
        "invited": 1,
        "enrolled": 1,
        "first_referral": 1,
        "paying": 1,
        "revenue_minor": {"USD": 9_900},
    }
    assert world.api(world.key_a).get("/api/v1/nps-report").json()["months"] == [month]
