"""Partners: organisations, their people, applications, tiers, deal registrations and their conflicts,
the resource library and support tickets (docs/partners.md)."""

from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import Q
from django.utils import timezone

from programs.models import Participant, Program
from referral_platform.state import StateMachine
from referral_platform.tenancy.models import TenantOwnedModel


class PartnerType(models.TextChoices):
    RESELLER = "reseller", "Reseller"
    AFFILIATE = "affiliate", "Affiliate"
    TECHNOLOGY = "technology", "Technology"
    SERVICES = "services", "Services / agency"


# the commission a partner type starts with (basis points) and the range a marketer normally keeps
# it in: reseller margin 20-40 %, affiliate 10-20 % of first-year revenue, services referral fee 10-15 %.
COMMISSION_DEFAULTS: dict[str, dict] = {
    PartnerType.RESELLER: {"default_bp": 3000, "min_bp": 2000, "max_bp": 4000, "basis": "reseller margin on the deal"},
    PartnerType.AFFILIATE: {"default_bp": 1500, "min_bp": 1000, "max_bp": 2000, "basis": "of first-year revenue"},
    PartnerType.SERVICES: {"default_bp": 1000, "min_bp": 1000, "max_bp": 1500, "basis": "referral fee on the deal"},
    PartnerType.TECHNOLOGY: {"default_bp": 1000, "min_bp": 500, "max_bp": 2000, "basis": "of first-year revenue"},
}


class PartnerTier(TenantOwnedModel):
    """A rung of the partner ladder (registered / silver / gold …) and its written rules: a partner whose
    won deals over the last ``period_days`` reach ``min_won_deals`` and ``min_won_revenue_minor`` belongs
    here; the highest tier whose rules are met is the partner's tier (promotion and demotion alike)."""

    slug = models.SlugField(max_length=40, help_text="Also the participant tier the program's rules may name.")
    name = models.CharField(max_length=80)
    rank = models.PositiveSmallIntegerField(help_text="0 = entry tier; higher ranks see more resources.")
    min_won_deals = models.PositiveIntegerField(default=0)
    min_won_revenue_minor = models.BigIntegerField(default=0)
    currency = models.CharField(max_length=3, default="USD")
    period_days = models.PositiveIntegerField(default=365, help_text="The rolling period the rules look back over.")
    benefits = models.TextField(blank=True, help_text="What partners of this tier get (shown in the portal).")
    dedicated_support = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "slug"], name="partner_tier_unique_slug"),
            models.UniqueConstraint(fields=["tenant", "rank"], name="partner_tier_unique_rank"),
        ]
        ordering = ["rank"]

    def __str__(self) -> str:
        return self.name

    @property
    def rule_text(self) -> str:
        from referral_platform.money import format_money

        parts = []
        if self.min_won_deals:
            parts.append(f"{self.min_won_deals} won deal{'s' if self.min_won_deals != 1 else ''}")
        if self.min_won_revenue_minor:
            parts.append(f"{format_money(self.min_won_revenue_minor, self.currency)} of won deals")
        if not parts:
            return "Every approved partner."
        return f"At least {' and '.join(parts)} in the last {self.period_days} days; below that, the tier below."


class PartnerStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    SUSPENDED = "suspended", "Suspended"


class Partner(TenantOwnedModel):
    """A partner company of the tenant. It joins partner or reseller programs as a participant of each
    (``PartnerEnrolment``), so its links, referrals, rewards and payouts are the existing ones."""

    name = models.CharField(max_length=200)
    website = models.URLField(max_length=300, blank=True)
    partner_type = models.CharField(max_length=20, choices=PartnerType.choices)
    country = models.CharField(max_length=2, blank=True, help_text="ISO 3166 two-letter code.")
    payout_currency = models.CharField(max_length=3, default="USD")
    commission_bp = models.PositiveIntegerField(
        default=1000, help_text="Commission on a won deal's value, in basis points (1 % = 100)."
    )
    status = models.CharField(max_length=20, choices=PartnerStatus.choices, default=PartnerStatus.ACTIVE)
    tier = models.ForeignKey(PartnerTier, null=True, blank=True, on_delete=models.PROTECT, related_name="partners")
    tier_changed_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["name", "pk"]

    def __str__(self) -> str:
        return self.name

    @property
    def tier_rank(self) -> int:
        return self.tier.rank if self.tier_id else 0


