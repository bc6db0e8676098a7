"""The marketer admin: one site, every ModelAdmin scoped to the request's tenant.

A marketer (owner / marketer role) sees and edits only their tenant's rows and can only pick their
tenant's objects in foreign-key fields; a viewer may look but not change; platform staff
(superusers) see every tenant.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial, reduce
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.filters import RelatedFieldListFilter
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html
from django.utils.http import urlencode

from referral_platform.money import MINOR_SUFFIX, format_amount, format_money_fields
from referral_platform.state import StateMachine, check_move

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
        from .views import safe_next

        target = safe_next(request, request.GET.get("next"), default="admin:index")
        return redirect(f"{reverse('account_login')}?{urlencode({'next': target})}")

    def get_app_list(self, request, app_label=None):
        """By task (Programs · People · Activity · Money · Trust · Settings, raw tables in "Data"), except on an
        app's own page (/admin/<app>/), which keeps Django's per-app list."""
        from .admin_sections import sectioned_app_list

        app_list = super().get_app_list(request, app_label)
        return app_list if app_label else sectioned_app_list(app_list, self._registry)

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


def money_shown_name(field_name: str) -> str:
    """The read-only display of an editable amount: ``auto_approve_limit_minor`` → ``auto_approve_limit_shown``."""
    return field_name.removesuffix(MINOR_SUFFIX) + "_shown"


def _money_display(field_name: str, currency_path: str):
    def shown(self, obj):
        if obj is None:
            return "—"
        currency = reduce(getattr, currency_path.split("."), obj)
        return format_amount(getattr(obj, field_name), currency)

    label = field_name.removesuffix(MINOR_SUFFIX).replace("_", " ")
    return admin.display(description=label)(shown)


class TenantScopedAdmin(admin.ModelAdmin):
    """Base for every admin of tenant data. Subclasses add fields, never scoping."""

    tenant_field = "tenant"
    # Amounts stored and edited in minor units: model field → path to their currency on the object
    # ("currency", "program.currency"). Where the field is read-only (a viewer, a frozen row) its
    # formatted value replaces the number; where it is editable the formatted value shows beside it.
    money_fields: dict[str, str] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for field_name, currency_path in cls.money_fields.items():
            if not hasattr(cls, money_shown_name(field_name)):
                setattr(cls, money_shown_name(field_name), _money_display(field_name, currency_path))

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

    # --- amounts in minor units, shown formatted ------------------------------------------
    def with_money_shown(self, request, obj, names):
        """``names`` (a field list) with each money field's formatted display swapped in or added."""
        if obj is None or not self.money_fields:
            return list(names)
        readonly = set(self.get_readonly_fields(request, obj))
        frozen = not self.has_change_permission(request, obj)
        displays = {money_shown_name(name) for name in self.money_fields}
        shown = []
        for name in (name for name in names if name not in displays):
            if name not in self.money_fields:
                shown.append(name)
            elif frozen or name in readonly:
                shown.append(money_shown_name(name))
            else:
                shown.extend([name, money_shown_name(name)])
        return shown

    def money_fieldsets_shown(self, request, obj, fieldsets):
        return [
            (title, {**options, "fields": self.with_money_shown(request, obj, options["fields"])})
            for title, options in fieldsets
        ]

    def get_fields(self, request, obj=None):
        return self.with_money_shown(request, obj, super().get_fields(request, obj))

    def get_fieldsets(self, request, obj=None):
        if self.fieldsets:
            return self.money_fieldsets_shown(request, obj, super().get_fieldsets(request, obj))
        return super().get_fieldsets(request, obj)  # from get_fields, already shown

    def get_readonly_fields(self, request, obj=None):
        readonly = list(super().get_readonly_fields(request, obj))
        return readonly + [
            money_shown_name(name) for name in self.money_fields if money_shown_name(name) not in readonly
        ]

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

    def has_view_permission(self, request, obj=None):
        # By role, like the parent admin (members hold no Django model permissions), so marketers and
        # viewers see the rows; adding, changing and deleting stay with each inline.
        actor = request_actor(request)
        return actor.is_platform_staff or (actor.kind == "member" and actor.role in ADMIN_ROLES)

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


def json_with_money(document, currency: str) -> str:
    """A stored JSON document for a read-only admin field, with its ``*_minor`` amounts formatted
    (``format_money_fields``): marketers read "12.34 USD", not 1234."""
    if not document:
        return "—"
    shown = json.dumps(format_money_fields(document, currency), indent=2, ensure_ascii=False)
    return format_html('<pre style="white-space:pre-wrap">{}</pre>', shown)


# --- bulk actions --------------------------------------------------------------------------------
# Every admin action declares the permission it needs (``@admin.action(permissions=[...])``;
# tests/test_admin_actions.py fails on one that does not), so Django offers and runs it only for roles
# that have it. An action that changes rows is a ``bulk_action``: one service call per selected row.

REFUSALS: tuple[type[Exception], ...] = (ValidationError, PermissionDenied)


