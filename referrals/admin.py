from referral_platform.tenancy.admin_base import TenantScopedAdmin, site

from .models import Click, Referral, ReferralLink


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
