"""Members, invitations and the tenant switcher."""

from __future__ import annotations

import re

import pytest
from django.core import mail

from referral_platform.tenancy.models import Invitation, Membership, Role

from .factories import MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db


def _invite(client, world, email="newbie@tenant-a.example", role=Role.MARKETER):
    client.force_login(world.owner_a)
    with pytest.MonkeyPatch.context():
        return client.post("/workspace/members/", {"email": email, "role": role})


def _link_from_mail() -> str:
    return re.search(r"https?://[^/]+(/invitations/[^/\s]+/)", mail.outbox[-1].body).group(1)


def test_owner_invites_a_marketer_by_email(client, world, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = _invite(client, world)

    assert response.status_code == 302
    invitation = Invitation.objects.get(email="newbie@tenant-a.example")
    assert invitation.tenant == world.a and invitation.role == Role.MARKETER
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["newbie@tenant-a.example"]
    assert "/invitations/" in mail.outbox[0].body
    assert invitation.token_hash not in mail.outbox[0].body


def test_marketer_cannot_invite(client, world):
    client.force_login(world.marketer_a)

    response = client.post("/workspace/members/", {"email": "x@tenant-a.example", "role": Role.OWNER})

    assert response.status_code == 403
    assert not Invitation.objects.exists()


def test_inviting_with_a_bad_email_names_the_field(client, world):
    response = _invite(client, world, email="not-an-email")

    assert response.status_code == 400
    assert "Enter a valid email address." in response.content.decode()
    assert not Invitation.objects.exists()


def test_invitation_signup_joins_the_tenant_without_creating_a_workspace(
    client, world, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        _invite(client, world)
    link = _link_from_mail()
    client.logout()

    landing = client.get(link)
    signup = client.post(
        "/accounts/signup/",
        {"email": "newbie@tenant-a.example", "password1": "another-long-pass-77", "password2": "another-long-pass-77"},
    )

    assert landing.status_code == 200 and "Join Tenant A" in landing.content.decode()
    assert signup.status_code == 302
    membership = Membership.objects.get(user__email="newbie@tenant-a.example")
    assert membership.tenant == world.a and membership.role == Role.MARKETER
    assert Invitation.objects.get(email="newbie@tenant-a.example").accepted_at is not None


def test_invitation_works_once_and_only_for_its_email(client, world, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        _invite(client, world)
    link = _link_from_mail()
    stranger = UserFactory()
    invitee = UserFactory(username="newbie@tenant-a.example", email="newbie@tenant-a.example")

    client.force_login(stranger)
    wrong_user = client.post(link)
    client.force_login(invitee)
    accepted = client.post(link)
    replay = client.post(link)

    assert wrong_user.status_code == 400
    assert not Membership.objects.filter(user=stranger, tenant=world.a).exists()
    assert accepted.status_code == 302
    assert replay.status_code == 404
    assert Membership.objects.filter(user=invitee, tenant=world.a).count() == 1


def test_invitation_with_unknown_token_is_404(client):
    assert client.get("/invitations/nonsense/").status_code == 404


def test_members_page_lists_only_the_session_tenant(client, world):
    client.force_login(world.owner_b)

    page = client.get("/workspace/members/").content.decode()

    assert world.owner_b.email in page
    assert world.owner_a.email not in page and world.marketer_a.email not in page


def test_switcher_moves_between_own_workspaces(client, world):
    MembershipFactory(tenant=world.b, user=world.owner_a, role=Role.VIEWER)
    client.force_login(world.owner_a)

    client.post(f"/workspace/switch/{world.b.slug}/")
    page = client.get("/workspace/members/").content.decode()

    assert world.owner_b.email in page
    assert client.get("/api/v1/me").json()["tenant"]["slug"] == world.b.slug


def test_cannot_switch_into_a_workspace_without_membership(client, world):
    client.force_login(world.owner_b)

    response = client.post(f"/workspace/switch/{world.a.slug}/")

    assert response.status_code == 404
    assert client.get("/api/v1/me").json()["tenant"]["slug"] == world.b.slug
