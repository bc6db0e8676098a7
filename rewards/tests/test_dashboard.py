"""The participant's dashboard behind a signed link: sharing in three steps, their referrals, rewards and
messages, only theirs; bad, foreign and revoked tokens answer 404."""

from __future__ import annotations

import re
from io import StringIO
from urllib.parse import parse_qs, urlsplit

import pytest
from django.core import signing
from django.core.management import call_command
from django.urls import reverse

from programs.dashboard_links import (
    DASHBOARD_LINK_SALT,
    dashboard_path,
    dashboard_token,
    dashboard_url,
    sign_dashboard_payload,
)
from programs.services import participant_dashboard_link_reissue, participant_enroll
from referral_platform.tenancy.actors import actor_for_participant, system_actor
from referral_platform.tenancy.models import AuditEvent
from tests import factories as f

from .pipeline import Pipeline, program_with_rules, rules_doc

pytestmark = pytest.mark.django_db


@pytest.fixture
def pipe(world, django_capture_on_commit_callbacks):
    return Pipeline(world, django_capture_on_commit_callbacks)


def _enrolled(tenant, program, name, external_id):
    return participant_enroll(
        tenant=tenant,
        program=program,
        external_id=external_id,
        name=name,
        email=f"{external_id}@customers.example",
        actor=system_actor(tenant),
    )


@pytest.fixture
def dana_with_history(world, pipe):
    """Dana (enrolled, with links) referred Orbit Labs, which paid: a reward and messages exist."""
    program = program_with_rules(world.a, rules_doc(referrer=[{"kind": "flat_per_conversion", "amount_minor": 5_000}]))
    dana = _enrolled(world.a, program, "Dana Whitfield", "cus_dana")
    code = dana.links.get(channel="direct").code
    pipe.sign_up(email="cto@orbit.example", customer="cus_orbit", code=code, company="Orbit Labs")
    pipe.pay("pay_orbit_1", customer="cus_orbit", amount=49_900)
    return dana


def test_the_dashboard_shows_sharing_referrals_rewards_and_messages(client, dana_with_history):
    dana = dana_with_history

    response = client.get(dashboard_path(dana))

    assert response.status_code == 200
    page = response.content.decode()
    direct = dana.links.get(channel="direct").code
    social = dana.links.get(channel="social").code
    assert f'value="http://testserver/r/{direct}"' in page or f"/r/{direct}" in page
    assert 'name="viewport"' in page and 'id="copy-button"' in page
    assert reverse("participant_dashboard_qr", kwargs={"token": dashboard_token(dana)}) in page
    context = response.context["dashboard"]
    mailto = urlsplit(context.share.mailto)
    assert (
        mailto.scheme == "mailto" and f"/r/{dana.links.get(channel='email').code}" in parse_qs(mailto.query)["body"][0]
    )
    assert f"/r/{social}" in parse_qs(urlsplit(context.share.linkedin).query)["url"][0]
    assert f"/r/{social}" in parse_qs(urlsplit(context.share.x).query)["url"][0]
    assert "Orbit Labs" in page and "Converted" in page
    assert "50.00 USD" in page and "Flat 50.00 USD per new paying customer" in page
    assert "Thanks for referring Orbit Labs" in page and "Orbit Labs became a customer" in page
    assert context.balances["pending"] == 5_000
    assert response["Cache-Control"] == "private, no-store" and response["Referrer-Policy"] == "no-referrer"


def test_the_dashboard_shows_only_its_own_participants_rows(world, client, pipe, dana_with_history):
    ravi = _enrolled(world.a, dana_with_history.program, "Ravi Menon", "cus_ravi")
    code = ravi.links.get(channel="direct").code
    pipe.sign_up(email="ops@quanta.example", customer="cus_quanta", code=code, company="QuantaFlow")

    page = client.get(dashboard_path(ravi)).content.decode()
    page = re.sub(r'<(p|section)[^>]*id="offer".*?</\1>', "", page, flags=re.S)  # the offer names its amounts

    assert "Ravi Menon" in page and "QuantaFlow" in page
    # The program's offer in words (the same for every participant) names the referrer reward's amount;
    # Dana's own rows must not show anywhere else.
    own_rows = re.sub(r'<section class="card" id="offer">.*?</section>', "", page, flags=re.S)
    assert "Orbit Labs" not in page and "Dana Whitfield" not in page and "50.00 USD" not in own_rows


def test_the_qr_code_of_the_dashboard_is_a_png(client, dana_with_history):
    response = client.get(reverse("participant_dashboard_qr", kwargs={"token": dashboard_token(dana_with_history)}))

    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    assert response.content.startswith(b"\x89PNG")


