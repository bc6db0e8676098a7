"""The fuller dashboard (R-9, R-28) and embedding it with a short-lived signed URL."""

from __future__ import annotations

import pytest
from django.core import signing
from django.urls import reverse

from engagement.models import Notification, ParticipantPreference
from engagement.services import embed_token_create, embed_token_read
from engagement.services.embedding import EMBED_SALT
from programs.dashboard_links import dashboard_token
from programs.services import participant_dashboard_link_reissue, participant_enroll
from referral_platform.tenancy.actors import system_actor
from tests import factories as f

pytestmark = pytest.mark.django_db


def enrolled(tenant, name="Dana Sharer", email="dana@customer.example"):
    program = f.ProgramVersionFactory(program=f.ProgramFactory(tenant=tenant)).program
    return participant_enroll(
        tenant=tenant, program=program, external_id=f"x-{email}", name=name, email=email, actor=system_actor(tenant)
    )


def test_the_dashboard_offers_every_way_to_share_clicks_progress_and_notifications(world, client):
    participant = enrolled(world.a)
    Notification.objects.create(tenant=world.a, participant=participant, title="Welcome aboard nt5512")

    page = client.get(reverse("participant_dashboard", kwargs={"token": dashboard_token(participant)}))

    html = page.content.decode()
    assert page.status_code == 200
    for marker in ("share-whatsapp", "share-sms", "native-share", "email-body", "click-count", "share-linkedin"):
        assert f'id="{marker}"' in html, marker
    assert "https://wa.me/?text=" in html and "Welcome aboard nt5512" in html and 'id="leaderboard"' in html


def test_leaderboard_opt_in_needs_the_participants_own_token(world, client):
    participant = enrolled(world.a)
    other = enrolled(world.b, email="bo@b.example")
    url = reverse("participant_leaderboard", kwargs={"token": dashboard_token(participant)})

    assert client.post(url, {"on_leaderboard": "1"}).status_code == 302
    token = dashboard_token(participant)
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    bad = client.post(reverse("participant_leaderboard", kwargs={"token": tampered}), {"on_leaderboard": "0"})

    assert bad.status_code == 404
    assert client.get(reverse("participant_leaderboard", kwargs={"token": tampered})).status_code == 404
    shown = client.get(url)  # typed or reloaded: the dashboard's leaderboard, nothing changed
    assert shown.status_code == 302 and shown["Location"].endswith(f"/p/{dashboard_token(participant)}/#leaderboard")
    assert ParticipantPreference.objects.get().participant == participant
    assert not ParticipantPreference.objects.filter(participant=other).exists()


def test_the_api_hands_out_a_short_lived_dashboard_url_that_frames_only_from_allowed_domains(world, client):
    participant = enrolled(world.a)

    answer = world.api(world.key_a).post(f"/api/v1/participants/{participant.pk}/dashboard-url").json()
    page = client.get(answer["url"].replace("http://127.0.0.1:8000", ""))

    assert page.status_code == 200 and participant.name in page.content.decode()
    policy = page["Content-Security-Policy"]
    assert policy.startswith("frame-ancestors 'self'")
    assert "https://tenant-a.example" in policy and "https://*.tenant-a.example" in policy
    assert "X-Frame-Options" not in page


def test_embed_token_of_tenant_a_never_shows_b_and_bad_tokens_are_refused(world, client, settings):
    a_person, b_person = enrolled(world.a), enrolled(world.b, name="Bea Bee", email="bea@b.example")
    token = embed_token_create(a_person)

    own = client.get(reverse("embedded_dashboard", kwargs={"token": token}))
    assert own.status_code == 200 and "Bea Bee" not in own.content.decode()

    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    foreign = signing.TimestampSigner(salt=EMBED_SALT).sign_object(
        {"t": world.b.pk, "p": a_person.pk, "v": a_person.dashboard_link_version}
    )
    permanent_link_token = dashboard_token(a_person)
    for bad in (tampered, foreign, permanent_link_token, "nope"):
        response = client.get(reverse("embedded_dashboard", kwargs={"token": bad}))
        assert response.status_code == 403 and a_person.name not in response.content.decode(), bad
    assert embed_token_read(embed_token_create(b_person)) == b_person


def test_an_expired_embed_token_is_refused(world, client, settings):
    participant = enrolled(world.a)
    token = embed_token_create(participant)
    settings.EMBED_TOKEN_SECONDS = -1

    response = client.get(reverse("embedded_dashboard", kwargs={"token": token}))

    assert response.status_code == 403 and participant.name not in response.content.decode()


def test_reissuing_the_dashboard_link_revokes_embed_tokens(world, client):
    participant = enrolled(world.a)
    token = embed_token_create(participant)

    participant_dashboard_link_reissue(participant=participant, actor=system_actor(world.a))

    assert client.get(reverse("embedded_dashboard", kwargs={"token": token})).status_code == 403
