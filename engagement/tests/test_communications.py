"""Communications (R-27): templates with preview and test send, campaigns, reminders, the automatic
program update on a rules change, and the send log."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from engagement.models import Communication, MessageTemplate
from programs.rules import example_rules
from programs.services import program_rules_change
from referral_platform.tenancy.actors import system_actor
from tests import factories as f

pytestmark = pytest.mark.django_db(transaction=True)


def program_with_people(world, count=2):
    program = f.ProgramVersionFactory(program=f.ProgramFactory(tenant=world.a)).program
    people = [f.ParticipantFactory(program=program, email=f"p{index}@customer.example") for index in range(count)]
    return program, people


def test_an_edited_template_is_previewed_test_sent_and_used(world, smtp_inbox):
    program, _people = program_with_people(world, 1)
    api = world.api(world.key_a)
    base = f"/api/v1/programs/{program.pk}/templates/launch"

    saved = api.put(base, {"subject": "Go {{ participant.name }}", "body": "Link: {{ referral_link }}"}, format="json")
    preview = api.post(f"{base}/preview", {}, format="json").json()
    test = api.post(f"{base}/test-send", {"to": "marketer@tenant-a.example"}, format="json")
    sent = api.post(f"/api/v1/programs/{program.pk}/communications", {"kind": "launch"}, format="json")

    assert saved.status_code == 200 and preview["subject"] == "Go Sam Sample"
    assert (
        test.status_code == 200 and smtp_inbox.to("marketer@tenant-a.example")[0]["Subject"] == "[TEST] Go Sam Sample"
    )
    assert sent.json() == {"sent": 1}
    [message] = smtp_inbox.to("p0@customer.example")
    assert message["Subject"].startswith("Go Participant")


def test_a_broken_template_is_a_400_naming_the_field_and_not_saved(world):
    program, _ = program_with_people(world, 0)

    response = world.api(world.key_a).put(
        f"/api/v1/programs/{program.pk}/templates/launch", {"subject": "Hi", "body": "{% if %}"}, format="json"
    )

    assert response.status_code == 400 and "body" in response.json()["error"]["fields"]
    assert not MessageTemplate.objects.exists()


def test_a_launch_announcement_goes_once_to_everyone_enrolled(world, smtp_inbox):
    program, people = program_with_people(world, 3)
    api = world.api(world.key_a)

    api.post(f"/api/v1/programs/{program.pk}/communications", {"kind": "launch"}, format="json")
    again = api.post(f"/api/v1/programs/{program.pk}/communications", {"kind": "launch"}, format="json")

    assert again.json() == {"sent": 0}
    assert sorted(message["To"] for message in smtp_inbox.messages) == sorted(person.email for person in people)


def test_reminders_go_only_to_inactive_participants(world, smtp_inbox):
    program, (idle, active) = program_with_people(world, 2)
    type(idle).objects.filter(pk__in=[idle.pk, active.pk]).update(created_at=timezone.now() - timedelta(days=40))
    f.ReferralFactory(referrer=active)

    world.api(world.key_a).post(f"/api/v1/programs/{program.pk}/communications", {"kind": "reminder"}, format="json")

    assert [message["To"] for message in smtp_inbox.messages] == [idle.email]


def test_a_rules_change_tells_participants_what_stays_the_same(world, smtp_inbox):
    program, _people = program_with_people(world, 2)

    richer = example_rules("USD")
    richer["referrer"][0]["amount_minor"] = 7_500

    program_rules_change(program=program, actor=system_actor(world.a), rules=richer, note="richer")

    assert len(smtp_inbox.messages) == 2
    body = smtp_inbox.text(smtp_inbox.messages[0])
    assert "referrals you already made keep the terms they were made under" in body and "richer" in body


def test_the_send_log_lists_every_email_of_a_participant(world, smtp_inbox):
    program, (person,) = program_with_people(world, 1)
    world.api(world.key_a).post(f"/api/v1/programs/{program.pk}/communications", {"kind": "launch"}, format="json")

    log = world.api(world.key_a).get(f"/api/v1/participants/{person.pk}/communications").json()["results"]

    assert [(row["kind"], row["status"]) for row in log] == [("launch", "sent")]
    assert Communication.objects.get().sent_at is not None
