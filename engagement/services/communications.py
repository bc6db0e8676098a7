"""Communications to participants (R-27): invitations, launch announcements, reminders, success stories and
program updates, each from the program's editable template (defaults below), logged per participant
(``Communication``, once per kind and related key), shown in-app (``Notification``) and e-mailed by a
Celery task through ``programs.mailing`` (unsubscribe link and headers; unsubscribed addresses skipped).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.template import Context, Engine, TemplateSyntaxError
from django.utils import timezone

from programs.dashboard_links import dashboard_url
from programs.mailing import email_is_opted_out, tenant_email_message, tenant_email_send
from programs.models import Participant, ParticipantStatus, Program
from referral_platform.celery import enqueue_on_commit
from referrals.models import Channel, Referral
from referrals.selectors import participant_share_links

from ..models import (
    Communication,
    CommunicationKind,
    CommunicationStatus,
    MessageTemplate,
    Moment,
    Notification,
    TriggerPolicy,
)

logger = logging.getLogger(__name__)

# Plain-text templates: no HTML escaping of names in e-mail bodies.
_ENGINE = Engine(autoescape=False)

DEFAULT_TEMPLATES: dict[str, tuple[str, str]] = {
    CommunicationKind.INVITATION: (
        "Thank you, {{ participant.name }}: know someone who'd like {{ program.tenant.name }} too?",
        "Hi {{ participant.name }},\n\n"
        "thank you{% if score is not None %} for the {{ score }} out of 10{% endif %}! If you know someone who would "
        "benefit from {{ program.tenant.name }} as well, share your personal link:\n\n{{ referral_link }}\n\n"
        "{% if offer %}{{ offer }}\n\n{% endif %}"
        "Your dashboard (share, follow your referrals and rewards): {{ dashboard_url }}\n"
        "{% if review_url %}\nWould you also leave a short public review? {{ review_url }}\n{% endif %}",
    ),
    CommunicationKind.LAUNCH: (
        "{{ program.name }} is live: refer a friend",
        "Hi {{ participant.name }},\n\n{{ program.name }} is live. Share your link:\n\n{{ referral_link }}\n\n"
        "{% if offer %}{{ offer }}\n\n{% endif %}Your dashboard: {{ dashboard_url }}\n",
    ),
    CommunicationKind.REMINDER: (
        "Your {{ program.name }} link is waiting",
        "Hi {{ participant.name }},\n\nyou have not shared your link yet. It takes a minute:\n\n{{ referral_link }}\n\n"
        "Your dashboard: {{ dashboard_url }}\n",
    ),
    CommunicationKind.SUCCESS_STORY: (
        "{{ headline }}",
        "Hi {{ participant.name }},\n\n{{ story }}\n\n"
        "Your link: {{ referral_link }}\nYour dashboard: {{ dashboard_url }}\n",
    ),
    CommunicationKind.PROGRAM_UPDATE: (
        "The terms of {{ program.name }} changed",
        "Hi {{ participant.name }},\n\nthe terms of {{ program.name }} changed (version {{ version.number }}"
        "{% if version.note %}: {{ version.note }}{% endif %}).\n\n"
        "What stays the same: referrals you already made keep the terms they were made under "
        "(version {{ previous.number }}), whatever changes later.\n\n"
        "The new terms: {{ terms_url }}\nYour dashboard: {{ dashboard_url }}\n",
    ),
}


def template_for(*, program: Program, kind: str) -> tuple[str, str]:
    row = MessageTemplate.objects.for_tenant(program.tenant_id).filter(program=program, kind=kind).first()
    return (row.subject, row.body) if row else DEFAULT_TEMPLATES[kind]


def render_communication(*, subject: str, body: str, context: dict) -> tuple[str, str]:
    try:
        rendered_subject = _ENGINE.from_string(subject).render(Context(context)).strip().replace("\n", " ")
        rendered_body = _ENGINE.from_string(body).render(Context(context))
    except TemplateSyntaxError as error:
        raise ValidationError({"body": f"Template error: {error}"}) from error
    return rendered_subject[:200], rendered_body


def _primary_link(participant: Participant) -> str:
    links = participant_share_links(participant.tenant_id, participant=participant)
    for channel in (Channel.DIRECT, Channel.EMAIL):
        for link in links:
            if link["channel"] == channel:
                return link["url"]
    return links[0]["url"] if links else ""


def offer_sentence(program: Program) -> str:
    """The offer in words from the program's current rules (``programs.terms.program_offer_sentence``), or ""."""
    from programs.services import current_version_or_none
    from programs.terms import program_offer_sentence

    version = current_version_or_none(program)
    return program_offer_sentence(program, version.rules) if version is not None else ""