class PartnerRole(models.TextChoices):
    ADMIN = "admin", "Admin (invites colleagues)"
    MEMBER = "member", "Member"


class PartnerUser(TenantOwnedModel):
    """A person who logs in to the portal for one partner of one tenant. ``user`` is unique across the
    site: the login decides the tenant and the partner before any tenant is known (a routing key)."""

    partner = models.ForeignKey(Partner, on_delete=models.CASCADE, related_name="users")
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="partner_user")
    role = models.CharField(max_length=20, choices=PartnerRole.choices, default=PartnerRole.MEMBER)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["created_at", "pk"]

    def __str__(self) -> str:
        return f"{self.user.email} ({self.partner})"


class PartnerInvitation(TenantOwnedModel):
    """An e-mailed one-time link to join a partner's team (only its hash is stored; 14 days; one e-mail)."""

    partner = models.ForeignKey(Partner, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField()
    role = models.CharField(max_length=20, choices=PartnerRole.choices, default=PartnerRole.MEMBER)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    invited_by = models.CharField(max_length=200, blank=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.email} → {self.partner}"

    @property
    def is_pending(self) -> bool:
        return self.accepted_at is None and self.expires_at > timezone.now()


class PartnerEnrolment(TenantOwnedModel):
    """The partner's participation in one partner or reseller program (its participant row there)."""

    partner = models.ForeignKey(Partner, on_delete=models.CASCADE, related_name="enrolments")
    program = models.ForeignKey(Program, on_delete=models.CASCADE, related_name="+")
    participant = models.ForeignKey(Participant, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "partner", "program"], name="partner_enrolment_unique_program"),
            models.UniqueConstraint(fields=["tenant", "participant"], name="partner_enrolment_unique_participant"),
        ]
        ordering = ["program__name", "pk"]

    def __str__(self) -> str:
        return f"{self.partner} in {self.program}"


QUALIFICATION_ITEMS = ("budget", "authority", "need", "timeline")


class PartnerProgramSettings(TenantOwnedModel):
    """Deal registration and application settings of one partner or reseller program."""

    program = models.ForeignKey(Program, on_delete=models.CASCADE, related_name="+")
    protection_days = models.PositiveIntegerField(
        default=60, help_text="How long an approved registration protects the account (30-90)."
    )
    extension_days = models.PositiveIntegerField(default=30, help_text="Days one extension adds.")
    max_protection_days = models.PositiveIntegerField(
        default=180, help_text="Protection never reaches beyond this many days after registration."
    )
    required_qualification = ArrayField(
        models.CharField(max_length=20), default=list, blank=True,
        help_text="Which of budget, authority, need, timeline a registration must answer to be approved automatically.",
    )  # fmt: skip
    min_deal_value_minor = models.BigIntegerField(default=0, help_text="Smallest deal value approved automatically.")
    auto_approve = models.BooleanField(default=True, help_text="Approve registrations that meet the requirements.")
    pays_deal_commission = models.BooleanField(
        default=True, help_text="A won deal pays the partner's commission on its value (through the ledger)."
    )
    terms_text = models.TextField(blank=True, help_text="The partner agreement applicants accept.")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "program"], name="partner_settings_unique_program")]
        verbose_name = "partner program settings"
        verbose_name_plural = "partner program settings"

    def __str__(self) -> str:
        return f"Partner settings of {self.program}"


class ApplicationStatus(models.TextChoices):
    PENDING = "pending", "Waiting for review"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"


