"""Analytics in the marketer admin: per-participant figures as columns of the participant list and a
panel on a participant's page (the programs admin, extended here so programs never imports analytics),
and the other-channel customers the tenant reported."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import BigIntegerField, IntegerField, JSONField, OuterRef, Subquery, Sum, Value
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast, Coalesce, JSONObject
from django.utils.html import format_html

from programs.admin import ParticipantAdmin
from programs.models import Participant
from referral_platform.money import format_amount
from referral_platform.tenancy.admin_base import TenantScopedAdmin, site

from . import metrics as m
from .models import DailyRollup, OtherChannelCustomer
from .selectors import participant_figures

FIGURES = [
    ("clicks", IntegerField),
    ("signups", IntegerField),
    ("customers", IntegerField),
    ("revenue_minor", BigIntegerField),
    ("rewards_earned_minor", BigIntegerField),
]


def _figures_of_participant():
    """All of a participant's all-time sums in one correlated subquery (a JSON object), instead of one
    subquery a column: each listed participant's rollup rows are read once, not five times."""
    rows = (
        DailyRollup.objects.filter(tenant_id=OuterRef("tenant_id"), participant_id=OuterRef("pk"))
        .order_by()
        .values("participant_id")
        .annotate(figures=JSONObject(**{name: Sum(name) for name, _ in FIGURES}))
        .values("figures")
    )
    return Subquery(rows, output_field=JSONField())


def _figure(name: str, output):
    return Coalesce(Cast(KeyTextTransform(name, "analytics_figures"), output()), Value(0), output_field=output())


class ParticipantWithFiguresAdmin(ParticipantAdmin):
    list_display = [
        *ParticipantAdmin.list_display,
        "figure_clicks",
        "figure_signups",
        "figure_customers",
        "figure_revenue",
        "figure_earnings",
        "figure_earnings_per_click",
    ]

    def get_queryset(self, request):
        queryset = super().get_queryset(request).select_related("program")
        queryset = queryset.annotate(analytics_figures=_figures_of_participant())
        return queryset.annotate(**{f"figure_{name}": _figure(name, output) for name, output in FIGURES})

    @admin.display(description="Clicks", ordering="figure_clicks")
    def figure_clicks(self, obj):
        return obj.figure_clicks

    @admin.display(description="Sign-ups", ordering="figure_signups")
    def figure_signups(self, obj):
        return obj.figure_signups

    @admin.display(description="Customers", ordering="figure_customers")
    def figure_customers(self, obj):
        return obj.figure_customers

    @admin.display(description="Revenue", ordering="figure_revenue_minor")
    def figure_revenue(self, obj):
        return format_amount(obj.figure_revenue_minor, obj.program.currency)

    @admin.display(description="Earnings", ordering="figure_rewards_earned_minor")
    def figure_earnings(self, obj):
        return format_amount(obj.figure_rewards_earned_minor, obj.program.currency)

    @admin.display(description="Earnings / click")
    def figure_earnings_per_click(self, obj):
        value = m.ratio(obj.figure_rewards_earned_minor, obj.figure_clicks)
        return m.DASH if value is None else format_amount(round(value), obj.program.currency)

    def get_fields(self, request, obj=None):
        fields = list(super().get_fields(request, obj))
        return [*fields, "analytics_panel"] if obj is not None else fields

    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        return [*fields, "analytics_panel"] if obj is not None else fields

    @admin.display(description="Figures (all time)")
    def analytics_panel(self, obj):
        figures = participant_figures(obj.tenant, [obj.pk]).get(obj.pk)
        if not figures:
            return "No activity yet."
        currency = obj.program.currency
        per_click = figures["earnings_per_click_minor"]
        return format_html(
            "<table><tr><th>Clicks</th><th>Sign-ups</th><th>Customers</th><th>Revenue</th><th>Earnings</th>"
            "<th>Earnings per click</th></tr><tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>"
            "</tr></table>",
            figures["clicks"],
            figures["signups"],
            figures["customers"],
            format_amount(figures["revenue_minor"], currency),
            format_amount(figures["earnings_minor"], currency),
            m.DASH if per_click is None else format_amount(round(per_click), currency),
        )


site.unregister(Participant)
site.register(Participant, ParticipantWithFiguresAdmin)


@admin.register(OtherChannelCustomer, site=site)
class OtherChannelCustomerAdmin(TenantScopedAdmin):
    list_display = ["external_id", "channel", "lead_at", "converted_at", "deal_minor", "arr_minor", "currency"]
    list_filter = ["channel"]
    search_fields = ["external_id", "channel"]
    money_fields = {"deal_minor": "currency", "arr_minor": "currency"}
