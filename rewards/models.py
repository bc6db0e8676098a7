"""Rewards, the double-entry ledger they move through, payouts, and the tenant's Stripe wiring.

The ledger (LedgerAccount / LedgerTransaction / LedgerEntry) is append-only and balanced; PostgreSQL
enforces both (see migrations/0002_ledger_guarantees.py and docs/ledger.md). Amounts are integer minor
units of the account's currency; an entry's amount is signed: positive debits, negative credits.
"""

from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone

from programs.models import Participant, Program
from referral_platform.crypto import EncryptedTextField
from referral_platform.money import format_money
from referral_platform.state import StateMachine
from referral_platform.tenancy.models import TenantOwnedModel
from referrals.models import ConversionEvent, Referral

# --- Stripe wiring per tenant ------------------------------------------------------------------


class StripeCredentials(TenantOwnedModel):
    """The tenant's own Stripe account: its secret key (payouts) and webhook signing secret.

    Shown back only masked (admin); the full values are used only to call Stripe / verify webhooks.
    """

    # Fernet ciphertext in the database (referral_platform/crypto.py); shown again only as the last four.
    secret_key = EncryptedTextField()
    webhook_secret = EncryptedTextField()
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        verbose_name = "Stripe credentials"
        verbose_name_plural = "Stripe credentials"
        constraints = [models.UniqueConstraint(fields=["tenant"], name="stripe_credentials_one_per_tenant")]

    def __str__(self) -> str:
        return f"Stripe {mask_secret(self.secret_key)}"


def mask_secret(value: str) -> str:
    """``sk_test_…wxyz``: enough to recognise a key, never enough to use it."""
    if not value:
        return "(not set)"
    head = value.split("_", 2)
    prefix = "_".join(head[:2]) + "_" if len(head) == 3 else ""
    return f"{prefix}…{value[-4:]}" if len(value) > 8 else "…"


class ParticipantStripeProfile(TenantOwnedModel):
    """Where a participant's rewards go in the tenant's Stripe: a Connect account for cash, a customer
    (of the tenant's own billing) for account credit and coupons."""

    participant = models.ForeignKey(Participant, on_delete=models.CASCADE, related_name="+")
    connected_account_id = models.CharField(max_length=100, blank=True, help_text="Stripe Connect account (acct_…).")
    customer_id = models.CharField(max_length=100, blank=True, help_text="Customer in the tenant's Stripe (cus_…).")
    onboarding_link_created_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "participant"], name="stripe_profile_one_per_participant")
        ]

    def __str__(self) -> str:
        return f"Stripe profile of participant #{self.participant_id}"


class PayoutSettings(TenantOwnedModel):
    """Per-program payout policy (kept beside the program so rewards own their settings)."""

    program = models.ForeignKey(Program, on_delete=models.CASCADE, related_name="+")
    minimum_payout_minor = models.BigIntegerField(
        default=0, help_text="A cash / credit payout waits until the amount due reaches this (minor units)."
    )

    class Meta:
        verbose_name_plural = "payout settings"
        constraints = [models.UniqueConstraint(fields=["tenant", "program"], name="payout_settings_one_per_program")]

    def __str__(self) -> str:
        return f"Payout settings of program #{self.program_id}"


# --- ledger ------------------------------------------------------------------------------------


class AccountKind(models.TextChoices):
    PENDING = "pending", "Participant: pending (held)"
    PAYABLE = "payable", "Participant: payable (approved)"
    PAID = "paid", "Participant: paid out"
    RECEIVABLE = "receivable", "Participant: owed back (clawbacks)"
    EXPENSE = "expense", "Program: reward expense"


PARTICIPANT_ACCOUNT_KINDS = (AccountKind.PENDING, AccountKind.PAYABLE, AccountKind.PAID, AccountKind.RECEIVABLE)


class LedgerAccount(TenantOwnedModel):
    """One account: a participant's pending / payable / paid / receivable, or a program's expense.

    Rows are never updated or deleted (a trigger refuses it), so an account's currency is fixed.
    """

    program = models.ForeignKey(Program, on_delete=models.PROTECT, related_name="+")
    participant = models.ForeignKey(Participant, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    kind = models.CharField(max_length=20, choices=AccountKind.choices)
    currency = models.CharField(max_length=3)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "program", "participant", "kind", "currency"],
                name="ledger_account_unique",
                nulls_distinct=False,
            ),
            models.CheckConstraint(
                condition=(models.Q(kind="expense", participant__isnull=True))
                | (~models.Q(kind="expense") & models.Q(participant__isnull=False)),
                name="ledger_account_owner_matches_kind",
            ),
        ]
        ordering = ["program", "participant", "kind"]

    def __str__(self) -> str:
        owner = f"participant #{self.participant_id}" if self.participant_id else f"program #{self.program_id}"
        return f"{owner} {self.kind} ({self.currency})"


