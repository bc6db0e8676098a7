"""People are told: enrolling in the admin, by API or by CSV import sends the welcome e-mail once, led by the offer."""

from __future__ import annotations

import re

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core import mail
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from programs import services
from programs.builder import TEMPLATES
from programs.dashboard_links import dashboard_url
from programs.models import Participant, ParticipantImport, ProgramAccess, ProgramStatus
from referral_platform.tenancy.actors import system_actor
from rewards.models import MessageKind, ParticipantMessage
from tests import factories as f

pytestmark = pytest.mark.django_db

OFFER = "Give a friend a free month — get 50.00 USD when they subscribe."


@pytest.fixture
def program(world):
    program = f.ProgramFactory(tenant=world.a, status=ProgramStatus.ACTIVE, access=ProgramAccess.OPEN, slug="friends")
    f.ProgramVersionFactory(program=program, rules=TEMPLATES["give_get"].document("USD"))
    return program


def welcomes(email: str) -> list:
    return [message for message in mail.outbox if message.to == [email] and "referral links" in message.subject]


def test_enrolling_in_the_admin_sends_the_welcome_once_led_by_the_offer(
    world, client, program, django_capture_on_commit_callbacks
):
    client.force_login(world.marketer_a)
    form = {"program": program.pk, "external_id": "c-1", "name": "Dana", "email": "dana@northwind.example"}

    with django_capture_on_commit_callbacks(execute=True):
        added = client.post(reverse("admin:programs_participant_add"), form)
    participant = Participant.objects.get(external_id="c-1")
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("admin:programs_participant_change", args=[participant.pk]), {**form, "name": "Dana W."})

    assert added.status_code == 302
    [welcome] = welcomes("dana@northwind.example")
    assert welcome.body.splitlines()[2] == OFFER
    assert dashboard_url(participant) in welcome.body


def test_enrolling_by_api_sends_the_welcome_once_and_can_opt_out(world, program, django_capture_on_commit_callbacks):
    api = world.api(world.key_a)
    body = {"program": program.pk, "external_id": "c-2", "name": "Eve", "email": "eve@acme.example"}

    with django_capture_on_commit_callbacks(execute=True):
        first = api.post("/api/v1/participants", body, format="json")
        again = api.post("/api/v1/participants", body, format="json")
        quiet = api.post(
            "/api/v1/participants",
            {**body, "external_id": "c-3", "email": "quiet@acme.example", "send_welcome": False},
            format="json",
        )

    assert (first.status_code, again.status_code, quiet.status_code) == (201, 200, 201)
    assert len(welcomes("eve@acme.example")) == 1
    assert welcomes("quiet@acme.example") == []


@pytest.mark.parametrize("send_welcome", [True, False], ids=["welcome", "opted-out"])
def test_a_csv_import_sends_each_new_participant_the_welcome_unless_opted_out(
    world, client, program, django_capture_on_commit_callbacks, send_welcome
):
    content = b"external_id,name,email\ni-1,Ann,ann@acme.example\ni-2,Bob,bob@acme.example\n"
    job = services.participant_import_create(
        tenant=world.a,
        program=program,
        actor=system_actor(world.a),
        filename="people.csv",
        content=content,
        enqueue=False,
        send_welcome=send_welcome,
    )

    with django_capture_on_commit_callbacks(execute=True):
        services.participant_import_run(participant_import=job, actor=system_actor(world.a))
        rerun = services.participant_import_create(
            tenant=world.a, program=program, actor=system_actor(world.a), filename="again.csv", content=content,
            enqueue=False,
        )  # fmt: skip
        services.participant_import_run(participant_import=rerun, actor=system_actor(world.a))

    expected = 1 if send_welcome else 0
    assert [len(welcomes(e)) for e in ("ann@acme.example", "bob@acme.example")] == [expected, expected]


def test_the_import_form_offers_the_opt_out(world, client, program):
    client.force_login(world.marketer_a)
    upload = SimpleUploadedFile("p.csv", b"external_id,name,email\nz-1,Zed,zed@acme.example\n", "text/csv")

    response = client.post(reverse("admin:programs_participantimport_add"), {"program": program.pk, "file": upload})

    assert response.status_code == 302
    assert not ParticipantImport.objects.get(program=program).send_welcome  # an unticked box is an opt-out
    page = client.get(reverse("admin:programs_participantimport_add")).content.decode()
    assert re.search(r'<input type="checkbox" name="send_welcome"[^>]* checked>', page)  # ticked by default


def test_send_invite_action_sends_the_welcome_later_and_only_once(
    world, client, program, django_capture_on_commit_callbacks
):
    enrolment = services.participant_upsert(
        tenant=world.a, program=program, external_id="later", name="Lee", email="lee@acme.example",
        actor=system_actor(world.a), source="import",
    )  # fmt: skip
    assert welcomes("lee@acme.example") == []
    client.force_login(world.marketer_a)
    url = reverse("admin:programs_participant_changelist")
    action = {"action": "participants_invite_send", ACTION_CHECKBOX_NAME: [enrolment.participant.pk]}

    with django_capture_on_commit_callbacks(execute=True):
        client.post(url, action)
        client.post(url, action)

    [welcome] = welcomes("lee@acme.example")
    assert OFFER in welcome.body
    assert ParticipantMessage.objects.filter(participant=enrolment.participant, kind=MessageKind.WELCOME).count() == 1


def test_the_dashboard_and_the_friends_landing_page_lead_with_the_offer(world, client, program):
    participant = f.ParticipantFactory(program=program)
    link = f.ReferralLinkFactory(participant=participant)

    dashboard = client.get(dashboard_url(participant)).content.decode()
    landing = client.get(f"/join/{link.code}/").content.decode()

    offer_block = re.search(r'id="offer".*?</(?:p|section)>', dashboard, re.S)
    assert offer_block and OFFER in offer_block.group(0)
    assert '<p class="offer" id="offer"><strong>You get a free month when you subscribe.</strong></p>' in landing