def base_context(participant: Participant) -> dict:
    program = participant.program
    return {
        "participant": participant,
        "program": program,
        "referral_link": _primary_link(participant),
        "dashboard_url": dashboard_url(participant),
        "offer": offer_sentence(program),
    }


def invitation_context(*, participant: Participant, moment: Moment, policy: TriggerPolicy | None) -> dict:
    return {
        "score": moment.score,
        "trigger": moment.get_trigger_display(),
        "review_url": policy.review_url if policy else "",
    }


def communication_send(
    *, participant: Participant, kind: str, related_key: str, context: dict | None = None, notify: bool = True
) -> Communication | None:
    """Log the message once per (participant, kind, related key), show it in-app, e-mail it after commit.
    Returns None when it was already sent (nothing written, nothing mailed)."""
    if kind not in CommunicationKind.values:
        raise ValueError(f"unknown communication kind {kind!r}")
    subject_template, body_template = template_for(program=participant.program, kind=kind)
    subject, body = render_communication(
        subject=subject_template, body=body_template, context={**base_context(participant), **(context or {})}
    )
    try:
        with transaction.atomic():
            row = Communication.objects.create(
                tenant_id=participant.tenant_id,
                participant=participant,
                kind=kind,
                related_key=related_key[:100],
                email_to=participant.email,
                subject=subject,
                body=body,
            )
    except IntegrityError:
        return None
    if notify:
        Notification.objects.create(
            tenant_id=participant.tenant_id, participant=participant, title=subject, body=body[:2000]
        )
    from ..tasks import communication_deliver

    enqueue_on_commit(communication_deliver, row.pk)
    return row


def communication_deliver(*, communication_id: int) -> Communication | None:
    """Hand one logged message to the mail backend (once; an unsubscribed address is skipped)."""
    with transaction.atomic():
        row = (
            Communication.objects.select_for_update()
            .filter(pk=communication_id, status=CommunicationStatus.QUEUED)
            .first()
        )
        if row is None:
            return None
        if email_is_opted_out(row.tenant_id, row.email_to):
            row.status = CommunicationStatus.UNSUBSCRIBED
        else:
            try:
                tenant_email_send(tenant_id=row.tenant_id, to=row.email_to, subject=row.subject, body=row.body)
            except Exception:
                logger.exception("could not e-mail communication %s", communication_id)
                row.status = CommunicationStatus.FAILED
            else:
                row.status = CommunicationStatus.SENT
                row.sent_at = timezone.now()
        row.save(update_fields=["status", "sent_at"])
    return row


# --- campaigns ----------------------------------------------------------------------------------


def _active(program: Program):
    return Participant.objects.for_tenant(program.tenant_id).filter(program=program, status=ParticipantStatus.ACTIVE)


@transaction.atomic
def campaign_send(*, program: Program, kind: str, key: str, context: dict | None = None) -> int:
    """Send ``kind`` to every active participant of ``program`` once per ``key`` (launch, story id …)."""
    sent = 0
    for participant in _active(program).select_related("program__tenant"):
        if communication_send(participant=participant, kind=kind, related_key=key, context=context):
            sent += 1
    return sent


