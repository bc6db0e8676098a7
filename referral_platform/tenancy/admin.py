from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.core.exceptions import PermissionDenied

from .admin_base import EDIT_ROLES, TenantScopedAdmin, bulk_action, request_actor, site
from .models import ApiKey, AuditEvent, Invitation, Membership, Role, Tenant
from .services import api_key_create, api_key_revoke, membership_remove


class TenantAdmin(TenantScopedAdmin):
    list_display = ["name", "slug", "default_currency", "created_at"]
    search_fields = ["name", "slug"]
    readonly_fields = ["created_at"]

    def _scoped(self, request, queryset):
        actor = request_actor(request)
        if actor.is_platform_staff:
            return queryset
        return queryset.filter(pk=actor.tenant.pk if actor.tenant else None)

    def _owns(self, request, obj):
        actor = request_actor(request)
        return obj is None or actor.is_platform_staff or (actor.tenant is not None and obj.pk == actor.tenant.pk)

    def get_exclude(self, request, obj=None):
        return []

    def has_add_permission(self, request):
        return request_actor(request).is_platform_staff

    def has_delete_permission(self, request, obj=None):
        return request_actor(request).is_platform_staff

    def has_change_permission(self, request, obj=None):
        actor = request_actor(request)
        return actor.is_platform_staff or (actor.role == Role.OWNER and self._owns(request, obj))


class MembershipAdmin(TenantScopedAdmin):
    list_display = ["user", "role", "created_at"]
    list_filter = ["role"]
    search_fields = ["user__email"]
    readonly_fields = ["user", "created_at"]

    def has_add_permission(self, request):
        return False  # members join through invitations

    def has_change_permission(self, request, obj=None):
        actor = request_actor(request)
        return actor.is_platform_staff or (actor.role == Role.OWNER and self._owns(request, obj))

    has_delete_permission = has_change_permission

    def delete_model(self, request, obj):
        revoked = membership_remove(membership=obj, actor=request_actor(request))
        if revoked:
            messages.warning(
                request,
                f"{obj.user.email}'s API keys were revoked: "
                + ", ".join(f"{key.name} (rk_{key.prefix}_…)" for key in revoked),
            )

    def delete_queryset(self, request, queryset):
        for membership in queryset.select_related("user", "tenant"):
            self.delete_model(request, membership)


class InvitationAdmin(TenantScopedAdmin):
    list_display = ["email", "role", "created_at", "expires_at", "accepted_at"]
    readonly_fields = ["email", "role", "created_at", "expires_at", "accepted_at"]

    def has_add_permission(self, request):
        return False  # created from the workspace page, which sends the e-mail


revoke_keys = bulk_action(
    lambda api_key, actor: api_key_revoke(api_key=api_key, actor=actor),
    name="revoke_keys",
    description="Revoke selected API keys",
    noun="API key",
    verb="revoked",
)


class ApiKeyAdmin(TenantScopedAdmin):
    list_display = [
        "name",
        "prefix",
        "scope",
        "created_by",
        "created_at",
        "last_used_at",
        "revoked_at",
        "revoked_reason",
    ]
    list_filter = ["scope"]
    readonly_fields = ["prefix", "created_by", "created_at", "last_used_at", "revoked_at", "revoked_reason"]
    fields = ["name", "scope", "prefix", "created_by", "created_at", "last_used_at", "revoked_at", "revoked_reason"]
    actions = [revoke_keys]

    def get_readonly_fields(self, request, obj=None):
        # The scope is chosen when the key is created; a key with another scope is a new key.
        return [*self.readonly_fields, "scope"] if obj is not None else self.readonly_fields

    def save_model(self, request, obj, form, change):
        actor = request_actor(request)
        if change:
            obj.save(update_fields=["name"])
            return
        if actor.tenant is None or (not actor.is_platform_staff and actor.role not in EDIT_ROLES):
            raise PermissionDenied
        issued = api_key_create(tenant=actor.tenant, name=obj.name, actor=actor, scope=obj.scope)
        obj.pk = issued.api_key.pk
        obj.__dict__.update(issued.api_key.__dict__)
        messages.warning(
            request,
            f"Copy this API key now, it will not be shown again: {issued.raw_key}",
        )


class AuditEventAdmin(TenantScopedAdmin):
    list_display = ["created_at", "actor", "action", "object_type", "object_id", "from_state", "to_state"]
    list_filter = ["action", "object_type"]
    search_fields = ["object_id", "actor", "reason"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class PlatformUserAdmin(UserAdmin):
    """Users are platform-wide: only platform staff manage them here."""

    def has_module_permission(self, request):
        return request.user.is_superuser

    def has_view_permission(self, request, obj=None):
        return request.user.is_superuser

    has_change_permission = has_add_permission = has_delete_permission = has_view_permission


site.register(Tenant, TenantAdmin)
site.register(Membership, MembershipAdmin)
site.register(Invitation, InvitationAdmin)
site.register(ApiKey, ApiKeyAdmin)
site.register(AuditEvent, AuditEventAdmin)
site.register(get_user_model(), PlatformUserAdmin)