class EntryKind(models.TextChoices):
    ACCRUAL = "accrual", "Accrual"
    APPROVAL = "approval", "Approval"
    PAYOUT = "payout", "Payout"
    CREDIT = "credit", "Account credit"
    REVERSAL = "reversal", "Reversal"
    CLAWBACK = "clawback", "Clawback"
    ADJUSTMENT = "adjustment", "Adjustment"


class LedgerTransaction(TenantOwnedModel):
    """A balanced set of entries, posted once per idempotency key (unique per tenant)."""

    idempotency_key = models.CharField(max_length=200)
    kind = models.CharField(max_length=20, choices=EntryKind.choices)
    memo = models.CharField(max_length=500, blank=True)
    lines_fingerprint = models.CharField(max_length=64, editable=False)
    reward = models.ForeignKey("Reward", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    payout = models.ForeignKey("Payout", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    posted_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "idempotency_key"], name="ledger_transaction_unique_key")
        ]
        indexes = [models.Index(fields=["tenant", "posted_at"], name="ledger_tx_time_idx")]
        ordering = ["posted_at", "pk"]

    def __str__(self) -> str:
        return f"{self.kind} {self.idempotency_key}"


class LedgerEntry(TenantOwnedModel):
    transaction = models.ForeignKey(LedgerTransaction, on_delete=models.PROTECT, related_name="entries")
    account = models.ForeignKey(LedgerAccount, on_delete=models.PROTECT, related_name="entries")
    amount_minor = models.BigIntegerField(help_text="Positive debits, negative credits; never zero.")
    posted_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        verbose_name_plural = "ledger entries"
        constraints = [models.CheckConstraint(condition=~models.Q(amount_minor=0), name="ledger_entry_nonzero")]
        indexes = [models.Index(fields=["tenant", "account", "posted_at"], name="ledger_entry_account_idx")]
        ordering = ["posted_at", "pk"]

    def __str__(self) -> str:
        sign = "+" if self.amount_minor > 0 else ""
        return f"{sign}{format_money(self.amount_minor, self.account.currency)} on account #{self.account_id}"


# --- rewards -----------------------------------------------------------------------------------


class BeneficiarySide(models.TextChoices):
    REFERRER = "referrer", "Referrer"
    REFERRED = "referred", "Referred company"


class RewardKind(models.TextChoices):
    CASH = "cash", "Cash (Stripe Connect transfer)"
    CREDIT = "credit", "Account credit (Stripe customer balance)"
    COUPON = "coupon", "Coupon (free months / % off the next renewal)"
    MANUAL = "manual", "Manual fulfilment (gift card, swag, beta access…)"


class RewardStatus(models.TextChoices):
    PENDING = "pending", "Pending (on hold / awaiting review)"
    APPROVED = "approved", "Approved"
    PAID = "paid", "Paid"
    REJECTED = "rejected", "Rejected"
    REVERSED = "reversed", "Reversed"


