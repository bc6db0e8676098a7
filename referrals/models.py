"""Referral links, the clicks on them, and referrals moving through the funnel."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from programs.models import Participant, Program, ProgramVersion
from referral_platform.tenancy.models import TenantOwnedModel


class Channel(models.TextChoices):
    DIRECT = "direct", "Direct link"
    EMAIL = "email", "E-mail"
    SOCIAL = "social", "Social"
    IN_APP = "in_app", "In-app"
    QR = "qr", "QR code"


class ReferralLink(TenantOwnedModel):
    program = models.ForeignKey(Program, on_delete=models.CASCADE, related_name="links")
    participant = models.ForeignKey(Participant, on_delete=models.CASCADE, related_name="links")
    code = models.CharField(max_length=32)
    channel = models.CharField(max_length=20, choices=Channel.choices, default=Channel.DIRECT)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        constraints = [
            # The code is the public routing key of /r/<code>, resolved before any tenant is known,
            # so it is unique across tenants, like the tenant slug itself.
            models.UniqueConstraint(fields=["code"], name="referral_link_code_route"),
            models.UniqueConstraint(fields=["tenant", "participant", "channel"], name="referral_link_one_per_channel"),
        ]
        ordering = ["participant", "channel"]

    def __str__(self) -> str:
        return f"/r/{self.code}"


class Click(TenantOwnedModel):
    link = models.ForeignKey(ReferralLink, on_delete=models.CASCADE, related_name="clicks")
    program = models.ForeignKey(Program, on_delete=models.CASCADE, related_name="+")
    participant = models.ForeignKey(Participant, on_delete=models.CASCADE, related_name="+")
    stream_id = models.CharField(max_length=40, help_text="Redis stream entry id; makes the flush idempotent.")
    visitor_id = models.CharField(max_length=64)
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.TextField(blank=True)
    referer = models.TextField(blank=True)
    channel = models.CharField(max_length=20, choices=Channel.choices, default=Channel.DIRECT)
    utm = models.JSONField(default=dict, blank=True)
    is_bot = models.BooleanField(default=False)
    occurred_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "stream_id"], name="click_unique_stream_entry")]
        indexes = [
            models.Index(fields=["tenant", "occurred_at"], name="click_time_idx"),
            models.Index(fields=["tenant", "visitor_id"], name="click_visitor_idx"),
        ]
        ordering = ["-occurred_at"]

    def __str__(self) -> str:
        return f"click {self.stream_id} on {self.link_id}"


class ReferralStatus(models.TextChoices):
    CLICKED = "clicked", "Clicked"
    SIGNED_UP = "signed_up", "Signed up"
    QUALIFIED = "qualified", "Qualified"
    CONVERTED = "converted", "Converted"
    REJECTED = "rejected", "Rejected"
    CHURNED = "churned", "Churned"


class Referral(TenantOwnedModel):
    program = models.ForeignKey(Program, on_delete=models.CASCADE, related_name="referrals")
    referrer = models.ForeignKey(Participant, on_delete=models.CASCADE, related_name="referrals")
    link = models.ForeignKey(ReferralLink, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    visitor_id = models.CharField(max_length=64, blank=True)
    referred_email = models.EmailField(blank=True)
    referred_name = models.CharField(max_length=200, blank=True)
    referred_company = models.CharField(max_length=200, blank=True)
    referred_external_id = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=20, choices=ReferralStatus.choices, default=ReferralStatus.CLICKED)
    rule_version = models.ForeignKey(
        ProgramVersion,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The program rules this referral is judged under.",
    )
    clicked_at = models.DateTimeField(null=True, blank=True)
    signed_up_at = models.DateTimeField(null=True, blank=True)
    qualified_at = models.DateTimeField(null=True, blank=True)
    converted_at = models.DateTimeField(null=True, blank=True)
    rejected_at = models.DateTimeField(null=True, blank=True)
    churned_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        indexes = [
            models.Index(fields=["tenant", "status"], name="referral_status_idx"),
            models.Index(fields=["tenant", "referred_email"], name="referral_email_idx"),
        ]
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.referred_email or self.visitor_id or 'referral'} ← {self.referrer_id}"


class ConversionKind(models.TextChoices):
    SIGN_UP = "sign_up", "Sign-up"
    QUALIFIED = "qualified", "Qualified"
    PAYMENT = "payment", "Payment"
    REFUND = "refund", "Refund"
    CANCELLATION = "cancellation", "Cancellation"


class ConversionEventStatus(models.TextChoices):
    RECEIVED = "received", "Received (stored raw, not yet processed)"
    PROCESSED = "processed", "Processed"
    UNATTRIBUTED = "unattributed", "Processed, no referral matched"
    FAILED = "failed", "Failed"


class ConversionEvent(TenantOwnedModel):
    """An inbound conversion (API or Stripe webhook), stored raw before it is processed.

    ``external_event_id`` is unique per tenant: repeats and concurrent duplicates give one event.
    """

    external_event_id = models.CharField(max_length=200)
    kind = models.CharField(max_length=20, choices=ConversionKind.choices)
    amount_minor = models.BigIntegerField(default=0)
    currency = models.CharField(max_length=3, blank=True)
    occurred_at = models.DateTimeField()
    customer_external_id = models.CharField(max_length=200, blank=True)
    email = models.EmailField(blank=True)
    referral_code = models.CharField(max_length=32, blank=True)
    visitor_id = models.CharField(max_length=64, blank=True)
    referral = models.ForeignKey(
        Referral, null=True, blank=True, on_delete=models.SET_NULL, related_name="conversion_events"
    )
    raw = models.JSONField(default=dict, help_text="The payload exactly as received.")
    source = models.CharField(max_length=20, default="api")
    status = models.CharField(
        max_length=20, choices=ConversionEventStatus.choices, default=ConversionEventStatus.RECEIVED
    )
    error = models.TextField(blank=True)
    received_at = models.DateTimeField(default=timezone.now, editable=False)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "external_event_id"], name="conversion_event_unique_external_id")
        ]
        indexes = [
            models.Index(fields=["tenant", "kind", "occurred_at"], name="conversion_kind_time_idx"),
            models.Index(fields=["tenant", "customer_external_id"], name="conversion_customer_idx"),
        ]
        ordering = ["-occurred_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.kind} {self.external_event_id}"
