"""Issue 13, item 4: program and participant status moves in the API, API keys revoked with their creator's
membership (and listed to the owner), key scopes chosen at creation."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from programs.models import ParticipantStatus, ProgramStatus
from referral_platform.tenancy.actors import Actor, system_actor
from referral_platform.tenancy.models import ApiKey, ApiKeyScope, AuditEvent, Membership
from referral_platform.tenancy.services import api_key_create, membership_remove
from rewards.tests.pipeline import program_with_rules, rules_doc
from tests import factories as f


def _member(membership) -> Actor:
    return Actor(kind="member", tenant=membership.tenant, user=membership.user, role=membership.role)


def _client(raw_key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    return client


@pytest.mark.django_db
def test_a_program_is_paused_activated_and_archived_through_the_api(world):
    program = program_with_rules(world.a, rules_doc(referrer=[{"kind": "flat_per_conversion", "amount_minor": 100}]))
    client = world.api(world.key_a)

    paused = client.post(f"/api/v1/programs/{program.pk}/pause", {"reason": "season over"}, format="json")
    activated = client.post(f"/api/v1/programs/{program.pk}/activate", {}, format="json")
    archived = client.post(f"/api/v1/programs/{program.pk}/archive", {}, format="json")
    again = client.post(f"/api/v1/programs/{program.pk}/activate", {}, format="json")

    assert [r.status_code for r in (paused, activated, archived)] == [200, 200, 200]
    assert (paused.json()["status"], activated.json()["status"], archived.json()["status"]) == (
        "paused",
        "active",
        "archived",
    )
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"
    program.refresh_from_db()
    assert program.status == ProgramStatus.ARCHIVED


@pytest.mark.django_db
def test_a_participant_is_approved_removed_and_an_applicant_rejected_through_the_api(world):
    program = f.ProgramFactory(tenant=world.a)
    applicant = f.ParticipantFactory(program=program, status=ParticipantStatus.PENDING)
    other = f.ParticipantFactory(program=program, status=ParticipantStatus.PENDING)
    client = world.api(world.key_a)

    approved = client.post(f"/api/v1/participants/{applicant.pk}/approve", {}, format="json")
    removed = client.post(f"/api/v1/participants/{applicant.pk}/remove", {"reason": "left"}, format="json")
    rejected = client.post(f"/api/v1/participants/{other.pk}/reject", {"reason": "not a fit"}, format="json")
    reject_removed = client.post(f"/api/v1/participants/{applicant.pk}/reject", {}, format="json")

    assert (approved.json()["status"], removed.json()["status"], rejected.json()["status"]) == (
        "active",
        "removed",
        "rejected",
    )
    assert reject_removed.status_code == 409
    assert AuditEvent.objects.filter(tenant=world.a, action="participant.rejected", reason="not a fit").exists()


@pytest.mark.django_db
def test_a_viewer_session_cannot_move_a_status(world, client):
    program = f.ProgramFactory(tenant=world.a)
    client.force_login(world.viewer_a)

    response = client.post(f"/api/v1/programs/{program.pk}/pause", {}, content_type="application/json")

    assert response.status_code == 403
    program.refresh_from_db()
    assert program.status == ProgramStatus.ACTIVE


@pytest.mark.django_db
def test_removing_a_membership_revokes_the_keys_its_user_created_and_tells_the_owner(world):
    membership = Membership.objects.get(tenant=world.a, user=world.marketer_a)
    issued = api_key_create(tenant=world.a, name="marketer's CRM sync", actor=_member(membership))
    owners_key = api_key_create(tenant=world.a, name="owner's", actor=system_actor(world.a))
    assert _client(issued.raw_key).get("/api/v1/programs").status_code == 200

    revoked = membership_remove(membership=membership, actor=system_actor(world.a))

    assert [key.pk for key in revoked] == [issued.api_key.pk]
    assert _client(issued.raw_key).get("/api/v1/programs").status_code == 401
    assert _client(owners_key.raw_key).get("/api/v1/programs").status_code == 200
    key = ApiKey.objects.get(pk=issued.api_key.pk)
    assert key.revoked_at is not None and world.marketer_a.email in key.revoked_reason
    assert not Membership.objects.filter(tenant=world.a, user=world.marketer_a).exists()


@pytest.mark.django_db
def test_deleting_a_member_in_the_admin_revokes_their_keys_and_lists_them(world, client):
    membership = Membership.objects.get(tenant=world.a, user=world.marketer_a)
    issued = api_key_create(tenant=world.a, name="crm-sync-key", actor=_member(membership))
    client.force_login(world.owner_a)

    response = client.post(f"/admin/tenancy/membership/{membership.pk}/delete/", {"post": "yes"}, follow=True)

    assert response.status_code == 200
    assert "crm-sync-key" in response.content.decode()
    assert ApiKey.objects.get(pk=issued.api_key.pk).revoked_at is not None
    listing = client.get("/admin/tenancy/apikey/").content.decode()
    assert "was removed from the workspace" in listing


@pytest.mark.django_db
def test_a_read_only_key_reads_but_cannot_write(world):
    issued = api_key_create(tenant=world.a, name="reporting", actor=system_actor(world.a), scope=ApiKeyScope.READ_ONLY)
    client = _client(issued.raw_key)
    program = f.ProgramFactory(tenant=world.a)

    read = client.get("/api/v1/programs")
    write = client.post(f"/api/v1/programs/{program.pk}/pause", {}, format="json")

    assert read.status_code == 200
    assert write.status_code == 403 and write.json()["error"]["code"] == "permission_denied"
    program.refresh_from_db()
    assert program.status == ProgramStatus.ACTIVE


@pytest.mark.django_db
def test_the_scope_is_chosen_when_the_key_is_created_in_the_admin(world, client):
    client.force_login(world.owner_a)

    client.post("/admin/tenancy/apikey/add/", {"name": "BI export", "scope": "read_only"}, follow=True)

    key = ApiKey.objects.get(tenant=world.a, name="BI export")
    assert key.scope == ApiKeyScope.READ_ONLY
