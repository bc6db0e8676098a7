from referral_platform.tenancy.admin_base import TenantScopedAdmin, site

from .models import Participant, Program


class ProgramAdmin(TenantScopedAdmin):
    list_display = ["name", "kind", "status", "access", "attribution_model", "currency", "created_at"]
    list_filter = ["kind", "status", "access"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}


class ParticipantAdmin(TenantScopedAdmin):
    list_display = ["name", "email", "company", "program", "status", "created_at"]
    list_filter = ["program", "status"]
    search_fields = ["name", "email", "company", "external_id"]


site.register(Program, ProgramAdmin)
site.register(Participant, ParticipantAdmin)
