"""Short-lived signed dashboard URLs for the tenant's product to link or frame (R-28 embedding).

The token carries tenant id, participant id and the participant's dashboard link version, signed with a
timestamp (``TimestampSigner``, its own salt): it is refused after ``EMBED_TOKEN_SECONDS`` or when
tampered with, and revoked with the participant's dashboard link (a re-issued link raises the version).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.core import signing
from django.urls import reverse
from django.utils import timezone

from programs.models import Participant

EMBED_SALT = "engagement.embedded-dashboard.v1"


def embed_token_create(participant: Participant) -> str:
    payload = {"t": participant.tenant_id, "p": participant.pk, "v": participant.dashboard_link_version}
    return signing.TimestampSigner(salt=EMBED_SALT).sign_object(payload)


def embed_url_create(participant: Participant) -> tuple[str, datetime]:
    """The absolute URL and when it stops working."""
    token = embed_token_create(participant)
    expires_at = timezone.now() + timedelta(seconds=settings.EMBED_TOKEN_SECONDS)
    return settings.SITE_URL + reverse("embedded_dashboard", kwargs={"token": token}), expires_at


def embed_token_read(token: str, *, max_age: int | None = None) -> Participant | None:
    """The participant of a valid, unexpired token; None for an expired, tampered or revoked one."""
    try:
        payload = signing.TimestampSigner(salt=EMBED_SALT).unsign_object(
            token, max_age=settings.EMBED_TOKEN_SECONDS if max_age is None else max_age
        )
    except (signing.BadSignature, signing.SignatureExpired, ValueError):
        return None
    if not isinstance(payload, dict):
        return None
    ids = (payload.get("t"), payload.get("p"), payload.get("v"))
    if not all(isinstance(value, int) and not isinstance(value, bool) for value in ids):
        return None
    return (
        Participant.objects.for_tenant(ids[0])
        .select_related("tenant", "program")
        .filter(pk=ids[1], dashboard_link_version=ids[2])
        .first()
    )
