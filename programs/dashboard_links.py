"""Signed links to a participant's dashboard (the page where they share, and follow referrals and rewards).

A link carries ``{"t": tenant id, "p": participant id, "v": dashboard_link_version}`` signed with the
site's secret key (``django.core.signing``, salt ``DASHBOARD_LINK_SALT``). Nobody can forge one or
change the ids in it without the secret; a link resolves only to a participant of the tenant it names,
at the link version it carries.

No expiry, by choice: like a referral link, it is the participant's permanent key to their own
dashboard, carried in every e-mail they get, and it lets them read their own data only (it changes
nothing). It is revoked by issuing a new one (``participant_dashboard_link_reissue`` raises the
participant's ``dashboard_link_version``) or, for every participant at once, by rotating SECRET_KEY.
"""

from __future__ import annotations

from functools import lru_cache

from django.conf import settings
from django.core import signing
from django.urls import get_script_prefix, get_urlconf, reverse

from referral_platform.tenancy import rls

from .models import Participant

DASHBOARD_LINK_SALT = "programs.participant-dashboard.v1"


def _signer() -> signing.Signer:
    # No timestamp: the link does not expire, and the same participant always gets the same link.
    return signing.Signer(salt=DASHBOARD_LINK_SALT)


def sign_dashboard_payload(payload: dict) -> str:
    return _signer().sign_object(payload)


def dashboard_token(participant: Participant) -> str:
    """The signed token of ``participant``'s dashboard link (the same for a given link version)."""
    return _token(participant.tenant_id, participant.pk, participant.dashboard_link_version, settings.SECRET_KEY)


@lru_cache(maxsize=16_384)
def _token(tenant_id: int, participant_id: int, version: int, _secret_key: str) -> str:
    # Signed once per process for a given link version and secret (a billing run's messages name the same
    # participants again and again, issue 15); a new version or a rotated SECRET_KEY signs anew.
    return sign_dashboard_payload({"t": tenant_id, "p": participant_id, "v": version})


def dashboard_path(participant: Participant) -> str:
    return _path(dashboard_token(participant), get_script_prefix(), get_urlconf())


@lru_cache(maxsize=16_384)
def _path(token: str, _prefix: str, _urlconf) -> str:
    # Reversed once per process for a token, script prefix and URLconf (the messages of a billing run, issue 15).
    return reverse("participant_dashboard", kwargs={"token": token})


def dashboard_url(participant: Participant) -> str:
    """The absolute dashboard URL (``SITE_URL`` + path), for e-mails and the admin."""
    return f"{settings.SITE_URL}{dashboard_path(participant)}"


def participant_for_dashboard_token(token: str) -> Participant | None:
    """The participant a token names, or None for a tampered, malformed, revoked or mismatched token.

    The participant is looked up within the tenant the token names, so a token can never reach
    another tenant's row, whatever ids it carries.
    """
    try:
        payload = _signer().unsign_object(token)
    except (signing.BadSignature, ValueError):
        return None
    if not isinstance(payload, dict):
        return None
    tenant_id, participant_id, version = payload.get("t"), payload.get("p"), payload.get("v")
    if not all(
        isinstance(value, int) and not isinstance(value, bool) for value in (tenant_id, participant_id, version)
    ):
        return None
    rls.bind(tenant_id)  # signed: the request sees this tenant's rows only from here (row-level security)
    return (
        Participant.objects.for_tenant(tenant_id)
        .select_related("tenant", "program")
        .filter(pk=participant_id, dashboard_link_version=version)
        .first()
    )
