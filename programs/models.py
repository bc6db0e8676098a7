"""Programs and the people enrolled in them."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from referral_platform.tenancy.models import TenantOwnedModel


class ProgramKind(models.TextChoices):
    CUSTOMER = "customer", "Customer referral"
    PARTNER = "partner", "Partner / affiliate"
    RESELLER = "reseller", "Reseller"
    EMPLOYEE = "employee", "Employee referral"


class ProgramStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    ACTIVE = "active", "Active"
    PAUSED = "paused", "Paused"
    ARCHIVED = "archived", "Archived"


class ProgramAccess(models.TextChoices):
    OPEN = "open", "Open"
    GATED = "gated", "Gated (apply → review → approve)"
    INVITE_ONLY = "invite_only", "Invite-only"


class AttributionModel(models.TextChoices):
    FIRST_TOUCH = "first_touch", "First touch"
    LAST_TOUCH = "last_touch", "Last touch"
    LINEAR = "linear", "Linear"
    TIME_DECAY = "time_decay", "Time decay"
    POSITION_BASED = "position_based", "Position based (40/20/40)"


class Program(TenantOwnedModel):
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=80)
    kind = models.CharField(max_length=20, choices=ProgramKind.choices, default=ProgramKind.CUSTOMER)
    status = models.CharField(max_length=20, choices=ProgramStatus.choices, default=ProgramStatus.DRAFT)
    access = models.CharField(max_length=20, choices=ProgramAccess.choices, default=ProgramAccess.OPEN)
    landing_url = models.URLField(
        max_length=500, help_text="Where referral links send visitors; its host must be an allowed domain."
    )
    cookie_window_days = models.PositiveIntegerField(default=90)
    attribution_model = models.CharField(
        max_length=20, choices=AttributionModel.choices, default=AttributionModel.LAST_TOUCH
    )
    time_decay_half_life_days = models.PositiveIntegerField(default=7)
    currency = models.CharField(max_length=3, default="USD")
    hold_days = models.PositiveIntegerField(default=30, help_text="Rewards wait this long (≥ refund window).")
    auto_approve_limit_minor = models.BigIntegerField(
        default=50_000, help_text="Rewards up to this amount (minor units) approve themselves after the hold."
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "slug"], name="program_unique_slug")]
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_live(self) -> bool:
        return self.status == ProgramStatus.ACTIVE


class ParticipantStatus(models.TextChoices):
    PENDING = "pending", "Applied, waiting for review"
    ACTIVE = "active", "Active"
    REJECTED = "rejected", "Rejected"
    REMOVED = "removed", "Removed"


class Participant(TenantOwnedModel):
    """Someone enrolled in a program who can refer: a customer, employee or partner."""

    program = models.ForeignKey(Program, on_delete=models.CASCADE, related_name="participants")
    external_id = models.CharField(max_length=200, help_text="The tenant's own id for this person or company.")
    name = models.CharField(max_length=200)
    email = models.EmailField()
    company = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=20, choices=ParticipantStatus.choices, default=ParticipantStatus.ACTIVE)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "program", "external_id"], name="participant_unique_external_id")
        ]
        indexes = [models.Index(fields=["tenant", "email"], name="participant_email_idx")]
        ordering = ["name", "pk"]

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>"


class ProgramVersion(TenantOwnedModel):
    """An immutable snapshot of a program's rules (incentives, caps, eligibility, attribution).

    Changing a program's rules creates a new version; referrals and attributions record the version
    they were judged under, so a later change never rewrites what was promised.
    """

    program = models.ForeignKey(Program, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    rules = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    created_by = models.CharField(max_length=200, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "program", "number"], name="program_version_unique_number")
        ]
        ordering = ["program", "-number"]

    def __str__(self) -> str:
        return f"{self.program} v{self.number}"