class PartnerApplication(TenantOwnedModel):
    """A company applying to a partner program from its public page; a marketer approves or rejects it."""

    status_machine = StateMachine(
        field="status",
        moves={"pending": {"approved", "rejected"}},
        timestamps={"approved": "decided_at", "rejected": "decided_at"},
        reason_required=frozenset({"rejected"}),
        audit_prefix="partner_application",
    )

    program = models.ForeignKey(Program, on_delete=models.CASCADE, related_name="+")
    company = models.CharField(max_length=200)
    website = models.URLField(max_length=300)
    website_domain = models.CharField(max_length=253, editable=False)
    partner_type = models.CharField(max_length=20, choices=PartnerType.choices)
    country = models.CharField(max_length=2, blank=True)
    contact_name = models.CharField(max_length=200)
    email = models.EmailField()
    audience = models.TextField(help_text="Who the partner sells to or reaches.")
    expected_volume = models.CharField(max_length=200, help_text="Deals or leads expected per quarter.")
    terms_accepted_at = models.DateTimeField()
    status = models.CharField(max_length=20, choices=ApplicationStatus.choices, default=ApplicationStatus.PENDING)
    decision_reason = models.TextField(blank=True)
    decided_by = models.CharField(max_length=200, blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    partner = models.ForeignKey(Partner, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        constraints = [
            # One open application per e-mail and per company domain and program: a double submit, a
            # colleague applying again, or a retry never makes two.
            models.UniqueConstraint(
                fields=["tenant", "program", "email"],
                condition=Q(status__in=["pending", "approved"]),
                name="partner_application_one_per_email",
            ),
            models.UniqueConstraint(
                fields=["tenant", "program", "website_domain"],
                condition=Q(status="pending"),
                name="partner_application_one_pending_per_domain",
            ),
        ]
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.company} → {self.program}"


class TierChangeDirection(models.TextChoices):
    PROMOTED = "promoted", "Promoted"
    DEMOTED = "demoted", "Demoted"
    SET = "set", "Set by a marketer"


class PartnerTierChange(TenantOwnedModel):
    """The tier history of a partner: every move, why, and the figures it was decided on."""

    partner = models.ForeignKey(Partner, on_delete=models.CASCADE, related_name="tier_changes")
    from_tier = models.ForeignKey(PartnerTier, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    to_tier = models.ForeignKey(PartnerTier, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    direction = models.CharField(max_length=20, choices=TierChangeDirection.choices)
    reason = models.TextField(blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    actor = models.CharField(max_length=200)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.partner}: {self.from_tier or '—'} → {self.to_tier or '—'}"


class DealStatus(models.TextChoices):
    PENDING = "pending", "Waiting for review"
    APPROVED = "approved", "Approved (protected)"
    CONFLICT = "conflict", "In conflict"
    REJECTED = "rejected", "Rejected"
    EXPIRED = "expired", "Expired"
    WON = "won", "Won"
    LOST = "lost", "Lost"


# The statuses that hold the claim on an account: the database lets one registration per account be in one.
CLAIM_HOLDING_STATUSES = ("pending", "approved")
OPEN_DEAL_STATUSES = ("pending", "approved", "conflict")


class DealStage(models.TextChoices):
    REGISTERED = "registered", "Registered"
    QUALIFIED = "qualified", "Qualified"
    PROPOSAL = "proposal", "Proposal"
    NEGOTIATION = "negotiation", "Negotiation"
    WON = "won", "Won"
    LOST = "lost", "Lost"


OPEN_STAGES = ("registered", "qualified", "proposal", "negotiation")


class DealRegistration(TenantOwnedModel):
    """A partner's claim on a prospect account: the first registration of an account wins.

    The account is its registrable domain (``domain``) and its normalised name (``company_key``); two
    partial unique indexes let only one registration per domain and per name hold the claim (pending or
    approved) at a time, so "first to register wins" is decided by PostgreSQL, also under concurrency.
    """

    status_machine = StateMachine(
        field="status",
        moves={
            "pending": {"approved", "rejected", "expired"},
            "conflict": {"approved", "rejected", "pending"},
            "approved": {"won", "lost", "expired", "rejected"},
        },
        timestamps={
            "approved": "approved_at",
            "rejected": "closed_at",
            "expired": "closed_at",
            "won": "closed_at",
            "lost": "closed_at",
        },
        reason_required=frozenset({"rejected"}),
        audit_prefix="deal",
    )

    partner = models.ForeignKey(Partner, on_delete=models.CASCADE, related_name="deals")
    participant = models.ForeignKey(Participant, on_delete=models.CASCADE, related_name="+")
    program = models.ForeignKey(Program, on_delete=models.CASCADE, related_name="+")
    company_name = models.CharField(max_length=200)
    company_key = models.CharField(max_length=200, editable=False, help_text="The name normalised for matching.")
    domain = models.CharField(max_length=253, help_text="The prospect's registrable domain (acme.co.uk).")
    domain_stem = models.CharField(
        max_length=253, editable=False, help_text="The domain without its public suffix (acme), for near matches."
    )
    contact_name = models.CharField(max_length=200, blank=True)
    contact_email = models.EmailField(blank=True)
    deal_value_minor = models.BigIntegerField(null=True, blank=True)
    currency = models.CharField(max_length=3, default="USD")
    qualification = models.JSONField(default=dict, blank=True, help_text="budget, authority, need, timeline.")
    notes = models.TextField(blank=True)
    status = models.CharField(max_length=20, choices=DealStatus.choices, default=DealStatus.PENDING)
    stage = models.CharField(max_length=20, choices=DealStage.choices, default=DealStage.REGISTERED)
    review_note = models.TextField(blank=True, help_text="Why it waits for review, or the decision's reason.")
    registered_by = models.CharField(max_length=200, editable=False)
    registered_at = models.DateTimeField(default=timezone.now, editable=False)
    approved_at = models.DateTimeField(null=True, blank=True, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    expiry_warned_at = models.DateTimeField(null=True, blank=True, editable=False)
    closed_at = models.DateTimeField(null=True, blank=True, editable=False)
    won_amount_minor = models.BigIntegerField(null=True, blank=True, editable=False)
    commission_reward = models.ForeignKey(
        "rewards.Reward", null=True, blank=True, on_delete=models.PROTECT, related_name="+", editable=False
    )
    extensions_count = models.PositiveIntegerField(default=0, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "domain"],
                condition=Q(status__in=CLAIM_HOLDING_STATUSES),
                name="deal_one_claim_per_domain",
            ),
            models.UniqueConstraint(
                fields=["tenant", "company_key"],
                condition=Q(status__in=CLAIM_HOLDING_STATUSES),
                name="deal_one_claim_per_company",
            ),
        ]
        indexes = [
            models.Index(fields=["tenant", "status", "expires_at"], name="deal_status_expiry_idx"),
            models.Index(fields=["tenant", "partner", "status"], name="deal_partner_status_idx"),
        ]
        ordering = ["-registered_at", "-pk"]
        verbose_name = "deal registration"

    def __str__(self) -> str:
        return f"DR-{self.pk} {self.company_name} ({self.domain})"

    @property
    def reference(self) -> str:
        return f"DR-{self.pk}"

    @property
    def is_protected(self) -> bool:
        return self.status == DealStatus.APPROVED and (self.expires_at is None or self.expires_at > timezone.now())


class DealExtension(TenantOwnedModel):
    """One extension of a deal's protection: from when to when, asked by whom, why."""

    deal = models.ForeignKey(DealRegistration, on_delete=models.CASCADE, related_name="extensions")
    days = models.PositiveIntegerField()
    from_expires_at = models.DateTimeField()
    to_expires_at = models.DateTimeField()
    reason = models.TextField(blank=True)
    requested_by = models.CharField(max_length=200)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.deal}: +{self.days} days"


class ConflictMatch(models.TextChoices):
    DOMAIN = "domain", "Same domain"
    NAME = "name", "Same company name"
    SIMILAR_NAME = "similar_name", "Similar company name"
    SIMILAR_DOMAIN = "similar_domain", "Similar domain"


class ConflictStatus(models.TextChoices):
    OPEN = "open", "Open"
    RESOLVED = "resolved", "Resolved"


class ConflictDecision(models.TextChoices):
    HOLDER_KEEPS = "holder_keeps", "The first registration keeps the account"
    CHALLENGER_WINS = "challenger_wins", "The second registration gets the account"
    BOTH_DISTINCT = "both_distinct", "Different accounts: both stand"


class DealConflict(TenantOwnedModel):
    """A second claim on a protected account, or a near match, held for a marketer's decision."""

    status_machine = StateMachine(
        field="status",
        moves={"open": {"resolved"}},
        timestamps={"resolved": "decided_at"},
        reason_required=frozenset({"resolved"}),
        audit_prefix="deal_conflict",
    )

    holder = models.ForeignKey(DealRegistration, on_delete=models.CASCADE, related_name="conflicts_held")
    challenger = models.ForeignKey(DealRegistration, on_delete=models.CASCADE, related_name="conflicts_raised")
    match = models.CharField(max_length=20, choices=ConflictMatch.choices)
    similarity = models.DecimalField(max_digits=4, decimal_places=3, help_text="1.000 = identical.")
    evidence = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=20, choices=ConflictStatus.choices, default=ConflictStatus.OPEN)
    decision = models.CharField(max_length=20, choices=ConflictDecision.choices, blank=True)
    reason = models.TextField(blank=True)
    decided_by = models.CharField(max_length=200, blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "challenger", "holder"], name="deal_conflict_unique_pair")
        ]
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"Conflict #{self.pk}: {self.challenger} vs {self.holder}"