class Reward(TenantOwnedModel):
    """What one participant earns for one conversion (or any other source named by ``source_key``).

    ``amount_minor`` is what was accrued; refunds lower the value through ``reversed_minor`` (before
    payout) and ``clawed_back_minor`` (after payout), each mirrored by ledger entries.
    """

    program = models.ForeignKey(Program, on_delete=models.PROTECT, related_name="+")
    participant = models.ForeignKey(Participant, on_delete=models.PROTECT, related_name="rewards")
    beneficiary_side = models.CharField(
        max_length=20, choices=BeneficiarySide.choices, default=BeneficiarySide.REFERRER
    )
    kind = models.CharField(max_length=20, choices=RewardKind.choices, default=RewardKind.CASH)
    description = models.CharField(max_length=200, blank=True, help_text="E.g. 'Amazon gift card', 'Beta access'.")
    coupon_percent_off = models.PositiveSmallIntegerField(null=True, blank=True)
    coupon_duration_months = models.PositiveSmallIntegerField(null=True, blank=True)
    amount_minor = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    reversed_minor = models.BigIntegerField(default=0)
    clawed_back_minor = models.BigIntegerField(default=0)
    status = models.CharField(max_length=20, choices=RewardStatus.choices, default=RewardStatus.PENDING)
    hold_until = models.DateTimeField()
    explanation = models.JSONField(default=dict, blank=True, help_text="How the amount was computed.")
    explanation_text = models.TextField(blank=True)
    source_key = models.CharField(max_length=200, help_text="Idempotency of creation: one reward per source key.")
    slot_key = models.CharField(
        max_length=200,
        blank=True,
        help_text="What the reward pays for, e.g. 'ref:12:referrer:7:default:0:conversion' (the first-payment "
        "reward of referral 12, participant 7, rule 0). At most one current reward per slot.",
    )
    is_current = models.BooleanField(
        default=True,
        help_text="False once a recomputation replaced or withdrew it (its ledger corrections stay).",
    )
    conversion_event = models.ForeignKey(
        ConversionEvent, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    referral = models.ForeignKey(Referral, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    payout = models.ForeignKey("Payout", null=True, blank=True, on_delete=models.PROTECT, related_name="rewards")
    converted_at = models.DateTimeField(help_text="When the conversion that earned it happened.")
    approved_at = models.DateTimeField(null=True, blank=True)
    paid_at = models.DateTimeField(null=True, blank=True)
    time_to_reward = models.DurationField(null=True, blank=True, help_text="Conversion → paid.")
    rejected_at = models.DateTimeField(null=True, blank=True)
    reversed_at = models.DateTimeField(null=True, blank=True)
    status_reason = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    # rewards.services: reward_approve, reward_reject, reward_reduce_for_refund, reward_mark_paid.
    status_machine = StateMachine(
        field="status",
        moves={
            RewardStatus.PENDING: {RewardStatus.APPROVED, RewardStatus.REJECTED, RewardStatus.REVERSED},
            RewardStatus.APPROVED: {RewardStatus.PAID, RewardStatus.REJECTED, RewardStatus.REVERSED},
            RewardStatus.PAID: {RewardStatus.REVERSED},
            RewardStatus.REJECTED: set(),
            RewardStatus.REVERSED: set(),
        },
        audit_prefix="reward",
        timestamps={
            RewardStatus.APPROVED: "approved_at",
            RewardStatus.PAID: "paid_at",
            RewardStatus.REJECTED: "rejected_at",
            RewardStatus.REVERSED: "reversed_at",
        },
        reason_required=frozenset({RewardStatus.REJECTED}),
        refusal="A {current} reward cannot become {to}.",
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "source_key"], name="reward_unique_source_key"),
            # Exactly one current reward per slot: e.g. one first-payment reward per referral, rule and
            # participant, however the events arrive.
            models.UniqueConstraint(
                fields=["tenant", "slot_key"],
                condition=models.Q(is_current=True) & ~models.Q(slot_key=""),
                name="reward_one_current_per_slot",
            ),
            models.CheckConstraint(condition=models.Q(amount_minor__gte=0), name="reward_amount_not_negative"),
            models.CheckConstraint(
                condition=models.Q(reversed_minor__gte=0, clawed_back_minor__gte=0)
                & models.Q(amount_minor__gte=models.F("reversed_minor") + models.F("clawed_back_minor")),
                name="reward_reductions_within_amount",
            ),
        ]
        indexes = [
            models.Index(fields=["tenant", "status", "hold_until"], name="reward_status_hold_idx"),
            models.Index(fields=["tenant", "participant", "status"], name="reward_participant_idx"),
            # Analytics' time to reward (median, p90 of conversion → paid over a period's paid rewards): a
            # covering index of the current paid rewards by payment time, so the percentiles read only the
            # period's rows.
            models.Index(
                fields=["tenant", "paid_at"],
                include=["converted_at", "currency", "program", "participant"],
                condition=models.Q(status="paid", is_current=True),
                name="reward_paid_time_idx",
            ),
        ]
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        kind = self.get_kind_display().split(" (")[0]
        return f"{kind} {format_money(self.amount_minor, self.currency)} → #{self.participant_id}"

    @property
    def net_minor(self) -> int:
        return self.amount_minor - self.reversed_minor - self.clawed_back_minor


# --- payouts -----------------------------------------------------------------------------------


class PayoutMethod(models.TextChoices):
    TRANSFER = "transfer", "Stripe Connect transfer"
    CUSTOMER_BALANCE = "customer_balance", "Stripe customer balance credit"
    COUPON = "coupon", "Stripe coupon"
    MANUAL = "manual", "Manual fulfilment"
    NETTING = "netting", "Netted against clawbacks (nothing sent)"


class PayoutStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    PROCESSING = "processing", "Processing"
    FAILED = "failed", "Failed (will retry)"
    PAID = "paid", "Paid"
    ABANDONED = "abandoned", "Failed, retries exhausted"


