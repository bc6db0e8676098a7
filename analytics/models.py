"""Daily rollups (what every analytics page reads) and the few inputs analytics needs from the tenant.

Analytics is a read-only top-layer app: it writes only these tables. Raw rows (clicks, referrals,
conversion events, attributions, rewards) stay in their apps; ``analytics.rollups`` recomputes a
(tenant, participant, day) bucket from them whenever a hook says something about it changed.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from programs.models import Participant, Program
from referral_platform.tenancy.models import TenantOwnedModel


class ParticipantKind(models.TextChoices):
    """Where a participant comes from (the program kind; resellers count as partners)."""

    CUSTOMER = "customer", "Customer"
    PARTNER = "partner", "Partner"
    EMPLOYEE = "employee", "Employee"


class DailyRollup(TenantOwnedModel):
    """One day of one participant's activity on one channel (UTC days).

    Stage counts are dated by the stage's own timestamp (a referral signed up on Monday and converted
    on Friday counts on both days), revenue by the event's date, rewards earned/owed by the conversion
    date and paid by the payment date. Amounts are minor units of the program's ``currency``.
    """

    day = models.DateField()
    program = models.ForeignKey(Program, on_delete=models.CASCADE, related_name="+", db_constraint=False)
    participant = models.ForeignKey(Participant, on_delete=models.CASCADE, related_name="+", db_constraint=False)
    channel = models.CharField(max_length=20)
    kind = models.CharField(max_length=20, choices=ParticipantKind.choices)
    currency = models.CharField(max_length=3)
    clicks = models.IntegerField(default=0)
    referrals = models.IntegerField(default=0)
    signups = models.IntegerField(default=0)
    qualified = models.IntegerField(default=0)
    customers = models.IntegerField(default=0)
    rejected = models.IntegerField(default=0)
    churned = models.IntegerField(default=0)
    revenue_minor = models.BigIntegerField(default=0, help_text="Attributed payments minus refunds.")
    refunds_minor = models.BigIntegerField(default=0)
    deal_minor = models.BigIntegerField(default=0, help_text="Sum of the first payment of each customer won.")
    sales_cycle_seconds = models.BigIntegerField(default=0, help_text="Sum over customers won of lead → paid.")
    rewards_earned_minor = models.BigIntegerField(default=0)
    rewards_owed_minor = models.BigIntegerField(default=0)
    rewards_paid_minor = models.BigIntegerField(default=0)
    rewards_paid_count = models.IntegerField(default=0)
    reward_delay_seconds = models.BigIntegerField(default=0, help_text="Sum over rewards paid of conversion → paid.")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "day", "program", "participant", "channel"], name="daily_rollup_unique_bucket"
            )
        ]
        indexes = [
            models.Index(fields=["tenant", "day"], name="daily_rollup_day_idx"),
            models.Index(fields=["tenant", "participant", "day"], name="daily_rollup_participant_idx"),
            models.Index(fields=["tenant", "program", "day"], name="daily_rollup_program_idx"),
            # Only rows with customers rank a leaderboard, only rows with referrals count referrers: these
            # partial, covering indexes let those reads skip the (many) rows of clicks alone.
            models.Index(
                fields=["tenant", "day"],
                include=["participant", "customers", "kind", "program", "channel", "currency"],
                condition=models.Q(customers__gt=0),
                name="daily_rollup_customers_idx",
            ),
            models.Index(
                fields=["tenant", "day"],
                include=["participant", "referrals", "kind", "program", "channel", "currency"],
                condition=models.Q(referrals__gt=0),
                name="daily_rollup_referrals_idx",
            ),
        ]
        ordering = ["day"]

    def __str__(self) -> str:
        return f"{self.day} participant #{self.participant_id} {self.channel}"


class DailyTotal(TenantOwnedModel):
    """The same figures summed over participants: one row per (day, program, channel). Kept equal to the
    sum of ``DailyRollup`` rows of its day by every refresh, so tenant-wide pages read a few hundred rows
    a year instead of one per participant."""

    day = models.DateField()
    program = models.ForeignKey(Program, on_delete=models.CASCADE, related_name="+", db_constraint=False)
    channel = models.CharField(max_length=20)
    kind = models.CharField(max_length=20, choices=ParticipantKind.choices)
    currency = models.CharField(max_length=3)
    clicks = models.IntegerField(default=0)
    referrals = models.IntegerField(default=0)
    signups = models.IntegerField(default=0)
    qualified = models.IntegerField(default=0)
    customers = models.IntegerField(default=0)
    rejected = models.IntegerField(default=0)
    churned = models.IntegerField(default=0)
    revenue_minor = models.BigIntegerField(default=0)
    refunds_minor = models.BigIntegerField(default=0)
    deal_minor = models.BigIntegerField(default=0)
    sales_cycle_seconds = models.BigIntegerField(default=0)
    rewards_earned_minor = models.BigIntegerField(default=0)
    rewards_owed_minor = models.BigIntegerField(default=0)
    rewards_paid_minor = models.BigIntegerField(default=0)
    rewards_paid_count = models.IntegerField(default=0)
    reward_delay_seconds = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "day", "program", "channel"], name="daily_total_unique_bucket")
        ]
        indexes = [models.Index(fields=["tenant", "day"], name="daily_total_day_idx")]
        ordering = ["day"]

    def __str__(self) -> str:
        return f"{self.day} program #{self.program_id} {self.channel}"


class MonthlyReferrals(TenantOwnedModel):
    """The referrals of one participant in one UTC month on one channel, and on all channels (``channel``
    ``''``, what an unfiltered page reads: a third fewer rows than the channels'): the ``DailyRollup`` rows
    of that month with referrals, summed (``month`` is the month's first day). Kept equal to that sum by every
    refresh (the affected participant-months are re-derived from their daily rows), rebuilt with them.

    The referrer counts (referral rate, active referrers, the top 10 %'s share) read a period as whole
    months from here plus or minus the edge days from ``DailyRollup``: a sum over a window is the months'
    sums minus the days outside it, and a referrer is a participant whose net sum is positive (counts are
    never negative), so each edge costs at most half a month of daily rows.
    """

    month = models.DateField()
    program = models.ForeignKey(Program, on_delete=models.CASCADE, related_name="+", db_constraint=False)
    participant = models.ForeignKey(Participant, on_delete=models.CASCADE, related_name="+", db_constraint=False)
    channel = models.CharField(max_length=20)
    kind = models.CharField(max_length=20, choices=ParticipantKind.choices)
    currency = models.CharField(max_length=3)
    referrals = models.IntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "month", "program", "participant", "channel"], name="monthly_referrals_unique"
            )
        ]
        indexes = [
            # Covering: a window's months are read by an index-only scan.
            models.Index(
                fields=["tenant", "channel", "month"],
                include=["participant", "referrals", "kind", "program", "currency"],
                name="monthly_referrals_month_idx",
            ),
            models.Index(fields=["tenant", "participant", "month"], name="monthly_referrals_part_idx"),
        ]
        ordering = ["month"]

    def __str__(self) -> str:
        return f"{self.month:%Y-%m} participant #{self.participant_id} {self.channel}"


class RollupFootprint(TenantOwnedModel):
    """The buckets one mutable source row (a referral, a conversion event, a reward) last contributed to.

    A source can move (a re-dated stage, a re-attributed payment, a changed referrer); refreshing it
    recomputes the union of its old buckets (from here) and its new ones, then records the new ones.
    """

    source = models.CharField(max_length=12)
    source_id = models.BigIntegerField()
    keys = models.JSONField(default=list, help_text='[[participant_id, "YYYY-MM-DD"], ...]')

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "source", "source_id"], name="rollup_footprint_unique_source")
        ]

    def __str__(self) -> str:
        return f"{self.source} #{self.source_id}"


class EconomicsSettings(TenantOwnedModel):
    """The tenant's inputs to LTV, CAC and ROI (one row per tenant, edited on the calculator page)."""

    currency = models.CharField(max_length=3, default="USD")
    yearly_sales_marketing_spend_minor = models.BigIntegerField(
        default=0, help_text="All sales and marketing spend of a year (CAC = spend / customers acquired per year)."
    )
    program_yearly_cost_minor = models.BigIntegerField(
        default=0, help_text="Running cost of the referral programs a year (software, people), beside the rewards."
    )
    average_lifetime_months = models.PositiveIntegerField(
        default=36, help_text="How long a customer stays on average (LTV = average ARR x average lifetime)."
    )
    total_customers = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="All current customers (referral rate = referring customers / all customers). Empty: the "
        "participants of customer programs.",
    )
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "economics settings"
        constraints = [models.UniqueConstraint(fields=["tenant"], name="economics_settings_one_per_tenant")]

    def __str__(self) -> str:
        return f"Economics of tenant #{self.tenant_id}"


class OtherChannelCustomer(TenantOwnedModel):
    """A lead or customer the tenant won through another channel (paid search, outbound, events …),
    reported through the API or a CSV import, so referred customers can be compared with them."""

    external_id = models.CharField(max_length=200)
    channel = models.CharField(max_length=60, help_text="e.g. paid_search, outbound, events, organic")
    lead_at = models.DateTimeField(help_text="When the lead came in.")
    converted_at = models.DateTimeField(null=True, blank=True, help_text="When it became a paying customer.")
    deal_minor = models.BigIntegerField(default=0, help_text="First deal / first payment (minor units).")
    arr_minor = models.BigIntegerField(default=0, help_text="Annual recurring revenue (minor units).")
    currency = models.CharField(max_length=3)
    churned_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "external_id"], name="other_channel_customer_unique_id")
        ]
        indexes = [models.Index(fields=["tenant", "lead_at"], name="other_channel_lead_idx")]
        ordering = ["-lead_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.external_id} ({self.channel})"
