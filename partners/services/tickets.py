"""Support tickets between a partner and the tenant's team; each new message e-mails both sides."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from referral_platform.state import lock, transition
from referral_platform.tenancy.actors import Actor

from ..models import Partner, SupportTicket, TicketAuthor, TicketMessage, TicketStatus
from .notify import mail_on_commit, partner_emails, portal_url, team_emails


def _body(value: str) -> str:
    value = (value or "").strip()
    if not value:
        raise ValidationError({"body": "Write a message."})
    if len(value) > 10_000:
        raise ValidationError({"body": "At most 10,000 characters."})
    return value


def _notify(ticket: SupportTicket, message: TicketMessage) -> None:
    who = ticket.partner.name if message.author_kind == TicketAuthor.PARTNER else f"the {ticket.tenant.name} team"
    mail_on_commit(
        subject=f"[Ticket #{ticket.pk}] {ticket.subject}",
        body=(
            f"New message from {who} ({message.author}):\n\n{message.body}\n\nStatus: "
            f"{ticket.get_status_display()}\nPortal: {portal_url('portal_ticket_detail', pk=ticket.pk)}"
        ),
        recipients=partner_emails(ticket.partner) + team_emails(ticket.tenant_id),
    )


@transaction.atomic
def ticket_open(*, partner: Partner, subject: str, body: str, actor: Actor | str) -> SupportTicket:
    subject = (subject or "").strip()
    if not subject:
        raise ValidationError({"subject": "Give the ticket a subject."})
    if len(subject) > 200:
        raise ValidationError({"subject": "At most 200 characters."})
    body = _body(body)
    label = actor if isinstance(actor, str) else actor.label
    ticket = SupportTicket.objects.create(
        tenant_id=partner.tenant_id, partner=partner, subject=subject, opened_by=label
    )
    message = TicketMessage.objects.create(
        tenant_id=partner.tenant_id, ticket=ticket, author_kind=TicketAuthor.PARTNER, author=label, body=body
    )
    from referral_platform.tenancy.services import audit_record

    audit_record(tenant=partner.tenant, actor=label, action="ticket.opened", obj=ticket, to_state=ticket.status)
    _notify(ticket, message)
    return ticket


@transaction.atomic
def ticket_reply(*, ticket: SupportTicket, body: str, author_kind: str, actor: Actor | str) -> TicketMessage:
    """A reply from the partner (the ticket waits for the team again) or the team (it waits for the partner)."""
    body = _body(body)
    if author_kind not in TicketAuthor.values:
        raise ValidationError({"author_kind": "Unknown author."})
    row = lock(ticket)
    label = actor if isinstance(actor, str) else actor.label
    message = TicketMessage.objects.create(
        tenant_id=row.tenant_id, ticket=row, author_kind=author_kind, author=label, body=body
    )
    target = TicketStatus.OPEN if author_kind == TicketAuthor.PARTNER else TicketStatus.ANSWERED
    if row.status != target:
        transition(row, to=target, actor=label, locked=row)
    row.updated_at = timezone.now()
    row.save(update_fields=["updated_at"])
    ticket.status, ticket.updated_at = row.status, row.updated_at
    _notify(row, message)
    return message


@transaction.atomic
def ticket_close(*, ticket: SupportTicket, actor: Actor | str, reason: str = "") -> SupportTicket:
    row = lock(ticket)
    if row.status != TicketStatus.CLOSED:
        transition(row, to=TicketStatus.CLOSED, actor=actor, reason=reason, locked=row)
    ticket.status, ticket.closed_at = row.status, row.closed_at
    return row