class Payout(TenantOwnedModel):
    """One payment to one participant, covering one or more approved rewards.

    ``idempotency_key`` is fixed when the row is created, before any Stripe call; every call for this
    payout carries it (with a per-step suffix), so a crash and re-run replays instead of paying twice.
    """

    program = models.ForeignKey(Program, on_delete=models.PROTECT, related_name="+")
    participant = models.ForeignKey(Participant, on_delete=models.PROTECT, related_name="payouts")
    method = models.CharField(max_length=20, choices=PayoutMethod.choices)
    currency = models.CharField(max_length=3)
    gross_minor = models.BigIntegerField(help_text="Sum of the rewards covered.")
    netted_minor = models.BigIntegerField(default=0, help_text="Clawbacks owed by the participant, offset here.")
    amount_minor = models.BigIntegerField(help_text="What is sent: gross - netted.")
    status = models.CharField(max_length=20, choices=PayoutStatus.choices, default=PayoutStatus.PENDING)
    idempotency_key = models.CharField(max_length=100, editable=False)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    outcome_unknown_since = models.DateTimeField(
        null=True,
        blank=True,
        help_text=(
            "Start of the earliest Stripe attempt whose answer never arrived (crash, timeout, dropped "
            "connection, server error); cleared by a definite answer. Stripe forgets idempotency keys after "
            "about a day, so an older unknown attempt is looked up at Stripe before the next one."
        ),
    )
    stripe_object_id = models.CharField(max_length=100, blank=True, help_text="Transfer / balance txn / coupon id.")
    stripe_detail = models.JSONField(default=dict, blank=True)
    fulfilment_note = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    paid_at = models.DateTimeField(null=True, blank=True)

    # rewards.payouts. Processing may be entered again (a claim after an interrupted attempt).
    status_machine = StateMachine(
        field="status",
        moves={
            PayoutStatus.PENDING: {PayoutStatus.PROCESSING, PayoutStatus.PAID},
            PayoutStatus.PROCESSING: {
                PayoutStatus.PROCESSING,
                PayoutStatus.PAID,
                PayoutStatus.FAILED,
                PayoutStatus.ABANDONED,
            },
            PayoutStatus.FAILED: {PayoutStatus.PROCESSING, PayoutStatus.PAID},
            PayoutStatus.ABANDONED: {PayoutStatus.FAILED, PayoutStatus.PAID},
            PayoutStatus.PAID: set(),
        },
        audit_prefix="payout",
        timestamps={PayoutStatus.PAID: "paid_at"},
        refusal="A {current} payout cannot become {to}.",
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "idempotency_key"], name="payout_unique_idempotency_key"),
            models.CheckConstraint(
                condition=models.Q(amount_minor=models.F("gross_minor") - models.F("netted_minor"))
                & models.Q(netted_minor__gte=0, amount_minor__gte=0),
                name="payout_amount_is_gross_minus_netted",
            ),
        ]
        indexes = [models.Index(fields=["tenant", "status", "next_attempt_at"], name="payout_due_idx")]
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"Payout #{self.pk} {format_money(self.amount_minor, self.currency)} ({self.method})"

    @staticmethod
    def new_idempotency_key() -> str:
        return f"payout-{uuid.uuid4().hex}"


# --- Stripe webhooks ---------------------------------------------------------------------------


class WebhookEventStatus(models.TextChoices):
    RECEIVED = "received", "Received (stored, not processed)"
    PROCESSED = "processed", "Processed"
    IGNORED = "ignored", "Ignored (type not handled)"
    FAILED = "failed", "Failed"


class StripeWebhookEvent(TenantOwnedModel):
    """A verified Stripe event, stored raw before it is handled; one row per Stripe event id."""

    stripe_event_id = models.CharField(max_length=100)
    type = models.CharField(max_length=100)
    payload = models.JSONField(help_text="The event as Stripe sent it, parsed.")
    body = models.BinaryField(default=bytes, editable=False, help_text="The request body exactly as received.")
    status = models.CharField(max_length=20, choices=WebhookEventStatus.choices, default=WebhookEventStatus.RECEIVED)
    attempts = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    received_at = models.DateTimeField(default=timezone.now, editable=False)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "stripe_event_id"], name="stripe_event_unique_per_tenant")
        ]
        indexes = [
            # The drain's claim: a tenant's unhandled events in id order (rewards.webhooks.stripe_events_drain).
            models.Index(fields=["tenant", "id"], name="stripe_event_received", condition=models.Q(status="received"))
        ]
        ordering = ["-received_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.type} {self.stripe_event_id}"


class StripeCharge(TenantOwnedModel):
    """What is known of one charge in the tenant's Stripe: paid amount, refunded amount (the highest
    seen, so refunds that arrive late or twice change nothing), and the payment conversion it became."""

    stripe_charge_id = models.CharField(max_length=100)
    stripe_invoice_id = models.CharField(max_length=100, blank=True)
    stripe_payment_intent_id = models.CharField(max_length=100, blank=True)
    amount_minor = models.BigIntegerField(default=0)
    amount_refunded_minor = models.BigIntegerField(default=0)
    currency = models.CharField(max_length=3, blank=True)
    conversion_event = models.ForeignKey(
        ConversionEvent, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "stripe_charge_id"], name="stripe_charge_unique")]
        indexes = [
            models.Index(fields=["tenant", "stripe_invoice_id"], name="stripe_charge_invoice_idx"),
            # A charge is found by any of its three ids (``rewards.webhooks``: a payment's "no row has any of these
            # ids" and a refund's locked read): without this one, every payment and refund of the workspace read
            # all of its charges for the payment intent.
            models.Index(fields=["tenant", "stripe_payment_intent_id"], name="stripe_charge_intent_idx"),
        ]

    def __str__(self) -> str:
        return self.stripe_charge_id


