"""The marketer admin: one site, every ModelAdmin scoped to the request's tenant.

A marketer (owner / marketer role) sees and edits only their tenant's rows and can only pick their
tenant's objects in foreign-key fields; a viewer may look but not change; platform staff
(superusers) see every tenant.
"""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.filters import RelatedFieldListFilter
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.http import urlencode

from .actors import Actor
from .models import Role, TenantOwnedModel

ADMIN_ROLES = frozenset({Role.OWNER, Role.MARKETER, Role.VIEWER})
EDIT_ROLES = frozenset({Role.OWNER, Role.MARKETER})


def request_actor(request) -> Actor:
    return request.actor


def is_tenant_owned(model) -> bool:
    return isinstance(model, type) and issubclass(model, TenantOwnedModel)


class TenantAdminSite(admin.AdminSite):
    site_header = "Referral Platform"
    site_title = "Referral Platform admin"
    index_title = "Programs, referrals and rewards"

    def has_permission(self, request) -> bool:
        actor = request_actor(request)
        if not request.user.is_active:
            return False
        return actor.is_platform_staff or (actor.kind == "member" and actor.role in ADMIN_ROLES)

    def login(self, request, extra_context=None):
        if request.user.is_authenticated:
            # Logged in but no admin role here: say so instead of bouncing between log-in pages.
            return TemplateResponse(request, "admin_no_access.html", status=403)
        # One log-in for the whole product (allauth: throttled, e-mail based).
        target = request.GET.get("next") or reverse("admin:index")
        return redirect(f"{reverse('account_login')}?{urlencode({'next': target})}")

    def each_context(self, request):
        context = super().each_context(request)
        actor = request_actor(request)
        context["actor"] = actor
        if actor.tenant is not None:
            suffix = " (platform staff: all workspaces)" if actor.is_platform_staff else ""
            context["site_header"] = f"{actor.tenant.name} · Referral Platform{suffix}"
        return context


site = TenantAdminSite(name="admin")


class TenantRelatedFieldListFilter(RelatedFieldListFilter):
    """A list filter on a foreign key that only offers the request tenant's objects."""

    def field_choices(self, field, request, model_admin):
        actor = request_actor(request)
        ordering = self.field_admin_ordering(field, request, model_admin)
        if is_tenant_owned(field.related_model) and not actor.is_platform_staff:
            return field.get_choices(
                include_blank=False, ordering=ordering, limit_choices_to={"tenant_id": actor.tenant.pk}
            )
        return field.get_choices(include_blank=False, ordering=ordering)


class TenantScopedAdmin(admin.ModelAdmin):
    """Base for every admin of tenant data. Subclasses add fields, never scoping."""

    tenant_field = "tenant"

    def _actor(self, request) -> Actor:
        return request_actor(request)

    def _scoped(self, request, queryset):
        actor = self._actor(request)
        if actor.is_platform_staff:
            return queryset
        if actor.tenant is None:
            return queryset.none()
        return queryset.filter(**{f"{self.tenant_field}_id": actor.tenant.pk})

    def get_queryset(self, request):
        return self._scoped(request, super().get_queryset(request))

    # --- permissions by role -------------------------------------------------------------
    def _role_allows(self, request, roles) -> bool:
        actor = self._actor(request)
        return actor.is_platform_staff or (actor.kind == "member" and actor.role in roles)

    def has_module_permission(self, request) -> bool:
        return self._role_allows(request, ADMIN_ROLES)

    def has_view_permission(self, request, obj=None) -> bool:
        return self._role_allows(request, ADMIN_ROLES) and self._owns(request, obj)

    def has_add_permission(self, request) -> bool:
        return self._role_allows(request, EDIT_ROLES)

    def has_change_permission(self, request, obj=None) -> bool:
        return self._role_allows(request, EDIT_ROLES) and self._owns(request, obj)

    def has_delete_permission(self, request, obj=None) -> bool:
        return self._role_allows(request, EDIT_ROLES) and self._owns(request, obj)

    def _owns(self, request, obj) -> bool:
        if obj is None or self._actor(request).is_platform_staff:
            return True
        tenant = self._actor(request).tenant
        return tenant is not None and getattr(obj, f"{self.tenant_field}_id", None) == tenant.pk

    # --- forms ---------------------------------------------------------------------------
    def get_exclude(self, request, obj=None):
        exclude = list(super().get_exclude(request, obj) or [])
        if not self._actor(request).is_platform_staff and self.tenant_field not in exclude:
            exclude.append(self.tenant_field)
        return exclude

    def get_list_filter(self, request):
        filters = []
        for item in super().get_list_filter(request):
            if isinstance(item, str) and "__" not in item:
                field = self.model._meta.get_field(item)
                if field.is_relation and is_tenant_owned(field.related_model):
                    item = (item, TenantRelatedFieldListFilter)
            filters.append(item)
        return filters

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        field = super().formfield_for_foreignkey(db_field, request, **kwargs)
        return self._scope_choice_field(db_field, request, field)

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        field = super().formfield_for_manytomany(db_field, request, **kwargs)
        return self._scope_choice_field(db_field, request, field)

    def _scope_choice_field(self, db_field, request, formfield):
        if formfield is None or not is_tenant_owned(db_field.related_model):
            return formfield
        actor = self._actor(request)
        if actor.is_platform_staff:
            return formfield
        tenant_id = actor.tenant.pk if actor.tenant else None
        formfield.queryset = formfield.queryset.filter(tenant_id=tenant_id)
        return formfield

    def save_model(self, request, obj, form, change):
        if not change and not getattr(obj, f"{self.tenant_field}_id", None):
            setattr(obj, self.tenant_field, self._actor(request).tenant)
        super().save_model(request, obj, form, change)


class TenantScopedInline(admin.TabularInline):
    """Inline of tenant data: foreign-key choices limited to the tenant; rows inherit the parent's tenant."""

    extra = 0

    def get_exclude(self, request, obj=None):
        exclude = list(super().get_exclude(request, obj) or [])
        if "tenant" not in exclude:
            exclude.append("tenant")
        return exclude

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        field = super().formfield_for_foreignkey(db_field, request, **kwargs)
        actor = request_actor(request)
        if field is not None and is_tenant_owned(db_field.related_model) and not actor.is_platform_staff:
            field.queryset = field.queryset.filter(tenant_id=actor.tenant.pk if actor.tenant else None)
        return field

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        actor = request_actor(request)
        if actor.is_platform_staff:
            return queryset
        return queryset.filter(tenant_id=actor.tenant.pk if actor.tenant else None)


def _save_formset_with_tenant(self, request, form, formset, change):
    instances = formset.save(commit=False)
    for obj in instances:
        if is_tenant_owned(type(obj)) and not obj.tenant_id:
            obj.tenant_id = form.instance.tenant_id
        obj.save()
    for obj in formset.deleted_objects:
        obj.delete()
    formset.save_m2m()


TenantScopedAdmin.save_formset = _save_formset_with_tenant
