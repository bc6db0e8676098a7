"""Referral links, the clicks on them, and referrals moving through the funnel."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from programs.models import AttributionModel, Participant, Program, ProgramVersion
from referral_platform.domains import normalise_company_name
from referral_platform.state import StateMachine
from referral_platform.tenancy.models import TenantOwnedModel, TenantScopedQuerySet

from .mailbox import MailboxDomain, MailboxKey


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
    """One visit of a referral link, written in batches by the click flush (referrals.click_buffer).

    The flush copies tenant, program and participant from the link row it joins, so they always
    agree with ``link``; only ``link`` carries a database constraint (and clicks go when their
    link goes). The other three are plain indexed-by-composite columns: a per-row foreign-key
    check for each of them (deferred triggers) would cost the flush more than the insert itself.
    """

    tenant = models.ForeignKey(
        "tenancy.Tenant",
        on_delete=models.CASCADE,
        related_name="+",
        editable=False,
        db_constraint=False,
        db_index=False,
    )
    link = models.ForeignKey(ReferralLink, on_delete=models.CASCADE, related_name="clicks")
    program = models.ForeignKey(
        Program, on_delete=models.DO_NOTHING, related_name="+", db_constraint=False, db_index=False
    )
    participant = models.ForeignKey(
        Participant, on_delete=models.DO_NOTHING, related_name="+", db_constraint=False, db_index=False
    )
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


class ReferralSource(models.TextChoices):
    LANDING_FORM = "landing_form", "Landing page lead form"
    SIGNUP_API = "signup_api", "Sign-up reported by the product (API)"
    PARTNER_LEAD = "partner_lead", "Lead submitted by a partner"
    CONVERSION = "conversion", "Conversion event matched to a referral link's visitor"
    ADMIN = "admin", "Created in the admin"


class CompanySize(models.TextChoices):
    SIZE_1_10 = "1-10", "1-10 employees"
    SIZE_11_50 = "11-50", "11-50 employees"
    SIZE_51_200 = "51-200", "51-200 employees"
    SIZE_201_1000 = "201-1000", "201-1,000 employees"
    SIZE_1001_PLUS = "1001+", "More than 1,000 employees"


class ReviewStatus(models.TextChoices):
    """Where a referral stands in fraud review. Only clear and cleared referrals can be rewarded."""

    CLEAR = "clear", "Clear (no fraud signal)"
    FLAGGED = "flagged", "Flagged, waiting for review"
    CLEARED = "cleared", "Cleared by a marketer"
    REJECTED = "rejected", "Rejected as fraud"


class ReferralQuerySet(TenantScopedQuerySet):
    """Keeps ``referred_company_key`` with ``referred_company`` on the bulk writes that bypass ``save()``."""

    def bulk_create(self, objs, *args, **kwargs):
        objs = list(objs)
        for obj in objs:
            obj.referred_company_key = company_key(obj.referred_company)
        return super().bulk_create(objs, *args, **kwargs)

    def bulk_update(self, objs, fields, *args, **kwargs):
        objs = list(objs)
        if "referred_company" in fields:
            for obj in objs:
                obj.referred_company_key = company_key(obj.referred_company)
            fields = [*fields, "referred_company_key"]
        return super().bulk_update(objs, fields, *args, **kwargs)

    def update(self, **kwargs):
        if "referred_company" in kwargs and "referred_company_key" not in kwargs:  # (bulk_update gives both)
            value = kwargs["referred_company"]
            if not isinstance(value, str):
                raise TypeError("referred_company: update() takes a string here (its key is computed from it)")
            kwargs["referred_company_key"] = company_key(value)
        return super().update(**kwargs)


def company_key(name: str) -> str:
    return normalise_company_name(name or "")[:200]


class Referral(TenantOwnedModel):
    objects = models.Manager.from_queryset(ReferralQuerySet)()

    program = models.ForeignKey(Program, on_delete=models.CASCADE, related_name="referrals")
    referrer = models.ForeignKey(Participant, on_delete=models.CASCADE, related_name="referrals")
    link = models.ForeignKey(ReferralLink, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    visitor_id = models.CharField(max_length=64, blank=True)
    referred_email = models.EmailField(blank=True)
    # The mailbox the address reaches (referrals.mailbox): generated by the database, indexed for the fraud checks.
    referred_mailbox = models.GeneratedField(
        expression=MailboxKey("referred_email"), output_field=models.CharField(max_length=254), db_persist=True
    )
    referred_mailbox_domain = models.GeneratedField(
        expression=MailboxDomain("referred_email"), output_field=models.CharField(max_length=254), db_persist=True
    )
    referred_name = models.CharField(max_length=200, blank=True)
    referred_company = models.CharField(max_length=200, blank=True)
    # normalise_company_name(referred_company), kept by save() and the manager's bulk writes (ReferralQuerySet):
    # the duplicate-company check finds a company's earlier referrals by it on an index.
    referred_company_key = models.CharField(max_length=200, blank=True, editable=False)
    referred_external_id = models.CharField(max_length=200, blank=True)
    referred_company_size = models.CharField(max_length=20, choices=CompanySize.choices, blank=True)
    how_did_you_hear = models.CharField(max_length=300, blank=True, help_text="The referred company's own answer.")
    # What is known of the referred company for the rules' ideal-customer profile (unknown never disqualifies).
    referred_industry = models.CharField(max_length=100, blank=True)
    referred_employees = models.PositiveIntegerField(null=True, blank=True)
    referred_annual_revenue_minor = models.BigIntegerField(null=True, blank=True)
    qualification = models.JSONField(
        default=dict, blank=True, help_text="Qualifying information (budget, authority, need, timeline, notes)."
    )
    source = models.CharField(max_length=20, choices=ReferralSource.choices, blank=True)
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
    established_at = models.DateTimeField(
        null=True,
        blank=True,
        editable=False,
        help_text="When the referral was established: its sign-up, or its earliest event. Credit is decided "
        "from the touchpoints up to this moment; later touches never move it.",
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    # Fraud review (referrals/fraud_services.py). Not editable in forms: only the review services
    # move it, each move audited.
    review_status = models.CharField(
        max_length=20, choices=ReviewStatus.choices, default=ReviewStatus.CLEAR, editable=False
    )
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    reviewed_at = models.DateTimeField(null=True, blank=True, editable=False)
    review_reason = models.TextField(blank=True, editable=False)
    fraud_screened_at = models.DateTimeField(null=True, blank=True, editable=False)

    # The funnel (referrals.services: referral_sign_up, referral_qualify …). A stage may be skipped (a
    # payment can convert a referral that never qualified); rejected and churned are final. A
    # cancellation churns a referral at any open stage: a customer who cancelled before paying stays
    # churned when a later payment arrives, whatever order the events came in.
    status_machine = StateMachine(
        field="status",
        moves={
            ReferralStatus.CLICKED: {
                ReferralStatus.SIGNED_UP,
                ReferralStatus.QUALIFIED,
                ReferralStatus.CONVERTED,
                ReferralStatus.REJECTED,
                ReferralStatus.CHURNED,
            },
            ReferralStatus.SIGNED_UP: {
                ReferralStatus.QUALIFIED,
                ReferralStatus.CONVERTED,
                ReferralStatus.REJECTED,
                ReferralStatus.CHURNED,
            },
            ReferralStatus.QUALIFIED: {ReferralStatus.CONVERTED, ReferralStatus.REJECTED, ReferralStatus.CHURNED},
            ReferralStatus.CONVERTED: {ReferralStatus.CHURNED},
            ReferralStatus.REJECTED: set(),
            ReferralStatus.CHURNED: set(),
        },
        audit_prefix="referral",
        timestamps={
            ReferralStatus.CLICKED: "clicked_at",
            ReferralStatus.SIGNED_UP: "signed_up_at",
            ReferralStatus.QUALIFIED: "qualified_at",
            ReferralStatus.CONVERTED: "converted_at",
            ReferralStatus.REJECTED: "rejected_at",
            ReferralStatus.CHURNED: "churned_at",
        },
        reason_required=frozenset({ReferralStatus.REJECTED}),
        labels=dict(ReferralStatus.choices),
    )
    # Fraud review (referrals.fraud_services)::
    #
    #     clear ──screen finds a signal──▶ flagged ──marketer──▶ cleared ──new signal──▶ flagged
    #                                         └──────marketer──▶ rejected (final)
    #
    # A cleared referral goes back to review only when screening finds a signal the marketer has not seen.
    review_machine = StateMachine(
        field="review_status",
        moves={
            ReviewStatus.CLEAR: {ReviewStatus.FLAGGED},
            ReviewStatus.FLAGGED: {ReviewStatus.CLEARED, ReviewStatus.REJECTED},
            ReviewStatus.CLEARED: {ReviewStatus.FLAGGED},
            ReviewStatus.REJECTED: set(),
        },
        audit_prefix="referral.review",
        timestamps={ReviewStatus.CLEARED: "reviewed_at", ReviewStatus.REJECTED: "reviewed_at"},
        reason_required=frozenset({ReviewStatus.CLEARED, ReviewStatus.REJECTED}),
        labels={
            ReviewStatus.CLEAR: "not flagged",
            ReviewStatus.FLAGGED: "flagged",
            ReviewStatus.CLEARED: "already cleared",
            ReviewStatus.REJECTED: "rejected as fraud",
        },
        refusal="This referral is {current_label}; it cannot be {to}.",
    )

    class Meta:
        indexes = [
            models.Index(fields=["tenant", "status"], name="referral_status_idx"),
            models.Index(fields=["tenant", "referred_email"], name="referral_email_idx"),
            models.Index(fields=["tenant", "referred_mailbox"], name="referral_mailbox_idx"),
            models.Index(fields=["tenant", "program", "referred_company_key"], name="referral_company_key_idx"),
            models.Index(fields=["tenant", "program", "referred_mailbox_domain"], name="referral_mailbox_domain_idx"),
            models.Index(fields=["tenant", "referred_external_id"], name="referral_customer_idx"),
            models.Index(fields=["tenant", "visitor_id"], name="referral_visitor_idx"),
            models.Index(fields=["tenant", "review_status"], name="referral_review_idx"),
            models.Index(fields=["tenant", "program", "created_at"], name="referral_program_time_idx"),
            models.Index(fields=["tenant", "referrer", "created_at"], name="referral_referrer_time_idx"),
        ]
        constraints = [
            # One referral per referred person and program: a second referrer's touch is credited by
            # attribution (a touchpoint), not by a competing referral.
            models.UniqueConstraint(
                fields=["tenant", "program", "referred_email"],
                condition=~models.Q(referred_email=""),
                name="referral_unique_email_per_program",
            )
        ]
        ordering = ["-created_at", "-pk"]

    # What ``save`` derives a column from (``referral_platform.db.sql.save_fields``: a save of other fields only
    # is a plain UPDATE).
    save_derives_from = frozenset({"referred_company"})

    def save(self, *args, **kwargs):
        self.referred_company_key = company_key(self.referred_company)
        update_fields = kwargs.get("update_fields")
        if update_fields is not None and "referred_company" in update_fields:
            kwargs["update_fields"] = [*update_fields, "referred_company_key"]
        super().save(*args, **kwargs)

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


# Events whose processing is finished with a referral (attributed or not): what rewards are settled from.
SETTLED_EVENT_STATUSES = (ConversionEventStatus.PROCESSED, ConversionEventStatus.UNATTRIBUTED)


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
    mailbox = models.GeneratedField(
        expression=MailboxKey("email"), output_field=models.CharField(max_length=254), db_persist=True
    )
    referral_code = models.CharField(max_length=32, blank=True)
    coupon_code = models.CharField(max_length=64, blank=True)
    visitor_id = models.CharField(max_length=64, blank=True)
    referral = models.ForeignKey(
        Referral, null=True, blank=True, on_delete=models.SET_NULL, related_name="conversion_events"
    )
    raw = models.JSONField(default=dict, help_text="The payload as received (parsed).")
    raw_body = models.TextField(blank=True, help_text="The request body exactly as received, byte for byte.")
    source = models.CharField(max_length=20, default="api")
    status = models.CharField(
        max_length=20, choices=ConversionEventStatus.choices, default=ConversionEventStatus.RECEIVED
    )
    error = models.TextField(blank=True)
    received_at = models.DateTimeField(default=timezone.now, editable=False)
    processed_at = models.DateTimeField(null=True, blank=True)
    # The reconciler (referral_platform/reconcile.py): when processing was last queued, and how many times
    # it re-queued an event a dead worker left ``received``.
    queued_at = models.DateTimeField(null=True, blank=True)
    requeues = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "external_event_id"], name="conversion_event_unique_external_id")
        ]
        indexes = [
            models.Index(fields=["tenant", "kind", "occurred_at"], name="conversion_kind_time_idx"),
            models.Index(fields=["tenant", "customer_external_id"], name="conversion_customer_idx"),
            models.Index(fields=["tenant", "mailbox"], name="conversion_mailbox_idx"),
            # A referral's settled payments in time order: its first payment (the analytics refresh's
            # "customers" revenue, docs/throughput.md), whatever the table's statistics say (a billing run on
            # a young table ran that read over every payment of the tenant per referral).
            models.Index(
                fields=["referral", "occurred_at", "id"],
                condition=models.Q(kind="payment", status="processed"),
                name="conversion_referral_paid_idx",
            ),
            # The events that found no referral, by each identifier a new referral's person may have: the new
            # referral's ``orphans_requeue`` finds them with an index lookup per identifier instead of reading
            # every event of the workspace (there was no index on e-mail or visitor id). Most of a tenant's
            # billing events may be such (customers nobody referred).
            *(
                models.Index(
                    fields=["tenant", column],
                    condition=models.Q(status="unattributed", referral__isnull=True),
                    name=f"conversion_orphan_{name}_idx",
                )
                for column, name in (
                    ("customer_external_id", "customer"),
                    ("email", "email"),
                    ("visitor_id", "visitor"),
                )
            ),
        ]
        ordering = ["-occurred_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.kind} {self.external_event_id}"


class IdentityKind(models.TextChoices):
    VISITOR = "visitor", "Visitor id (one browser)"
    EMAIL = "email", "E-mail"
    CUSTOMER = "customer", "Customer id (the tenant's)"


class IdentityLink(TenantOwnedModel):
    """One edge of the identity graph: two identifiers seen together.

    A sign-up, lead or conversion that carries a visitor id and an e-mail (or customer id) reveals
    that they are the same person; touchpoints of every identifier connected to the converting one
    count for its attribution. Edges are stored once, in canonical order (``a`` sorts before ``b``).
    """

    a_kind = models.CharField(max_length=10, choices=IdentityKind.choices)
    a_value = models.CharField(max_length=254)
    b_kind = models.CharField(max_length=10, choices=IdentityKind.choices)
    b_value = models.CharField(max_length=254)
    # The mailbox of an e-mail end (referrals.mailbox), '' for other kinds: indexed for the fraud checks.
    a_mailbox = models.GeneratedField(
        expression=models.Case(models.When(a_kind="email", then=MailboxKey("a_value")), default=models.Value("")),
        output_field=models.CharField(max_length=254),
        db_persist=True,
    )
    b_mailbox = models.GeneratedField(
        expression=models.Case(models.When(b_kind="email", then=MailboxKey("b_value")), default=models.Value("")),
        output_field=models.CharField(max_length=254),
        db_persist=True,
    )
    source = models.CharField(max_length=40, help_text="What revealed the link (sign-up, lead, conversion …).")
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "a_kind", "a_value", "b_kind", "b_value"], name="identity_link_unique"
            )
        ]
        indexes = [
            models.Index(fields=["tenant", "b_kind", "b_value"], name="identity_link_b_idx"),
            models.Index(fields=["tenant", "a_mailbox"], name="identity_link_a_mailbox_idx"),
            models.Index(fields=["tenant", "b_mailbox"], name="identity_link_b_mailbox_idx"),
        ]
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.a_kind}:{self.a_value} = {self.b_kind}:{self.b_value}"


class TouchpointKind(models.TextChoices):
    # Clicks are not copied here: attribution reads them from referrals.Click (see docs/attribution.md).
    LEAD_FORM = "lead_form", "Lead form on the landing page"
    PARTNER_LEAD = "partner_lead", "Lead submitted by a partner"
    REFERRAL_CODE = "referral_code", "Referral code given at sign-up"
    COUPON_CODE = "coupon_code", "Coupon code given at sign-up"
    PARTNER_REGISTRATION = "partner_registration", "Partner registration"
    SELF_REPORTED = "self_reported", '"How did you hear about us" answer'


class Touchpoint(TenantOwnedModel):
    """A non-click contact between a prospect and a referrer (or a self-reported source).

    Touchpoints with a participant take attribution credit; those without one (an answer such as
    "Google search", an unknown coupon) are kept as evidence and shown in explanations.
    """

    kind = models.CharField(max_length=24, choices=TouchpointKind.choices)
    program = models.ForeignKey(Program, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    participant = models.ForeignKey(
        Participant, null=True, blank=True, on_delete=models.CASCADE, related_name="touchpoints"
    )
    referral = models.ForeignKey(Referral, null=True, blank=True, on_delete=models.SET_NULL, related_name="touchpoints")
    link = models.ForeignKey(ReferralLink, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    visitor_id = models.CharField(max_length=64, blank=True)
    email = models.EmailField(blank=True)
    customer_external_id = models.CharField(max_length=200, blank=True)
    label = models.CharField(max_length=300, blank=True, help_text="The answer, coupon or code as given.")
    occurred_at = models.DateTimeField()
    dedupe_key = models.CharField(max_length=400, blank=True, help_text="Repeats of the same fact give one row.")
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "dedupe_key"], condition=~models.Q(dedupe_key=""), name="touchpoint_unique_dedupe"
            )
        ]
        indexes = [
            models.Index(fields=["tenant", "visitor_id"], name="touchpoint_visitor_idx"),
            models.Index(fields=["tenant", "email"], name="touchpoint_email_idx"),
            models.Index(fields=["tenant", "customer_external_id"], name="touchpoint_customer_idx"),
        ]
        ordering = ["-occurred_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} at {self.occurred_at:%Y-%m-%d %H:%M}"


class Attribution(TenantOwnedModel):
    """One credited participant's share of one conversion event.

    The shares of an event's rows sum to exactly 1 and their amounts to exactly the event's amount.
    ``touchpoints`` lists this participant's touchpoints with their weights; ``evidence`` the whole
    sequence, the window and the identities that were stitched, so the credit can be explained.
    """

    conversion_event = models.ForeignKey(ConversionEvent, on_delete=models.CASCADE, related_name="attributions")
    referral = models.ForeignKey(Referral, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    program = models.ForeignKey(Program, on_delete=models.CASCADE, related_name="+")
    participant = models.ForeignKey(Participant, on_delete=models.CASCADE, related_name="attributions")
    rule_version = models.ForeignKey(ProgramVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    model = models.CharField(max_length=20, choices=AttributionModel.choices)
    share = models.DecimalField(max_digits=7, decimal_places=6)
    exact_share = models.TextField(
        blank=True, help_text="The exact share as a fraction 'n/d' (amounts are split from it; ``share`` is rounded)."
    )
    amount_minor = models.BigIntegerField(default=0)
    currency = models.CharField(max_length=3, blank=True)
    touchpoints = models.JSONField(default=list)
    evidence = models.JSONField(default=dict)
    computed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "conversion_event", "participant"], name="attribution_one_per_participant"
            ),
            models.CheckConstraint(
                condition=models.Q(share__gt=0) & models.Q(share__lte=1), name="attribution_share_in_range"
            ),
        ]
        indexes = [models.Index(fields=["tenant", "participant", "computed_at"], name="attribution_participant_idx")]
        ordering = ["conversion_event", "-share", "pk"]

    def __str__(self) -> str:
        return f"{self.share:%} of {self.conversion_event} → {self.participant}"


# --- fraud screening ------------------------------------------------------------------------------
class FraudSignalCode(models.TextChoices):
    SELF_REFERRAL_EMAIL = "self_referral_email", "Self-referral: same e-mail as the referrer"
    SELF_REFERRAL_VISITOR = "self_referral_visitor", "Self-referral: same visitor as the referrer"
    SELF_REFERRAL_DEVICE = "self_referral_device", "Self-referral: same IP address and browser as the referrer"
    DISPOSABLE_EMAIL = "disposable_email", "Disposable e-mail domain"
    VELOCITY = "velocity", "Too many referrals in an hour from one referrer"
    DUPLICATE_COMPANY = "duplicate_company", "Company already referred to this program"
    OWN_COMPANY = "own_company", "Own company: the referrer's own e-mail domain or company name"


class FraudPolicy(TenantOwnedModel):
    """Which fraud checks run for one program, and their thresholds.

    One per program (unique with the tenant); created with these defaults the first time a referral
    of the program is screened, and edited by marketers in the admin.
    """

    program = models.ForeignKey(Program, on_delete=models.CASCADE, related_name="fraud_policies")
    self_referral_enabled = models.BooleanField(
        default=True, help_text="Flag a referred e-mail, visitor or device that is the referrer's own."
    )
    self_referral_activity_days = models.PositiveIntegerField(
        default=30,
        validators=[MinValueValidator(1), MaxValueValidator(365)],
        help_text="How far back the referrer's own clicks count for the IP + browser comparison.",
    )
    disposable_email_enabled = models.BooleanField(
        default=True, help_text="Flag referred e-mails on a disposable (throw-away) domain."
    )
    velocity_enabled = models.BooleanField(default=True, help_text="Flag bursts of referrals from one referrer.")
    velocity_max_per_hour = models.PositiveIntegerField(
        default=5,
        validators=[MinValueValidator(1), MaxValueValidator(10_000)],
        help_text="A referrer's referral is flagged when they have more than this many in the hour up to it.",
    )
    duplicate_company_enabled = models.BooleanField(
        default=True, help_text="Flag a company (name, e-mail domain or e-mail) already referred to this program."
    )
    duplicate_company_window_days = models.PositiveIntegerField(
        default=90,
        validators=[MinValueValidator(1), MaxValueValidator(3650)],
        help_text="How far back an earlier referral of the same company counts.",
    )
    own_company_enabled = models.BooleanField(
        default=True,
        help_text="Flag a referred person of the referrer's own company (same company e-mail domain or "
        "company name): referring yourself or your own company does not count.",
    )
    updated_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        verbose_name = "fraud policy"
        verbose_name_plural = "fraud policies"
        constraints = [models.UniqueConstraint(fields=["tenant", "program"], name="fraud_policy_one_per_program")]
        ordering = ["program"]

    def __str__(self) -> str:
        return f"Fraud checks of {self.program}"


class FraudFlag(TenantOwnedModel):
    """One fraud signal raised on a referral, with the evidence that raised it.

    One row per referral and signal code: screening a referral again never duplicates a flag. The
    evidence is kept as first found (see docs/fraud.md for its shape).
    """

    referral = models.ForeignKey(Referral, on_delete=models.CASCADE, related_name="fraud_flags")
    code = models.CharField(max_length=40, choices=FraudSignalCode.choices)
    message = models.TextField(help_text="Why, in a sentence a marketer can read.")
    evidence = models.JSONField(default=dict, help_text="The exact values compared and the rows they came from.")
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "referral", "code"], name="fraud_flag_one_per_code"),
        ]
        indexes = [models.Index(fields=["tenant", "code", "created_at"], name="fraud_flag_code_idx")]
        ordering = ["referral", "code"]

    def __str__(self) -> str:
        return f"{self.get_code_display()} on referral #{self.referral_id}"


class FraudReview(Referral):
    """The admin's fraud review queue: referrals that screening flagged, and the decisions on them."""

    class Meta:
        proxy = True
        verbose_name = "fraud review"
        verbose_name_plural = "fraud review queue"