# --- reward evaluation -------------------------------------------------------------------------


class EvaluationStatus(models.TextChoices):
    DONE = "done", "Done (rewards settled from the referral's events)"
    BLOCKED = "blocked", "Blocked (e.g. fraud review, participant inactive); evaluated again when that changes"
    NOTHING_YET = "nothing_yet", "Nothing to evaluate yet (no attribution); evaluated again on the next run"
    FAILED = "failed", "Failed (e.g. unreadable rules)"


class RewardEvaluation(TenantOwnedModel):
    """What the last evaluation of one conversion event decided, and why: one row per event.

    Evaluating an event settles its referral's rewards from the whole set of the referral's events
    (rewards/evaluation.py), so evaluating again — a retried or concurrent task, a late event of the same
    customer — gives the same rewards. ``blocked`` referrals (fraud review) are settled when cleared.
    """

    conversion_event = models.ForeignKey(ConversionEvent, on_delete=models.PROTECT, related_name="+")
    referral = models.ForeignKey(Referral, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    status = models.CharField(max_length=20, choices=EvaluationStatus.choices)
    notes = models.JSONField(default=list, blank=True, help_text="Why: every decision in plain sentences.")
    detail = models.JSONField(default=dict, blank=True, help_text="Context and the rules' outcome per participant.")
    rewards_created = models.PositiveIntegerField(default=0)
    attempts = models.PositiveIntegerField(default=0)
    evaluated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "conversion_event"], name="reward_evaluation_one_per_event")
        ]
        indexes = [models.Index(fields=["tenant", "referral"], name="reward_evaluation_referral_idx")]
        ordering = ["-evaluated_at", "-pk"]

    def __str__(self) -> str:
        return f"Evaluation of conversion #{self.conversion_event_id}: {self.status}"


# --- participant messages ----------------------------------------------------------------------


class MessageKind(models.TextChoices):
    WELCOME = "welcome", "Welcome (links and dashboard)"
    REFERRAL_RECEIVED = "referral_received", "Referral received"
    REFERRAL_QUALIFIED = "referral_qualified", "Referral is a qualified lead"
    REFERRAL_CONVERTED = "referral_converted", "Referral became a customer"
    REWARD_EARNED = "reward_earned", "Reward earned"
    REWARD_APPROVED = "reward_approved", "Reward approved (on its way)"
    REWARD_PAID = "reward_paid", "Reward paid"
    REWARD_REDUCED = "reward_reduced", "Reward reduced or withdrawn"


class ParticipantMessage(TenantOwnedModel):
    """A message to a participant at one step of a referral or reward (R-20): e-mailed once and shown
    on their dashboard. Unique per (tenant, participant, kind, related object), so a retried task or a
    repeated transition never sends the same message twice."""

    participant = models.ForeignKey(Participant, on_delete=models.CASCADE, related_name="messages")
    kind = models.CharField(max_length=30, choices=MessageKind.choices)
    related_key = models.CharField(
        max_length=100, help_text="The object the message is about, e.g. referral:12 or reward:34:reduce-to:500."
    )
    referral = models.ForeignKey(Referral, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    reward = models.ForeignKey(Reward, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    subject = models.CharField(max_length=200)
    body = models.TextField()
    email_to = models.EmailField(blank=True)
    emailed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "participant", "kind", "related_key"], name="participant_message_once"
            )
        ]
        indexes = [models.Index(fields=["tenant", "participant", "created_at"], name="participant_message_idx")]
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} → participant #{self.participant_id}"
