from django.contrib import admin
from django.utils.html import format_html, format_html_join

from referral_platform.money import format_amount
from referral_platform.tenancy.admin_base import (
    TenantScopedAdmin,
    TenantScopedInline,
    bulk_action,
    json_with_money,
    move_action,
    site,
)

from . import services
from .models import (
    Attribution,
    Click,
    ConversionEvent,
    IdentityLink,
    Referral,
    ReferralLink,
    ReferralStatus,
    Touchpoint,
)
from .selectors import attribution_explanation


def _amount(obj) -> str:
    return format_amount(obj.amount_minor, obj.currency)


class ReferralLinkAdmin(TenantScopedAdmin):
    list_display = ["code", "participant", "program", "channel", "is_active", "created_at"]
    list_filter = ["program", "channel", "is_active"]
    search_fields = ["code", "participant__name", "participant__email"]
    autocomplete_fields = ["program", "participant"]


class ClickAdmin(TenantScopedAdmin):
    list_display = ["occurred_at", "link", "visitor_id", "channel", "is_bot"]
    list_filter = ["program", "channel", "is_bot"]
    search_fields = ["visitor_id", "link__code"]
    autocomplete_fields = ["link", "program", "participant"]
    date_hierarchy = "occurred_at"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


def _mark(service, to: str, description: str, **service_kwargs):
    """A stage move as a bulk action ("N referral(s) marked <stage>")."""
    return move_action(
        service,
        name=f"mark_{to}",
        description=description,
        noun="referral",
        verb=f"marked {to}",
        to=to,
        **service_kwargs,
    )


class ReferralAdmin(TenantScopedAdmin):
    list_display = ["referred_email", "referred_company", "referrer", "program", "status", "source", "created_at"]
    list_filter = ["program", "status", "source"]
    search_fields = ["referred_email", "referred_company", "referrer__name"]
    autocomplete_fields = ["program", "referrer", "link"]
    # Stages change only through the transition services (actions below), which audit each move.
    readonly_fields = [
        "status",
        "rule_version",
        "source",
        "clicked_at",
        "signed_up_at",
        "qualified_at",
        "converted_at",
        "rejected_at",
        "churned_at",
        "created_at",
    ]
    actions = ["mark_qualified", "mark_converted", "mark_rejected"]
    money_fields = {"referred_annual_revenue_minor": "program.currency"}

    mark_qualified = _mark(
        services.referral_qualify,
        ReferralStatus.QUALIFIED,
        "Mark qualified",
        reason="Qualified in the admin",
        require_checklist=True,
    )
    mark_converted = _mark(
        services.referral_convert,
        ReferralStatus.CONVERTED,
        "Mark converted (paying customer)",
        reason="Converted in the admin",
    )
    mark_rejected = _mark(
        services.referral_reject, ReferralStatus.REJECTED, "Reject", reason="Rejected by a marketer in the admin"
    )


site.register(ReferralLink, ReferralLinkAdmin)
site.register(Click, ClickAdmin)
site.register(Referral, ReferralAdmin)


class AttributionInline(TenantScopedInline):
    model = Attribution
    fields = ["participant", "share", "amount", "model", "rule_version", "computed_at"]
    readonly_fields = fields
    can_delete = False
    show_change_link = True

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("participant", "rule_version")

    @admin.display(description="amount")
    def amount(self, obj):
        return _amount(obj)

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class ConversionEventAdmin(TenantScopedAdmin):
    list_display = ["occurred_at", "kind", "external_event_id", "amount", "status", "referral"]
    list_filter = ["kind", "status", "source"]
    list_select_related = ["referral"]
    search_fields = ["external_event_id", "customer_external_id", "email"]
    # Every column, read-only; the amount formatted in its currency. ``raw`` stays the payload as received.
    readonly_fields = [
        "amount" if f.name == "amount_minor" else f.name for f in ConversionEvent._meta.fields if f.name != "tenant"
    ]
    fields = readonly_fields
    inlines = [AttributionInline]
    actions = ["process_now", "rerun_attribution"]

    def has_add_permission(self, request):
        return False

    @admin.display(description="amount", ordering="amount_minor")
    def amount(self, obj):
        return _amount(obj)

    process_now = bulk_action(
        lambda event, actor: services.conversion_event_process(event_id=event.pk),
        name="process_now",
        description="Process received events now",
        noun="event",
        verb="processed (events already processed are left as they are)",
    )
    rerun_attribution = bulk_action(
        lambda event, actor: services.conversion_reattribute(event=event),
        name="rerun_attribution",
        description="Re-run attribution (idempotent)",
        noun="event",
        verb="attributed again",
        report=lambda modeladmin, request, outcome: modeladmin.message_user(
            request, f"Attribution recomputed: {sum(len(rows) for rows in outcome.results)} row(s)."
        ),
    )


site.register(ConversionEvent, ConversionEventAdmin)


class ReadOnlyTenantAdmin(TenantScopedAdmin):
    """Rows written by services only: marketers look, never add or edit."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class AttributionAdmin(ReadOnlyTenantAdmin):
    list_display = [
        "conversion_event",
        "participant",
        "share_percent",
        "amount",
        "model",
        "rule_version",
        "computed_at",
    ]
    list_filter = ["program", "model"]
    search_fields = ["conversion_event__external_event_id", "participant__name", "participant__email"]
    list_select_related = ["conversion_event", "participant", "rule_version__program"]
    fields = [
        "explanation",
        "conversion_event",
        "referral",
        "program",
        "participant",
        "rule_version",
        "model",
        "share",
        "amount",
        "touchpoints",
        "evidence_shown",
        "computed_at",
    ]
    readonly_fields = fields

    @admin.display(description="Participant", ordering="participant__name")
    def participant_name(self, obj):
        return obj.participant.name

    @admin.display(description="Share", ordering="share")
    def share_percent(self, obj):
        return f"{obj.share * 100:.4f} %"

    @admin.display(description="Amount", ordering="amount_minor")
    def amount(self, obj):
        return _amount(obj)

    @admin.display(description="Evidence")
    def evidence_shown(self, obj):
        return json_with_money(obj.evidence, obj.currency)

    @admin.display(description="Why this participant got credit")
    def explanation(self, obj):
        lines = attribution_explanation(obj)
        return format_html(
            '<div class="attribution-explanation">{}</div>',
            format_html_join("", '<p style="margin:.2rem 0;white-space:pre-wrap">{}</p>', ((line,) for line in lines)),
        )


class TouchpointAdmin(ReadOnlyTenantAdmin):
    list_display = ["occurred_at", "kind", "participant", "program", "label", "email", "visitor_id"]
    list_filter = ["kind", "program"]
    search_fields = ["email", "visitor_id", "customer_external_id", "label"]
    date_hierarchy = "occurred_at"


class IdentityLinkAdmin(ReadOnlyTenantAdmin):
    list_display = ["a_kind", "a_value", "b_kind", "b_value", "source", "created_at"]
    list_filter = ["a_kind", "b_kind", "source"]
    search_fields = ["a_value", "b_value"]


site.register(Attribution, AttributionAdmin)
site.register(Touchpoint, TouchpointAdmin)
site.register(IdentityLink, IdentityLinkAdmin)
# Fraud review queue, flags and per-program fraud settings.
from . import fraud_admin  # noqa: E402, F401
