"""E-mails of the partners app: sent after the transaction commits, so a rolled-back change tells nobody."""

from __future__ import annotations

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.urls import reverse

from programs.mailing import tenant_email_send
from referral_platform.tenancy.models import WRITE_ROLES, Membership, Tenant

from ..models import Partner, PartnerUser


def portal_url(name: str = "portal_home", **kwargs) -> str:
    return settings.SITE_URL + reverse(name, kwargs=kwargs or None)


def partner_emails(partner: Partner) -> list[str]:
    """The addresses of the partner's active portal users."""
    return sorted(
        PartnerUser.objects.for_tenant(partner.tenant_id)
        .filter(partner=partner, is_active=True)
        .values_list("user__email", flat=True)
    )


def team_emails(tenant: Tenant | int) -> list[str]:
    """The tenant's owners and marketers: the people who decide on partners."""
    tenant_id = tenant if isinstance(tenant, int) else tenant.pk
    return sorted(
        set(
            Membership.objects.for_tenant(tenant_id)
            .filter(role__in=list(WRITE_ROLES))
            .exclude(user__email="")
            .values_list("user__email", flat=True)
        )
    )


def mail_on_commit(*, subject: str, body: str, recipients: list[str], tenant_id: int | None = None) -> None:
    """One e-mail per address after commit; with ``tenant_id``, through ``programs.mailing`` (unsubscribe link,
    unsubscribed addresses skipped)."""
    recipients = [address for address in dict.fromkeys(recipients) if address]
    if not recipients:
        return

    def send():
        if tenant_id is None:  # the workspace's own team: one message, as before
            send_mail(subject=subject, message=body, from_email=None, recipient_list=recipients)
            return
        for address in recipients:  # each person gets their own unsubscribe link
            tenant_email_send(tenant_id=tenant_id, to=address, subject=subject, body=body)

    transaction.on_commit(send)


def tell_partner(partner: Partner, *, subject: str, body: str, extra: list[str] | None = None) -> None:
    footer = f"\n\nYour partner portal: {portal_url()}"
    mail_on_commit(
        subject=subject,
        body=body + footer,
        recipients=partner_emails(partner) + list(extra or []),
        tenant_id=partner.tenant_id,
    )


def tell_team(tenant: Tenant, *, subject: str, body: str) -> None:
    mail_on_commit(subject=subject, body=body, recipients=team_emails(tenant))
