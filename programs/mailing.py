"""E-mail to people of a workspace, honouring their unsubscribe (every sender goes through here).

Every e-mail carries a one-click unsubscribe link (RFC 8058: ``List-Unsubscribe`` with the URL and
``List-Unsubscribe-Post: List-Unsubscribe=One-Click``) and a footer line with the same link. An address
that unsubscribed (``EmailOptOut``, per workspace) gets nothing from any sender: ``tenant_email_send``
drops it and says so. The link is signed (tenant id + address, ``django.core.signing``) and does not
expire: an unsubscribe link must keep working.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.core import signing
from django.core.mail import EmailMultiAlternatives
from django.db import IntegrityError, transaction
from django.urls import reverse

from referral_platform.db.sql import keys_in

from .models import EmailOptOut

logger = logging.getLogger(__name__)

UNSUBSCRIBE_SALT = "programs.unsubscribe.v1"


def unsubscribe_token(tenant_id: int, email: str) -> str:
    return signing.Signer(salt=UNSUBSCRIBE_SALT).sign_object({"t": tenant_id, "e": email.strip().lower()})


def unsubscribe_url(tenant_id: int, email: str) -> str:
    return settings.SITE_URL + reverse("email_unsubscribe", kwargs={"token": unsubscribe_token(tenant_id, email)})


def unsubscribe_token_read(token: str) -> tuple[int, str] | None:
    """(tenant id, address) of a token, or None for a tampered or malformed one."""
    try:
        payload = signing.Signer(salt=UNSUBSCRIBE_SALT).unsign_object(token)
    except (signing.BadSignature, ValueError):
        return None
    if not isinstance(payload, dict):
        return None
    tenant_id, email = payload.get("t"), payload.get("e")
    if not isinstance(tenant_id, int) or isinstance(tenant_id, bool) or not isinstance(email, str) or not email:
        return None
    return tenant_id, email


def email_is_opted_out(tenant_id: int, email: str) -> bool:
    return EmailOptOut.objects.for_tenant(tenant_id).filter(email=email.strip().lower()).exists()


def emails_opted_out(pairs: set[tuple[int, str]]) -> set[tuple[int, str]]:
    """Which of the (tenant id, address) pairs unsubscribed (addresses lower-cased), with one query."""
    if not pairs:
        return set()
    wanted = [(tenant_id, email.strip().lower()) for tenant_id, email in pairs]
    return set(
        EmailOptOut.objects.filter(keys_in(EmailOptOut, ("tenant", "email"), wanted)).values_list("tenant_id", "email")
    )


def email_opt_out(*, tenant_id: int, email: str, source: str = "link") -> EmailOptOut:
    """Record that ``email`` wants no more e-mail from the workspace (idempotent, safe under concurrency)."""
    address = email.strip().lower()
    try:
        with transaction.atomic():
            row, _ = EmailOptOut.objects.get_or_create(tenant_id=tenant_id, email=address, defaults={"source": source})
    except IntegrityError:
        row = EmailOptOut.objects.for_tenant(tenant_id).get(email=address)
    return row


def email_opt_in(*, tenant_id: int, email: str) -> None:
    """Undo an unsubscribe (the person asked for e-mail again)."""
    EmailOptOut.objects.for_tenant(tenant_id).filter(email=email.strip().lower()).delete()


def tenant_email_message(
    *, tenant_id: int, to: str, subject: str, body: str, html: str = "", headers: dict | None = None
) -> EmailMultiAlternatives:
    """The message with its unsubscribe footer and headers (not sent; no opt-out check)."""
    link = unsubscribe_url(tenant_id, to)
    message = EmailMultiAlternatives(
        subject=subject,
        body=f"{body.rstrip()}\n\n--\nUnsubscribe (one click): {link}\n",
        from_email=None,
        to=[to],
        headers={
            "List-Unsubscribe": f"<{link}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            **(headers or {}),
        },
    )
    if html:
        message.attach_alternative(f'{html}<p style="font-size:12px"><a href="{link}">Unsubscribe</a></p>', "text/html")
    return message


def tenant_email_send(
    *, tenant_id: int, to: str, subject: str, body: str, html: str = "", headers: dict | None = None
) -> bool:
    """Send now unless ``to`` unsubscribed from the workspace. True when handed to the mail backend."""
    if not to or email_is_opted_out(tenant_id, to):
        logger.info("e-mail to an unsubscribed or empty address dropped (tenant %s)", tenant_id)
        return False
    tenant_email_message(tenant_id=tenant_id, to=to, subject=subject, body=body, html=html, headers=headers).send()
    return True


def tenant_email_send_on_commit(*, tenant_id: int, to: str, subject: str, body: str, fail_silently: bool = False):
    """``tenant_email_send`` once the transaction commits (never for a rolled-back change)."""

    def send():
        try:
            tenant_email_send(tenant_id=tenant_id, to=to, subject=subject, body=body)
        except Exception:
            if not fail_silently:
                raise
            logger.exception("could not e-mail %s (tenant %s)", "a participant", tenant_id)

    transaction.on_commit(send)
