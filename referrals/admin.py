from referral_platform.tenancy.admin_base import TenantScopedAdmin, site

from .models import Click, ConversionEvent, Referral, ReferralLink


class ReferralLinkAdmin(TenantScopedAdmin):
    list_display = ["code", "participant", "program", "channel", "is_active", "created_at"]
    list_filter = ["program", "channel", "is_active"]
    search_fields = ["code", "participant__name", "participant__email"]


class ClickAdmin(TenantScopedAdmin):
    list_display = ["occurred_at", "link", "visitor_id", "channel", "is_bot"]
    list_filter = ["program", "channel", "is_bot"]
    search_fields = ["visitor_id", "link__code"]
    date_hierarchy = "occurred_at"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class ReferralAdmin(TenantScopedAdmin):
    list_display = ["referred_email", "referred_company", "referrer", "program", "status", "created_at"]
    list_filter = ["program", "status"]
    search_fields = ["referred_email", "referred_company", "referrer__name"]


site.register(ReferralLink, ReferralLinkAdmin)
site.register(Click, ClickAdmin)
site.register(Referral, ReferralAdmin)


class ConversionEventAdmin(TenantScopedAdmin):
    list_display = ["occurred_at", "kind", "external_event_id", "amount_minor", "currency", "status", "referral"]
    list_filter = ["kind", "status", "source"]
    search_fields = ["external_event_id", "customer_external_id", "email"]
    readonly_fields = [f.name for f in ConversionEvent._meta.fields if f.name != "tenant"]

    def has_add_permission(self, request):
        return False


site.register(ConversionEvent, ConversionEventAdmin)
