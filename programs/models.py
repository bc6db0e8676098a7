"""Programs and the people enrolled in them."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from referral_platform.state import StateMachine
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
    description = models.TextField(blank=True, help_text="One or two sentences participants see above the terms.")
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

    # Archived is final. The services (programs.services.program_activate …) add their preconditions.
    status_machine = StateMachine(
        field="status",
        moves={
            ProgramStatus.DRAFT: {ProgramStatus.ACTIVE, ProgramStatus.ARCHIVED},
            ProgramStatus.ACTIVE: {ProgramStatus.PAUSED, ProgramStatus.ARCHIVED},
            ProgramStatus.PAUSED: {ProgramStatus.ACTIVE, ProgramStatus.ARCHIVED},
            ProgramStatus.ARCHIVED: set(),
        },
        audit_prefix="program",
        refusal="A {current} program cannot become {to}.",
    )

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
    source = models.CharField(
        max_length=20, default="admin", help_text="How they joined: admin, api, import or application."
    )
    application_note = models.TextField(blank=True, help_text="What an applicant wrote when applying.")
    tier = models.CharField(
        max_length=40,
        blank=True,
        help_text="Partner tier (e.g. gold). When the program's rules list this tier under partner_tiers, "
        "its referrer rules replace the default ones for this participant.",
    )
    coupon_code = models.CharField(
        max_length=40,
        blank=True,
        help_text="A code the participant can hand out instead of a link (e.g. DANA7K2Q); given at sign-up, in a "
        "lead or with a payment it establishes the referral. Unique in the workspace, matched case-insensitively.",
    )
    dashboard_link_version = models.PositiveIntegerField(
        default=1,
        editable=False,
        help_text="Part of the signed dashboard link; issuing a new link raises it, which revokes older links.",
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    # Approving (pending / rejected → active) and reinstating (removed → active) are separate services.
    status_machine = StateMachine(
        field="status",
        moves={
            ParticipantStatus.PENDING: {ParticipantStatus.ACTIVE, ParticipantStatus.REJECTED},
            ParticipantStatus.REJECTED: {ParticipantStatus.ACTIVE},
            ParticipantStatus.ACTIVE: {ParticipantStatus.REMOVED},
            ParticipantStatus.REMOVED: {ParticipantStatus.ACTIVE},
        },
        audit_prefix="participant",
        refusal="A {current} participant cannot become {to} this way.",
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "program", "external_id"], name="participant_unique_external_id"),
            models.UniqueConstraint(
                fields=["tenant", "coupon_code"],
                condition=~models.Q(coupon_code=""),
                name="participant_unique_coupon_code",
            ),
        ]
        indexes = [models.Index(fields=["tenant", "email"], name="participant_email_idx")]
        ordering = ["name", "pk"]

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>"


class ProgramVersion(TenantOwnedModel):
    """An immutable snapshot of a program's rules (incentives, caps, eligibility, attribution).

    Changing a program's rules creates a new version; referrals and attributions record the version
    they were judged under, so a later change never rewrites what was promised. A database trigger
    (migration 0003) refuses every UPDATE of a version row; the current version is the highest number.
    The ``rules`` document follows ``programs.rules.RULES_JSON_SCHEMA`` (docs/programs.md).
    """

    program = models.ForeignKey(Program, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    rules = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    created_by = models.CharField(max_length=200, blank=True)
    note = models.CharField(max_length=300, blank=True, help_text="Why the rules changed.")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "program", "number"], name="program_version_unique_number")
        ]
        ordering = ["program", "-number"]

    def __str__(self) -> str:
        return f"{self.program} v{self.number}"

    def save(self, *args, **kwargs):
        # A version is a promise: once written it never changes (the trigger enforces it for raw SQL too).
        if not self._state.adding:
            raise ValueError("ProgramVersion rows are immutable; change the rules to create a new version.")
        super().save(*args, **kwargs)


class ImportStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class ParticipantImport(TenantOwnedModel):
    """A CSV import of participants into one program, with its progress and per-row errors.

    The uploaded file is kept as received (``content``), then a Celery task imports it in batches,
    committing the rows of a batch together with the progress counters, so a retried task resumes
    after the last committed batch.
    """

    program = models.ForeignKey(Program, on_delete=models.CASCADE, related_name="imports")
    filename = models.CharField(max_length=255)
    content = models.TextField(help_text="The CSV exactly as uploaded (UTF-8).")
    status = models.CharField(max_length=20, choices=ImportStatus.choices, default=ImportStatus.QUEUED)
    total_rows = models.PositiveIntegerField(default=0)
    processed_rows = models.PositiveIntegerField(default=0)
    created_count = models.PositiveIntegerField(default=0)
    updated_count = models.PositiveIntegerField(default=0)
    error_count = models.PositiveIntegerField(default=0)
    errors = models.JSONField(default=list, blank=True, help_text="[{line, field, message}], the first 1,000.")
    failure = models.TextField(blank=True, help_text="Why the whole import failed, if it did.")
    send_welcome = models.BooleanField(
        default=True, help_text="E-mail each new participant their welcome (links, dashboard) as they are imported."
    )
    created_by = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.filename} → {self.program}"

    @property
    def percent_done(self) -> int:
        if self.status == ImportStatus.DONE:
            return 100
        if not self.total_rows:
            return 0
        return min(100, self.processed_rows * 100 // self.total_rows)

    @property
    def is_finished(self) -> bool:
        return self.status in {ImportStatus.DONE, ImportStatus.FAILED}


class EmailOptOut(TenantOwnedModel):
    """An address that asked a workspace for no more e-mail (the one-click unsubscribe link of every e-mail).

    Kept in programs so that every sender, in every layer (programs, rewards, partners, engagement), can
    check it before it sends (``programs.mailing``). Addresses are stored lower-cased.
    """

    email = models.EmailField()
    source = models.CharField(max_length=20, default="link", help_text="link, one_click, admin or api.")
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "email"], name="email_opt_out_unique_email")]

    def __str__(self) -> str:
        return self.email
