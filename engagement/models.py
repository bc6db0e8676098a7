"""Engagement: asking customers at the right moment (NPS promoters, trigger events), communications to
participants, in-app notifications, and outbound webhooks to the tenant's CRM (docs/engagement.md)."""

from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.utils import timezone

from programs.models import Participant, Program
from referral_platform.crypto import EncryptedTextField
from referral_platform.tenancy.models import TenantOwnedModel


class EngagementSettings(TenantOwnedModel):
    """Per-workspace settings of engagement: the time zone that quiet hours and daily caps are counted in."""

    time_zone = models.CharField(max_length=64, default="UTC", help_text="IANA name, e.g. Europe/Berlin.")
    lead_score_boost = models.IntegerField(
        default=20, help_text="Added to a referred lead's score in the CRM: the lead_score_boost of referral events."
    )

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant"], name="engagement_settings_one_per_tenant")]
        verbose_name_plural = "engagement settings"


class Trigger(models.TextChoices):
    NPS = "nps", "NPS promoter"
    RENEWAL = "renewal", "Renewal"
    USAGE_MILESTONE = "usage_milestone", "Usage milestone"
    SUPPORT_TICKET_RESOLVED = "support_ticket_resolved", "Support ticket resolved"
    PURCHASE = "purchase", "Purchase"
    DEAL_WON = "deal_won", "Deal won by the customer"


class TriggerPolicy(TenantOwnedModel):
    """When and how often a program asks customers after a trigger moment.

    Suppression spans every trigger: nobody is asked twice within ``suppression_days`` whatever moment
    asked them first. Quiet hours and the daily cap are counted in the workspace's time zone.
    """

    program = models.ForeignKey(Program, on_delete=models.CASCADE, related_name="trigger_policies")
    trigger = models.CharField(max_length=40, choices=Trigger.choices)
    is_enabled = models.BooleanField(default=True)
    delay_minutes = models.PositiveIntegerField(default=60, help_text="Wait this long after the moment.")
    suppression_days = models.PositiveIntegerField(default=90, help_text="Ask nobody twice within this many days.")
    quiet_hours_start = models.TimeField(null=True, blank=True, help_text="No asks from this local time …")
    quiet_hours_end = models.TimeField(null=True, blank=True, help_text="… until this local time.")
    daily_cap = models.PositiveIntegerField(default=100, help_text="At most this many asks per local day (0: none).")
    review_url = models.URLField(blank=True, help_text="Optional public review page (G2, Capterra …) to ask for.")
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "program", "trigger"], name="trigger_policy_unique_trigger")
        ]
        verbose_name_plural = "trigger policies"

    def __str__(self) -> str:
        return f"{self.program} · {self.get_trigger_display()}"


class MomentSource(models.TextChoices):
    API = "api", "API"
    CSV = "csv", "CSV import"
    TYPEFORM = "typeform", "Typeform webhook"


class MomentOutcome(models.TextChoices):
    RECEIVED = "received", "Received, not processed yet"
    ASKED = "asked", "Ask scheduled"
    NOT_PROMOTER = "not_promoter", "Not a promoter (score below 9)"
    SUPPRESSED = "suppressed", "Asked recently (suppression window)"
    NO_POLICY = "no_policy", "No enabled policy"
    UNSUBSCRIBED = "unsubscribed", "Unsubscribed"