@dataclass
class BulkOutcome:
    results: list[Any] = field(default_factory=list)  # what the service returned, per row done
    refused: list[str] = field(default_factory=list)  # "#<pk>: why", per row refused

    @property
    def done(self) -> int:
        return len(self.results)


def _why(error: Exception) -> str:
    if isinstance(error, ValidationError):
        return "; ".join(error.messages)
    return str(error) or type(error).__name__


def bulk_apply(
    modeladmin,
    request,
    objects: Iterable,
    service: Callable[[Any], Any],
    *,
    noun: str,
    verb: str,
    to: str | None = None,
    machine: StateMachine | None = None,
    refusals: tuple[type[Exception], ...] = REFUSALS,
    atomic: bool = True,
) -> BulkOutcome:
    """Call ``service(obj)`` for each selected row, each in its own transaction (a refused row changes
    nothing and does not stop the others), and tell the user "N <noun>(s) <verb>", with "M refused:
    #<pk>: why; …" when any was refused. With ``to``, a row whose state machine does not allow the move
    (``check_move``; ``machine`` for another machine than the model's ``status_machine``) is refused
    without calling the service. ``refusals`` are the errors that refuse a row; any other propagates.
    ``atomic=False`` for a service that keeps its own transactions short (one that calls Stripe between
    them must not be wrapped in one)."""
    outcome = BulkOutcome()
    for obj in objects:
        try:
            if to is not None:
                check_move(obj, to, machine=machine)
            with transaction.atomic() if atomic else nullcontext():
                outcome.results.append(service(obj))
        except refusals as error:
            outcome.refused.append(f"#{obj.pk}: {_why(error)}")
    summary = f"{outcome.done} {noun}(s) {verb}"
    if not outcome.refused:
        modeladmin.message_user(request, f"{summary}.", messages.SUCCESS)
    else:
        level = messages.WARNING if outcome.done else messages.ERROR
        refused = "; ".join(outcome.refused)
        modeladmin.message_user(request, f"{summary}, {len(outcome.refused)} refused: {refused}", level)
    return outcome


def bulk_action(
    service: Callable[..., Any],
    *,
    name: str,
    description: str,
    noun: str,
    verb: str,
    permissions: Sequence[str] = ("change",),
    rows: Callable[[Any], Iterable] | None = None,
    report: Callable[[Any, Any, BulkOutcome], None] | None = None,
    form_class: type[forms.Form] | None = None,
    title: str = "",
    template: str = "admin/bulk_form.html",
    context: Mapping[str, Any] | None = None,
    **bulk: Any,
):
    """The admin action ``name`` (needing ``permissions``): ``service(obj, actor=actor)`` for each selected
    row through ``bulk_apply`` (``bulk``: its ``to``, ``machine``, ``refusals``, ``atomic``). ``rows``
    narrows the selection; ``report(modeladmin, request, outcome)`` adds to what ``bulk_apply`` tells the
    user. With ``form_class`` the action first asks for input on an intermediate page (``template``
    headed ``title``, e.g. for a reason; nothing is written before it is posted valid), then calls
    ``service(obj, actor=actor, data=cleaned_data)``. Use it as an entry of ``ModelAdmin.actions`` or as a
    ModelAdmin attribute named ``name``."""

    def action(modeladmin, request, queryset):
        actor = request_actor(request)
        selected = rows(queryset) if rows is not None else queryset
        if form_class is None:
            outcome = bulk_apply(
                modeladmin, request, selected, partial(service, actor=actor), noun=noun, verb=verb, **bulk
            )
            if report is not None:
                report(modeladmin, request, outcome)
            return None
        applying = "apply" in request.POST
        form = form_class(request.POST if applying else None)
        if applying and form.is_valid():
            call = partial(service, actor=actor, data=form.cleaned_data)
            bulk_apply(modeladmin, request, selected, call, noun=noun, verb=verb, **bulk)
            return None
        page = {
            "title": title or description,
            "opts": modeladmin.model._meta,
            "form": form,
            "action": name,
            "objects": list(selected),
            "select_across": request.POST.get("select_across", "0"),
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(
            request, template, {**modeladmin.admin_site.each_context(request), **page, **(context or {})}
        )

    action.__name__ = action.__qualname__ = name
    return admin.action(description=description, permissions=list(permissions))(action)


def move_action(
    service: Callable[..., Any],
    *,
    name: str,
    description: str,
    noun: str,
    verb: str,
    to: str,
    machine: StateMachine | None = None,
    **service_kwargs: Any,
):
    """A ``bulk_action`` moving each selected row's status ``to`` a state through its service, called as
    ``service(<noun>=row, actor=actor, **service_kwargs)`` for each row its state machine lets move."""
    return bulk_action(
        lambda row, actor: service(**{noun: row}, actor=actor, **service_kwargs),
        name=name,
        description=description,
        noun=noun,
        verb=verb,
        to=to,
        machine=machine,
    )