@transaction.atomic
def reminders_send(*, program: Program, inactive_days: int = 30, now: datetime | None = None) -> int:
    """Remind participants enrolled over ``inactive_days`` ago who never made a referral (once a month each)."""
    now = now or timezone.now()
    referred = Referral.objects.for_tenant(program.tenant_id).filter(program=program).values("referrer_id")
    idle = _active(program).filter(created_at__lte=now - timedelta(days=inactive_days)).exclude(pk__in=referred)
    sent = 0
    for participant in idle.select_related("program__tenant"):
        if communication_send(
            participant=participant, kind=CommunicationKind.REMINDER, related_key=f"reminder:{now:%Y-%m}"
        ):
            sent += 1
    return sent


def program_update_send(*, program: Program, version, previous) -> int:
    """The automatic "your terms changed" message, when a program with earlier rules gets a new version."""
    from django.conf import settings
    from django.urls import reverse

    if previous is None:
        return 0
    terms_url = settings.SITE_URL + reverse(
        "program_terms_page", kwargs={"tenant_slug": program.tenant.slug, "program_slug": program.slug}
    )
    return campaign_send(
        program=program,
        kind=CommunicationKind.PROGRAM_UPDATE,
        key=f"version:{version.pk}",
        context={"version": version, "previous": previous, "terms_url": terms_url},
    )


# --- templates: edit, preview, test send ---------------------------------------------------------


@transaction.atomic
def message_template_save(*, program: Program, kind: str, subject: str, body: str) -> MessageTemplate:
    if kind not in CommunicationKind.values:
        raise ValidationError({"kind": f"Choose one of: {', '.join(CommunicationKind.values)}."})
    if not subject.strip():
        raise ValidationError({"subject": "Required."})
    if not body.strip():
        raise ValidationError({"body": "Required."})
    for field, text in (("subject", subject), ("body", body)):
        try:
            _ENGINE.from_string(text)
        except TemplateSyntaxError as error:
            raise ValidationError({field: f"Template error: {error}"}) from error
    row, _ = MessageTemplate.objects.update_or_create(
        tenant_id=program.tenant_id,
        program=program,
        kind=kind,
        defaults={"subject": subject[:200], "body": body, "updated_at": timezone.now()},
    )
    return row


class _Sample:
    def __init__(self, program: Program, email: str):
        self.name, self.email, self.program, self.tenant_id = "Sam Sample", email, program, program.tenant_id


def message_template_preview(*, program: Program, kind: str, subject: str = "", body: str = "") -> dict:
    """The subject and body as a sample participant would get them (the saved or default template, or the
    draft given)."""
    if kind not in CommunicationKind.values:
        raise ValidationError({"kind": f"Choose one of: {', '.join(CommunicationKind.values)}."})
    saved_subject, saved_body = template_for(program=program, kind=kind)
    context = {
        "participant": _Sample(program, "sam@example.com"),
        "program": program,
        "referral_link": "https://example.com/r/SAMPLE",
        "dashboard_url": "https://example.com/p/sample/",
        "offer": offer_sentence(program),
        "score": 10,
        "review_url": "https://www.g2.com/",
        "headline": "How Acme got 3 new customers",
        "story": "A sample success story.",
        "version": {"number": 2, "note": "sample"},
        "previous": {"number": 1},
        "terms_url": "https://example.com/terms/",
    }
    rendered_subject, rendered_body = render_communication(
        subject=subject or saved_subject, body=body or saved_body, context=context
    )
    return {"subject": rendered_subject, "body": rendered_body}


def message_template_test_send(*, program: Program, kind: str, to: str) -> dict:
    """E-mail the preview to ``to`` (a marketer's address), marked as a test; not logged as a communication."""
    preview = message_template_preview(program=program, kind=kind)
    tenant_email_message(
        tenant_id=program.tenant_id, to=to, subject=f"[TEST] {preview['subject']}", body=preview["body"]
    ).send()
    return preview