class Moment(TenantOwnedModel):
    """A trigger moment as received (an NPS response or an event), stored raw before anything else.

    ``external_id`` is the sender's id (the survey tool's response id, the event id): posting the same
    one twice, or concurrently, keeps one row (the unique constraint decides).
    """

    trigger = models.CharField(max_length=40, choices=Trigger.choices)
    external_id = models.CharField(max_length=200)
    source = models.CharField(max_length=20, choices=MomentSource.choices, default=MomentSource.API)
    program = models.ForeignKey(Program, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    customer_external_id = models.CharField(max_length=200)
    email = models.EmailField()
    name = models.CharField(max_length=200, blank=True)
    company = models.CharField(max_length=200, blank=True)
    score = models.PositiveSmallIntegerField(null=True, blank=True)
    comment = models.TextField(blank=True)
    occurred_at = models.DateTimeField()
    raw = models.JSONField(default=dict)
    outcome = models.CharField(max_length=20, choices=MomentOutcome.choices, default=MomentOutcome.RECEIVED)
    received_at = models.DateTimeField(default=timezone.now, editable=False)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "trigger", "external_id"], name="moment_unique_external_id")
        ]
        indexes = [models.Index(fields=["tenant", "trigger", "occurred_at"], name="moment_trigger_time_idx")]
        ordering = ["-occurred_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.get_trigger_display()} {self.external_id}"


class AskStatus(models.TextChoices):
    SCHEDULED = "scheduled", "Scheduled"
    SENT = "sent", "Invitation sent"
    UNSUBSCRIBED = "unsubscribed", "Not sent: unsubscribed"
    FAILED = "failed", "Failed"


class Ask(TenantOwnedModel):
    """One invitation to refer, from one moment, sent at ``scheduled_for`` or later (quiet hours, daily cap)."""

    program = models.ForeignKey(Program, on_delete=models.CASCADE, related_name="+")
    moment = models.ForeignKey(Moment, on_delete=models.CASCADE, related_name="asks")
    trigger = models.CharField(max_length=40, choices=Trigger.choices)
    email = models.EmailField(help_text="Lower-cased: the key of the suppression window.")
    participant = models.ForeignKey(Participant, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    status = models.CharField(max_length=20, choices=AskStatus.choices, default=AskStatus.SCHEDULED)
    scheduled_for = models.DateTimeField()
    sent_at = models.DateTimeField(null=True, blank=True)
    note = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "moment"], name="ask_one_per_moment")]
        indexes = [
            models.Index(fields=["tenant", "email", "created_at"], name="ask_email_time_idx"),
            models.Index(fields=["tenant", "status", "scheduled_for"], name="ask_due_idx"),
        ]
        ordering = ["-created_at", "-pk"]


class NpsImport(TenantOwnedModel):
    """A CSV of NPS responses, kept as uploaded, imported by a task with progress and per-row errors."""

    filename = models.CharField(max_length=255)
    content = models.TextField()
    program = models.ForeignKey(Program, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    status = models.CharField(max_length=20, default="queued")
    total_rows = models.PositiveIntegerField(default=0)
    processed_rows = models.PositiveIntegerField(default=0)
    created_count = models.PositiveIntegerField(default=0)
    error_count = models.PositiveIntegerField(default=0)
    errors = models.JSONField(default=list, blank=True, help_text="[{line, field, message}]")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    finished_at = models.DateTimeField(null=True, blank=True)

    @property
    def percent_done(self) -> int:
        if self.status == "done":
            return 100
        return min(100, self.processed_rows * 100 // self.total_rows) if self.total_rows else 0


class TypeformSettings(TenantOwnedModel):
    """The inbound Typeform webhook of a workspace: its signing secret and the NPS question's field ref."""

    secret = EncryptedTextField(help_text="Typeform's webhook secret (encrypted at rest).")
    score_field_ref = models.CharField(max_length=200, blank=True, help_text="Ref of the NPS (opinion scale) field.")
    email_field_ref = models.CharField(max_length=200, blank=True)
    program = models.ForeignKey(Program, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant"], name="typeform_settings_one_per_tenant")]


# --- communications ---------------------------------------------------------------------------------


class CommunicationKind(models.TextChoices):
    INVITATION = "invitation", "Invitation to refer"
    LAUNCH = "launch", "Launch announcement"
    REMINDER = "reminder", "Reminder to inactive participants"
    SUCCESS_STORY = "success_story", "Success story"
    PROGRAM_UPDATE = "program_update", "Program update (rules changed)"


class MessageTemplate(TenantOwnedModel):
    """A program's editable wording of one kind of communication (Django template syntax; defaults in code)."""

    program = models.ForeignKey(Program, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=30, choices=CommunicationKind.choices)
    subject = models.CharField(max_length=200)
    body = models.TextField()
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "program", "kind"], name="message_template_unique_kind")
        ]


class CommunicationStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    SENT = "sent", "Sent"
    UNSUBSCRIBED = "unsubscribed", "Not sent: unsubscribed"
    FAILED = "failed", "Failed"