class ResourceCategory(models.TextChoices):
    DECK = "deck", "Sales decks"
    ONE_PAGER = "one_pager", "One-pagers"
    CASE_STUDY = "case_study", "Case studies"
    VIDEO = "video", "Videos"
    TRAINING = "training", "Training and certification"


class Resource(TenantOwnedModel):
    """A file (or video link) of the partner resource library, for partners of ``min_tier`` and above."""

    title = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    category = models.CharField(max_length=20, choices=ResourceCategory.choices)
    file = models.FileField(upload_to="partner-resources/%Y/%m/", blank=True, max_length=300)
    url = models.URLField(max_length=500, blank=True, help_text="A video or course link instead of a file.")
    min_tier = models.ForeignKey(
        PartnerTier, null=True, blank=True, on_delete=models.PROTECT, related_name="+",
        help_text="Partners below this tier do not see it (empty: every partner).",
    )  # fmt: skip
    is_published = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["category", "title", "pk"]

    def __str__(self) -> str:
        return self.title

    @property
    def min_rank(self) -> int:
        return self.min_tier.rank if self.min_tier_id else 0


class TicketStatus(models.TextChoices):
    OPEN = "open", "Open (waiting for the team)"
    ANSWERED = "answered", "Answered (waiting for the partner)"
    CLOSED = "closed", "Closed"