def test_bad_tokens_answer_404(world, client, dana_with_history):
    dana = dana_with_history
    token = dashboard_token(dana)
    forged_other_tenant = sign_dashboard_payload({"t": world.b.pk, "p": dana.pk, "v": 1})
    wrong_salt = signing.Signer(salt="another-purpose").sign_object({"t": world.a.pk, "p": dana.pk, "v": 1})
    not_a_dict = sign_dashboard_payload([world.a.pk, dana.pk])
    bool_ids = sign_dashboard_payload({"t": True, "p": dana.pk, "v": 1})
    timestamped = signing.dumps({"t": world.a.pk, "p": dana.pk, "v": 1}, salt=DASHBOARD_LINK_SALT)

    for bad in (token[:-2] + "xx", forged_other_tenant, wrong_salt, not_a_dict, bool_ids, timestamped, "garbage"):
        response = client.get(reverse("participant_dashboard", kwargs={"token": bad}))
        assert response.status_code == 404, bad
        assert "Dana Whitfield" not in response.content.decode()


def test_issuing_a_new_link_revokes_the_old_one(world, client, dana_with_history):
    old = dashboard_path(dana_with_history)

    dana = participant_dashboard_link_reissue(participant=dana_with_history, actor=system_actor(world.a), reason="leak")

    assert client.get(old).status_code == 404
    assert client.get(dashboard_path(dana)).status_code == 200
    assert AuditEvent.objects.filter(action="participant.dashboard_link_reissued", object_id=str(dana.pk)).exists()


def test_the_holder_of_a_link_acts_as_a_customer_or_partner_of_that_participant(world, dana_with_history):
    actor = actor_for_participant(dana_with_history)
    assert (actor.kind, actor.tenant, actor.participant_id, actor.can_write) == (
        "customer",
        world.a,
        dana_with_history.pk,
        False,
    )
    partner = f.ParticipantFactory(program=f.ProgramFactory(tenant=world.a, kind="partner"))
    assert actor_for_participant(partner).kind == "partner"


def test_the_command_prints_the_dashboard_link(dana_with_history):
    out = StringIO()
    dana = dana_with_history

    call_command("participant_dashboard_link", f"{dana.tenant.slug}/{dana.program.slug}/cus_dana", stdout=out)

    assert dashboard_url(dana) in out.getvalue()


def test_the_welcome_email_carries_the_dashboard_link(world, django_capture_on_commit_callbacks):
    from django.core import mail

    from programs.services import participant_approve

    program = f.ProgramFactory(tenant=world.a, access="gated")
    applicant = _enrolled(world.a, program, "Dana Whitfield", "cus_dana")
    with django_capture_on_commit_callbacks(execute=True):
        dana = participant_approve(participant=applicant, actor=system_actor(world.a))

    assert mail.outbox[-1].to == [dana.email] and dashboard_url(dana) in mail.outbox[-1].body


def test_the_admin_action_lists_dashboard_links(world, client, dana_with_history):
    client.force_login(world.marketer_a)
    url = reverse("admin:programs_participant_changelist")

    response = client.post(
        url, {"action": "participants_dashboard_links", "_selected_action": [dana_with_history.pk]}, follow=True
    )

    assert dashboard_url(dana_with_history) in response.content.decode()


def test_a_remembered_token_follows_the_link_version_and_the_secret_key(world, client, dana_with_history, settings):
    """Tokens are signed once per process (programs.dashboard_links._token): the same participant, version and
    secret give the same token; a reissued link or a rotated SECRET_KEY signs anew, and the old token stops
    working after the rotation."""
    dana = dana_with_history
    first = dashboard_token(dana)
    assert dashboard_token(dana) == first == sign_dashboard_payload({"t": world.a.pk, "p": dana.pk, "v": 1})
    settings.SECRET_KEY = "rotated-" + settings.SECRET_KEY
    rotated = dashboard_token(dana)
    assert rotated != first and rotated == sign_dashboard_payload({"t": world.a.pk, "p": dana.pk, "v": 1})
    assert client.get(reverse("participant_dashboard", kwargs={"token": first})).status_code == 404
    assert client.get(reverse("participant_dashboard", kwargs={"token": rotated})).status_code == 200
    reissued = participant_dashboard_link_reissue(participant=dana, actor=system_actor(world.a), reason="leak")
    assert dashboard_token(reissued) not in (first, rotated)


def test_a_dashboard_path_remembered_for_its_token_follows_the_script_prefix(dana_with_history):
    """``dashboard_path`` reverses once per token (issue 15) but still per script prefix (a deployment under a
    sub-path) and per link version."""
    from django.urls import set_script_prefix

    plain = dashboard_path(dana_with_history)
    assert plain == reverse("participant_dashboard", kwargs={"token": dashboard_token(dana_with_history)})
    set_script_prefix("/referrals/")
    try:
        assert dashboard_path(dana_with_history) == f"/referrals{plain}"
    finally:
        set_script_prefix("/")
    assert dashboard_path(dana_with_history) == plain
    participant_dashboard_link_reissue(participant=dana_with_history, actor=system_actor(dana_with_history.tenant))
    dana_with_history.refresh_from_db()
    assert dashboard_path(dana_with_history) != plain