class Communication(TenantOwnedModel):
    """The send log: one row per e-mail to a participant (once per kind and ``related_key``)."""

    participant = models.ForeignKey(Participant, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=30, choices=CommunicationKind.choices)
    related_key = models.CharField(max_length=100)
    email_to = models.EmailField()
    subject = models.CharField(max_length=200)
    body = models.TextField()
    status = models.CharField(max_length=20, choices=CommunicationStatus.choices, default=CommunicationStatus.QUEUED)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "participant", "kind", "related_key"], name="communication_unique_related"
            )
        ]
        ordering = ["-created_at", "-pk"]


class Notification(TenantOwnedModel):
    """An in-app notification shown on the participant's dashboard."""

    participant = models.ForeignKey(Participant, on_delete=models.CASCADE, related_name="+")
    title = models.CharField(max_length=200)
    body = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    read_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["tenant", "participant", "created_at"], name="notification_time_idx")]
        ordering = ["-created_at", "-pk"]


class ParticipantPreference(TenantOwnedModel):
    """What a participant chose on their dashboard (shown on the leaderboard or not)."""

    participant = models.ForeignKey(Participant, on_delete=models.CASCADE, related_name="+")
    on_leaderboard = models.BooleanField(default=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "participant"], name="participant_preference_unique")]


# --- outbound webhooks ---------------------------------------------------------------------------


class WebhookEventType(models.TextChoices):
    REFERRAL_CREATED = "referral.created"
    REFERRAL_QUALIFIED = "referral.qualified"
    REFERRAL_CONVERTED = "referral.converted"
    REWARD_APPROVED = "reward.approved"
    REWARD_PAID = "reward.paid"
    REWARD_CLAWED_BACK = "reward.clawed_back"
    DEAL_REGISTERED = "deal.registered"
    DEAL_CONFLICT = "deal.conflict"
    PARTICIPANT_ENROLLED = "participant.enrolled"


class WebhookEndpoint(TenantOwnedModel):
    """A URL of the tenant's (its CRM) that receives signed events (Standard Webhooks)."""

    url = models.URLField(max_length=500)
    description = models.CharField(max_length=200, blank=True)
    event_types = ArrayField(
        models.CharField(max_length=40), default=list, blank=True, help_text="Empty: every event type."
    )
    secret = EncryptedTextField(help_text="whsec_… (base64); signs every delivery (encrypted at rest).")
    previous_secret = EncryptedTextField(blank=True)
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True)
    is_active = models.BooleanField(default=True)
    failing_since = models.DateTimeField(null=True, blank=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    disabled_reason = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["pk"]

    def __str__(self) -> str:
        return self.url

    def wants(self, event_type: str) -> bool:
        return self.is_active and (not self.event_types or event_type in self.event_types)


class WebhookMessage(TenantOwnedModel):
    """An event as sent: its id (``msg_…``, the ``webhook-id``), type and JSON payload."""

    msg_id = models.CharField(max_length=40)
    event_type = models.CharField(max_length=40, choices=WebhookEventType.choices)
    payload = models.JSONField()
    dedupe_key = models.CharField(max_length=120, help_text="One message per business fact (e.g. referral.created:42).")
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "msg_id"], name="webhook_message_unique_id"),
            models.UniqueConstraint(fields=["tenant", "dedupe_key"], name="webhook_message_unique_fact"),
        ]
        ordering = ["-created_at", "-pk"]


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending (retrying)"
    DELIVERED = "delivered", "Delivered"
    GAVE_UP = "gave_up", "Gave up"


class WebhookDelivery(TenantOwnedModel):
    """One message to one endpoint, with every attempt's request and response (``attempts``)."""

    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    message = models.ForeignKey(WebhookMessage, on_delete=models.CASCADE, related_name="deliveries")
    status = models.CharField(max_length=20, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempt_count = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    attempts = models.JSONField(default=list, blank=True, help_text="[{at, request_headers, status, response}]")
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "endpoint", "message"], name="webhook_delivery_unique")
        ]
        ordering = ["-created_at", "-pk"]