class SupportTicket(TenantOwnedModel):
    status_machine = StateMachine(
        field="status",
        moves={"open": {"answered", "closed"}, "answered": {"open", "closed"}, "closed": {"open"}},
        timestamps={"closed": "closed_at"},
        audit_prefix="ticket",
    )

    partner = models.ForeignKey(Partner, on_delete=models.CASCADE, related_name="tickets")
    subject = models.CharField(max_length=200)
    status = models.CharField(max_length=20, choices=TicketStatus.choices, default=TicketStatus.OPEN)
    opened_by = models.CharField(max_length=200, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now, editable=False)
    closed_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-updated_at", "-pk"]
        indexes = [models.Index(fields=["tenant", "partner", "status"], name="ticket_partner_status_idx")]

    def __str__(self) -> str:
        return f"#{self.pk} {self.subject}"


class TicketAuthor(models.TextChoices):
    PARTNER = "partner", "Partner"
    TEAM = "team", "Tenant team"


class TicketMessage(TenantOwnedModel):
    ticket = models.ForeignKey(SupportTicket, on_delete=models.CASCADE, related_name="messages")
    author_kind = models.CharField(max_length=20, choices=TicketAuthor.choices)
    author = models.CharField(max_length=200)
    body = models.TextField()
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["created_at", "pk"]

    def __str__(self) -> str:
        return f"{self.author}: {self.body[:40]}"
