"""Sign-up creates a workspace with the user as owner; bad sign-ups create nothing; log-in is throttled."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from referral_platform.tenancy.models import Membership, Role, Tenant

from .factories import PASSWORD, UserFactory

pytestmark = pytest.mark.django_db
User = get_user_model()


def _signup(client, **overrides):
    data = {
        "email": "founder@startup.example",
        "workspace_name": "Startup Inc",
        "password1": "a-long-unique-passphrase-42",
        "password2": "a-long-unique-passphrase-42",
    }
    data.update(overrides)
    return client.post("/accounts/signup/", data)


def test_signup_creates_a_workspace_with_the_user_as_owner(client):
    response = _signup(client)

    assert response.status_code == 302
    user = User.objects.get(email="founder@startup.example")
    membership = Membership.objects.get(user=user)
    assert membership.role == Role.OWNER
    assert membership.tenant.name == "Startup Inc" and membership.tenant.slug == "startup-inc"
    assert client.get("/").content.decode().count("Startup Inc") >= 1


def test_duplicate_email_is_a_clear_error_and_creates_no_tenant(client):
    UserFactory(username="taken@startup.example", email="taken@startup.example")
    tenants_before = Tenant.objects.count()

    response = _signup(client, email="taken@startup.example", workspace_name="Second Co")

    assert response.status_code == 200
    assert "already registered" in response.content.decode()
    assert Tenant.objects.count() == tenants_before
    assert not Tenant.objects.filter(name="Second Co").exists()


@pytest.mark.parametrize(
    ("password", "message"),
    [("short1", "too short"), ("password123", "too common"), ("1234567890123", "entirely numeric")],
    ids=["too-short", "common", "numeric"],
)
def test_weak_password_is_a_clear_error_and_creates_nothing(client, password, message):
    response = _signup(client, password1=password, password2=password)

    assert response.status_code == 200
    assert message in response.content.decode()
    assert not User.objects.filter(email="founder@startup.example").exists()
    assert not Tenant.objects.exists()


def test_missing_workspace_name_is_a_field_error(client):
    response = _signup(client, workspace_name="  ")

    assert response.status_code == 200
    assert "Enter a name for your workspace." in response.content.decode()
    assert not User.objects.exists() and not Tenant.objects.exists()


def test_failed_logins_are_throttled(client):
    user = UserFactory(username="victim@startup.example", email="victim@startup.example")

    statuses = [
        client.post("/accounts/login/", {"login": user.email, "password": "wrong-guess"}).status_code for _ in range(7)
    ]
    # Even the right password is refused while the account is throttled.
    blocked = client.post("/accounts/login/", {"login": user.email, "password": PASSWORD})

    assert statuses[:5] == [200] * 5
    assert 429 in statuses[5:]
    assert blocked.status_code == 429
    assert "_auth_user_id" not in client.session


def test_login_with_the_right_password_works(client):
    user = UserFactory(username="ok@startup.example", email="ok@startup.example")

    response = client.post("/accounts/login/", {"login": user.email, "password": PASSWORD})

    assert response.status_code == 302
    assert client.session["_auth_user_id"] == str(user.pk)
