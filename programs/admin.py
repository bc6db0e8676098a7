"""Marketer admin for programs, their rules and participants. Every write goes through programs.services."""

from __future__ import annotations

import base64
import json

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpResponseNotAllowed, HttpResponseRedirect, JsonResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from referral_platform.hooks import hooks
from referral_platform.state import allowed_moves
from referral_platform.tenancy.admin_base import (
    ADMIN_ROLES,
    TenantScopedAdmin,
    TenantScopedInline,
    bulk_action,
    move_action,
    request_actor,
    site,
)

from . import rules as rules_module
from . import selectors, services
from .builder import TEMPLATES, TYPE_FIELDS, ProgramBuilder, worked_example
from .dashboard_links import dashboard_url
from .models import Participant, ParticipantImport, ParticipantStatus, Program, ProgramStatus, ProgramVersion
from .terms import program_offer_sentence, render_terms

# The program's status moves (service, target state, button label, past participle): bulk actions on
# the list, buttons on the program page.
PROGRAM_MOVES = {
    "activate": (services.program_activate, ProgramStatus.ACTIVE, "Activate", "activated"),
    "pause": (services.program_pause, ProgramStatus.PAUSED, "Pause", "paused"),
    "archive": (services.program_archive, ProgramStatus.ARCHIVED, "Archive", "archived"),
}
TRANSITIONS = {
    name: move_action(
        service,
        name=f"{name}_programs",
        description=f"{label} selected programs",
        noun="program",
        verb=verb,
        to=to_state,
    )
    for name, (service, to_state, label, verb) in PROGRAM_MOVES.items()
}


def _add_service_errors(form: forms.BaseForm, exc: ValidationError, *, default_field: str | None = None) -> None:
    for field_name, messages_ in exc.message_dict.items():
        target = field_name if field_name in form.fields else default_field
        if target is not None and target not in form.fields:
            target = None
        prefix = "" if target == field_name or field_name == "__all__" else f"{field_name}: "
        form.add_error(target, [f"{prefix}{message}" for message in messages_])


def _tenant_of(request, obj=None):
    return obj.tenant if obj is not None else request_actor(request).tenant


def terms_html(terms) -> str:
    if not terms.sections:
        return format_html("<p>{}</p>", terms.notice)
    parts = []
    if terms.version is not None:
        parts.append(
            format_html(
                '<p class="help">Version {} · in effect since {}</p>',
                terms.version,
                terms.effective_at.strftime("%Y-%m-%d"),
            )
        )
    if terms.notice:
        parts.append(format_html("<p><strong>{}</strong></p>", terms.notice))
    for section in terms.sections:
        items = format_html_join("", "<li>{}</li>", ((item,) for item in section.items))
        parts.append(format_html("<h4>{}</h4><ul>{}</ul>", section.title, items))
    return mark_safe("".join(str(part) for part in parts))  # noqa: S308 - parts are built with format_html


# --- programs ----------------------------------------------------------------------------------
class ProgramAdminForm(forms.ModelForm):
    rules_json = forms.CharField(
        label="Rules (JSON)",
        required=False,
        widget=forms.Textarea(attrs={"rows": 22, "cols": 100, "spellcheck": "false", "class": "vLargeTextField"}),
        help_text=(
            "Incentives for the referrer and the referred company, caps, eligibility, qualification and "
            "cancellation policy (docs/programs.md). Amounts in minor units of the program currency "
            "(5000 = 50.00 USD); percentages in basis points (1000 = 10 %). Saving changed rules creates a "
            "new version; existing referrals keep theirs."
        ),
    )
    rules_note = forms.CharField(label="Why the rules change", max_length=300, required=False)

    tenant = None  # bound by ProgramAdmin.get_form

    class Meta:
        model = Program
        fields = list(services.PROGRAM_EDITABLE_FIELDS)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk and not self.is_bound:
            version = selectors.program_latest_version(self.instance)
            if version is not None:
                self.initial["rules_json"] = json.dumps(version.rules, indent=2)

    def clean(self):
        cleaned = super().clean()
        adding = self.instance.pk is None
        data = {
            name: cleaned[name]
            for name in services.PROGRAM_EDITABLE_FIELDS
            if name in cleaned and (adding or name in self.changed_data)
        }
        try:
            services.program_validate(tenant=self.tenant, data=data, program=None if adding else self.instance)
        except ValidationError as exc:
            _add_service_errors(self, exc)
        raw = (cleaned.get("rules_json") or "").strip()
        cleaned["rules_document"] = None
        if self.instance.pk and self.instance.status == ProgramStatus.ARCHIVED:
            return cleaned  # frozen: the rules box is not shown, and whatever is posted is ignored
        if raw:
            try:
                document = json.loads(raw)
            except json.JSONDecodeError as exc:
                self.add_error("rules_json", f"Not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno}).")
                return cleaned
            currency = cleaned.get("currency") or self.instance.currency
            try:
                cleaned["rules_document"] = services.rules_validate(program=Program(currency=currency), rules=document)
            except ValidationError as exc:
                _add_service_errors(self, exc, default_field="rules_json")
        return cleaned


class ProgramVersionInline(TenantScopedInline):
    model = ProgramVersion
    fields = ["number", "created_at", "created_by", "note"]
    readonly_fields = fields
    show_change_link = True
    can_delete = False
    ordering = ["-number"]
    verbose_name = "rules version"
    verbose_name_plural = "Rules versions (immutable; referrals keep the version they were judged under)"

    def has_view_permission(self, request, obj=None):
        actor = request_actor(request)
        return actor.is_platform_staff or (actor.kind == "member" and actor.role in ADMIN_ROLES)

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ProgramAdmin(TenantScopedAdmin):
    form = ProgramAdminForm
    list_display = [
        "name",
        "kind",
        "status",
        "access",
        "attribution_model",
        "currency",
        "current_version",
        "created_at",
    ]
    list_filter = ["kind", "status", "access"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    readonly_fields = ["status", "current_version_panel", "terms_panel", "public_terms_link"]
    inlines = [ProgramVersionInline]
    actions = list(TRANSITIONS.values())
    change_form_template = "admin/programs/program/change_form.html"
    change_list_template = "admin/programs/program/change_list.html"
    money_fields = {"auto_approve_limit_minor": "currency"}

    def get_fieldsets(self, request, obj=None):
        fieldsets = [
            (None, {"fields": ["name", "slug", "description", "kind", "access", "status"]}),
            (
                "Links and attribution",
                {"fields": ["landing_url", "cookie_window_days", "attribution_model", "time_decay_half_life_days"]},
            ),
            ("Money and approval", {"fields": ["currency", "hold_days", "auto_approve_limit_minor"]}),
            ("Rules", {"fields": ["current_version_panel", "rules_json", "rules_note"]}),
        ]
        if obj is not None and obj.status == ProgramStatus.ARCHIVED:
            # An archived program is frozen: everything is shown, nothing is editable.
            fieldsets[-1] = ("Rules", {"fields": ["current_version_panel", "current_rules"]})
        if obj is not None:
            fieldsets.append(("Terms participants see", {"fields": ["public_terms_link", "terms_panel"]}))
        return self.money_fieldsets_shown(request, obj, fieldsets)

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        return type(form.__name__, (form,), {"tenant": _tenant_of(request, obj)})

    def get_changeform_initial_data(self, request):
        initial = super().get_changeform_initial_data(request)
        tenant = request_actor(request).tenant
        currency = tenant.default_currency if tenant else "USD"
        initial.setdefault("currency", currency)
        initial.setdefault("rules_json", json.dumps(rules_module.example_rules(currency), indent=2))
        return initial

    def get_prepopulated_fields(self, request, obj=None):
        if obj is not None and obj.status == ProgramStatus.ARCHIVED:
            return {}
        return super().get_prepopulated_fields(request, obj)

    def get_readonly_fields(self, request, obj=None):
        readonly = list(super().get_readonly_fields(request, obj))
        if obj is not None and obj.status == ProgramStatus.ARCHIVED:
            readonly += [*services.PROGRAM_EDITABLE_FIELDS, "current_rules"]
        return readonly

    @admin.display(description="Rules (JSON)")
    def current_rules(self, obj):
        version = selectors.program_latest_version(obj)
        return format_html("<pre>{}</pre>", json.dumps(version.rules, indent=2)) if version else "—"

    @admin.display(description="Rules version")
    def current_version(self, obj):
        version = selectors.program_latest_version(obj)
        return f"v{version.number}" if version else "—"

    @admin.display(description="Current version")
    def current_version_panel(self, obj):
        version = selectors.program_latest_version(obj) if obj and obj.pk else None
        if version is None:
            return "No rules yet."
        return f"v{version.number}, saved {version.created_at:%Y-%m-%d %H:%M} by {version.created_by or 'unknown'}"

    @admin.display(description="Plain-language terms")
    def terms_panel(self, obj):
        return terms_html(render_terms(obj, selectors.program_latest_version(obj)))

    @admin.display(description="Public terms page")
    def public_terms_link(self, obj):
        if obj.status not in {ProgramStatus.ACTIVE, ProgramStatus.PAUSED}:
            return "Published once the program is active."
        url = reverse("program_terms_page", kwargs={"tenant_slug": obj.tenant.slug, "program_slug": obj.slug})
        return format_html('<a href="{}" target="_blank" rel="noopener">{}</a>', url, url)

    # --- writes through services ---------------------------------------------------------------
    def save_model(self, request, obj, form, change):
        actor = request_actor(request)
        values = {
            name: form.cleaned_data[name] for name in services.PROGRAM_EDITABLE_FIELDS if name in form.cleaned_data
        }
        document = form.cleaned_data.get("rules_document")
        if not change:
            if actor.tenant is None:
                raise PermissionDenied
            program = services.program_create(tenant=actor.tenant, actor=actor, rules=document, **values)
            obj.pk = program.pk
            obj.__dict__.update(program.__dict__)
            return
        configured = services.program_configure(
            program=obj,
            actor=actor,
            changes={name: value for name, value in values.items() if name in form.changed_data},
            rules=document,
            note=form.cleaned_data.get("rules_note", ""),
        )
        if configured.rules_change is not None and configured.rules_change.created:
            messages.success(request, f"The rules were saved as version {configured.rules_change.version.number}.")
        obj.__dict__.update(Program.objects.get(pk=obj.pk).__dict__)

    # --- extra pages -----------------------------------------------------------------------------
    def get_urls(self):
        info = self.model._meta.app_label, self.model._meta.model_name
        extra = [
            path("builder/", self.admin_site.admin_view(self.builder_view), name="{}_{}_builder".format(*info)),
            path(
                "builder/preview/",
                self.admin_site.admin_view(self.builder_preview_view),
                name="{}_{}_builder_preview".format(*info),
            ),
            path(
                "<path:object_id>/builder/",
                self.admin_site.admin_view(self.builder_view),
                name="{}_{}_builder_edit".format(*info),
            ),
            path(
                "<path:object_id>/builder/preview/",
                self.admin_site.admin_view(self.builder_preview_view),
                name="{}_{}_builder_edit_preview".format(*info),
            ),
            path(
                "<path:object_id>/rules/preview/",
                self.admin_site.admin_view(self.rules_preview_view),
                name="{}_{}_rules_preview".format(*info),
            ),
            path(
                "<path:object_id>/status/<str:transition>/",
                self.admin_site.admin_view(self.transition_view),
                name="{}_{}_transition".format(*info),
            ),
        ]
        return extra + super().get_urls()

    def _program_or_404(self, request, object_id) -> Program:
        program = self.get_object(request, unquote(object_id))
        if program is None or not self.has_view_permission(request, program):
            raise Http404("No such program")
        return program

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = extra_context or {}
        program = self.get_object(request, unquote(object_id))
        if program is not None:
            extra_context["transitions"] = [
                (name, label)
                for name, (_, to_state, label, _) in PROGRAM_MOVES.items()
                if to_state in allowed_moves(program)
            ]
        return super().change_view(request, object_id, form_url, extra_context)

    def transition_view(self, request, object_id, transition):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        program = self._program_or_404(request, object_id)
        if transition not in TRANSITIONS or not self.has_change_permission(request, program):
            raise PermissionDenied
        TRANSITIONS[transition](self, request, [program])
        return HttpResponseRedirect(reverse("admin:programs_program_change", args=[program.pk]))

    # --- the program builder (programs/builder.py): no JSON --------------------------------------
    def _builder_subject(self, request, object_id):
        """(program or None, tenant, may save) for the builder; 404 for another tenant's program."""
        actor = request_actor(request)
        if object_id is None:
            if actor.tenant is None or not self.has_view_permission(request):
                raise PermissionDenied
            return None, actor.tenant, self.has_add_permission(request)
        program = self._program_or_404(request, object_id)
        can_save = self.has_change_permission(request, program) and program.status != ProgramStatus.ARCHIVED
        return program, program.tenant, can_save

    def builder_view(self, request, object_id=None):
        """Create or edit a program with a guided form; saves the same versioned rules as the JSON API."""
        program, tenant, can_save = self._builder_subject(request, object_id)
        current = selectors.program_latest_version(program) if program is not None else None
        preview = None
        if request.method == "POST":
            if not can_save:
                raise PermissionDenied
            builder = ProgramBuilder.build(tenant=tenant, program=program, data=request.POST)
            if builder.is_valid():
                live = program is not None and program.status in {ProgramStatus.ACTIVE, ProgramStatus.PAUSED}
                if live and "confirm" not in request.POST:
                    try:
                        preview = hooks.rules_change_preview(
                            tenant=tenant, program=program, proposed_rules=builder.document
                        )
                    except ValidationError as exc:
                        builder.add_errors(exc)
                else:
                    try:
                        saved = self._builder_save(request, program, builder)
                    except ValidationError as exc:
                        builder.add_errors(exc)
                    else:
                        return HttpResponseRedirect(reverse("admin:programs_program_change", args=[saved.pk]))
        else:
            template = request.GET.get("template") if program is None else None
            builder = ProgramBuilder.build(
                tenant=tenant,
                program=program,
                document=current.rules if current is not None else None,
                template=template,
                read_only=not can_save,
            )
        preview_url = (
            reverse("admin:programs_program_builder_edit_preview", args=[program.pk])
            if program is not None
            else reverse("admin:programs_program_builder_preview")
        )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "original": program,
            "title": f"Program builder: {program}" if program is not None else "New program",
            "builder": builder,
            "form": builder.form,
            "referrer_rows": builder.sides["referrer"],
            "referred_rows": builder.sides["referred"],
            "side_errors": builder.side_errors,
            "templates": TEMPLATES.values(),
            "type_fields": {kind: [*req, *opt] for kind, (req, opt) in TYPE_FIELDS.items()},
            "can_save": can_save,
            "current": current,
            "preview": preview,
            "preview_url": preview_url,
            "live": self._builder_live(builder) if request.method == "GET" or not builder.has_errors() else None,
        }
        return TemplateResponse(request, "admin/programs/program/builder.html", context)

    def _builder_live(self, builder) -> dict | None:
        """Terms, offer and worked example of the builder's current input (None when it cannot be read yet)."""
        if builder.form.is_bound:
            if builder.has_errors() or builder.document is None:
                return None
        else:
            probe = ProgramBuilder.build(tenant=builder.tenant, program=builder.program, data=_unbound_data(builder))
            if not probe.is_valid():
                return None
            builder = probe
        try:
            program, version = builder.preview_version()
            terms = render_terms(program, version)
            return {
                "offer": program_offer_sentence(program, version.rules),
                "sections": [{"title": s.title, "items": list(s.items)} for s in terms.sections],
                "example": worked_example(version.rules),
            }
        except rules_module.RulesError:
            return None

    def builder_preview_view(self, request, object_id=None):
        """The live panel beside the builder: terms, offer, worked example and errors of the posted form (JSON)."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        program, tenant, _ = self._builder_subject(request, object_id)
        builder = ProgramBuilder.build(tenant=tenant, program=program, data=request.POST)
        valid = builder.is_valid()
        live = self._builder_live(builder) if valid else None
        return JsonResponse({"ok": valid, "errors": builder.errors_by_name(), **(live or {})})

    def _builder_save(self, request, program, builder) -> Program:
        actor = request_actor(request)
        note = builder.form.cleaned_data.get("note") or ""
        if program is None:
            created = services.program_create(
                tenant=builder.tenant, actor=actor, rules=builder.document, **builder.settings
            )
            messages.success(request, f"“{created.name}” was created as a draft with its rules as version 1.")
            return created
        configured = services.program_configure(
            program=program,
            actor=actor,
            changes=builder.changed_settings(),
            rules=builder.document,
            note=note or "Changed in the program builder",
        )
        change = configured.rules_change
        if change is not None and change.created:
            messages.success(request, f"The rules were saved as version {change.version.number}.")
        else:
            messages.info(request, "Saved; the rules are unchanged, so no new version was created.")
        return configured.program

    def rules_preview_view(self, request, object_id):
        """Compare the current rules with proposed ones on the last 90 days of payments; optionally save them."""
        program = self._program_or_404(request, object_id)
        current = selectors.program_latest_version(program)
        errors: list[str] = []
        preview = None
        if request.method == "POST":
            raw = request.POST.get("rules_json", "")
            note = request.POST.get("rules_note", "")
            try:
                document = json.loads(raw)
            except json.JSONDecodeError as exc:
                errors.append(f"Not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno}).")
                document = None
            if document is not None and "apply" in request.POST:
                if not self.has_change_permission(request, program):
                    raise PermissionDenied
                try:
                    result = services.program_rules_change(
                        program=program, actor=request_actor(request), rules=document, note=note
                    )
                except ValidationError as exc:
                    errors += [f"{field}: {' '.join(msgs)}" for field, msgs in exc.message_dict.items()]
                else:
                    if result.created:
                        messages.success(request, f"The rules were saved as version {result.version.number}.")
                    else:
                        messages.info(request, "The rules are unchanged; no new version was created.")
                    return HttpResponseRedirect(reverse("admin:programs_program_change", args=[program.pk]))
            elif document is not None:
                try:
                    preview = hooks.rules_change_preview(
                        tenant=program.tenant, program=program, proposed_rules=document
                    )
                except ValidationError as exc:
                    errors += [f"{field}: {' '.join(msgs)}" for field, msgs in exc.message_dict.items()]
        else:
            raw = json.dumps(current.rules if current else rules_module.example_rules(program.currency), indent=2)
            note = ""
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "original": program,
            "title": f"Preview a rule change: {program}",
            "current": current,
            "rules_json": raw,
            "rules_note": note,
            "errors": errors,
            "preview": preview,
            "can_change": self.has_change_permission(request, program),
        }
        return TemplateResponse(request, "admin/programs/program/rules_preview.html", context)


class ProgramVersionAdmin(TenantScopedAdmin):
    """Versions are read-only: rules change by saving new ones on the program."""

    list_display = ["program", "number", "created_at", "created_by", "note"]
    list_filter = ["program"]
    fields = ["program", "number", "created_at", "created_by", "note", "rules_pretty", "terms_panel"]
    readonly_fields = fields

    @admin.display(description="Rules")
    def rules_pretty(self, obj):
        return format_html("<pre style='white-space:pre-wrap'>{}</pre>", json.dumps(obj.rules, indent=2))

    @admin.display(description="Terms under this version")
    def terms_panel(self, obj):
        return terms_html(render_terms(obj.program, obj))

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


def _unbound_data(builder) -> dict:
    """The POST an unchanged builder page would send (its initial values), to compute the live panel."""
    data: dict = {}
    forms_ = [builder.form] + [row for formset in builder.sides.values() for row in formset.forms]
    for form in forms_:
        for name, field in form.fields.items():
            value = form.get_initial_for_field(field, name)
            if value is None or value is False:
                continue
            data[form.add_prefix(name)] = "on" if value is True else value
    for formset in builder.sides.values():
        management = formset.management_form
        for name in management.fields:
            data[management.add_prefix(name)] = management.initial.get(name, 0) if management.initial else 0
    return data


# --- participants ------------------------------------------------------------------------------
class ParticipantAdminForm(forms.ModelForm):
    class Meta:
        model = Participant
        fields = ["program", "external_id", "name", "email", "company", "tier"]

    def clean(self):
        cleaned = super().clean()
        instance = self.instance
        try:
            services.participant_validate(
                external_id=cleaned.get("external_id", instance.external_id),
                name=cleaned.get("name"),
                email=cleaned.get("email"),
                company=cleaned.get("company"),
            )
        except ValidationError as exc:
            _add_service_errors(self, exc)
        try:
            services.participant_tier_normalize(cleaned.get("tier"))
        except ValidationError as exc:
            _add_service_errors(self, exc)
        program = cleaned.get("program") or (instance.program if instance.pk else None)
        if program is not None and program.status == ProgramStatus.ARCHIVED:
            self.add_error("program" if "program" in self.fields else None, "This program is archived.")
        return cleaned

    def validate_unique(self):
        # Upserting by external id is the point; the service handles an existing row.
        pass


@admin.action(description="Show dashboard links of selected participants", permissions=["view"])
def participants_dashboard_links(modeladmin, request, queryset):
    """The signed dashboard link of each selected participant, to send them (programs/dashboard_links.py)."""
    for participant in queryset[:50]:
        messages.info(
            request, format_html("{}: <a href='{}'>{}</a>", participant.name, *[dashboard_url(participant)] * 2)
        )


def _show_new_dashboard_links(modeladmin, request, outcome):
    for participant in outcome.results:
        messages.success(
            request,
            format_html("{}: new link <a href='{}'>{}</a>", participant.name, *[dashboard_url(participant)] * 2),
        )


participants_dashboard_links_reissue = bulk_action(
    lambda participant, actor: services.participant_dashboard_link_reissue(
        participant=participant, actor=actor, reason="issued from the admin"
    ),
    name="participants_dashboard_links_reissue",
    description="Issue new dashboard links (the old ones stop working)",
    noun="dashboard link",
    verb="issued anew",
    rows=lambda queryset: queryset[:50],
    report=_show_new_dashboard_links,
)


participants_invite_send = bulk_action(
    lambda participant, actor: services.participant_invite_send(participant=participant, actor=actor),
    name="participants_invite_send",
    description="Send the invitation e-mail (links and dashboard; only to those who have not had it)",
    noun="participant",
    verb="invited",
)


class ParticipantAdmin(TenantScopedAdmin):
    form = ParticipantAdminForm
    list_display = ["name", "email", "company", "program", "tier", "status", "source", "created_at"]
    list_filter = ["program", "status", "source", "tier"]
    search_fields = ["name", "email", "company", "external_id"]
    autocomplete_fields = ["program"]
    actions = [
        *(
            move_action(
                service,
                name=f"participants_{label.lower()}",
                description=f"{label} selected participants",
                noun="participant",
                verb=verb,
                to=to,
            )
            for service, label, verb, to in [
                (services.participant_approve, "Approve", "approved", ParticipantStatus.ACTIVE),
                (services.participant_reject, "Reject", "rejected", ParticipantStatus.REJECTED),
                (services.participant_remove, "Remove", "removed", ParticipantStatus.REMOVED),
                (services.participant_reinstate, "Reinstate", "reinstated", ParticipantStatus.ACTIVE),
            ]
        ),
        participants_dashboard_links,
        participants_dashboard_links_reissue,
        participants_invite_send,
    ]
    change_list_template = "admin/programs/participant/change_list.html"

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["program", "external_id", "name", "email", "company", "tier"]
        return [
            "program",
            "external_id",
            "name",
            "email",
            "company",
            "tier",
            "status",
            "source",
            "application_note",
            "links_panel",
            "dashboard_panel",
            "activity_panel",
        ]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        return [
            "program",
            "external_id",
            "status",
            "source",
            "application_note",
            "links_panel",
            "dashboard_panel",
            "activity_panel",
        ]

    @admin.display(description="Everything about them")
    def activity_panel(self, obj):
        """Links are above; clicks, referrals, rewards, payouts and messages come from the layers that own them."""
        parts = []
        for section in hooks.participant_activity(participant=obj):
            head = format_html(
                '<h4 style="margin:.6em 0 .2em">{} ({}) · <a href="{}">all</a></h4>',
                section["title"],
                section["count"],
                section["more_url"],
            )
            table = ""
            if section["rows"]:
                header = format_html_join("", "<th>{}</th>", ((h,) for h in section["headers"]))
                body = format_html_join(
                    "",
                    "<tr>{}</tr>",
                    ((format_html_join("", "<td>{}</td>", ((cell,) for cell in row)),) for row in section["rows"]),
                )
                table = format_html("<table><thead><tr>{}</tr></thead><tbody>{}</tbody></table>", header, body)
            parts.append(format_html("<section class='activity'>{}{}</section>", head, table))
        return mark_safe("".join(str(part) for part in parts)) if parts else "—"  # noqa: S308 - format_html parts

    @admin.display(description="Dashboard link")
    def dashboard_panel(self, obj):
        url = dashboard_url(obj)
        return format_html(
            "<a href='{}'>{}</a><br><span class='help'>Signed, for this participant only; the e-mails they get "
            "carry it. “Issue new dashboard links” revokes it.</span>",
            url,
            url,
        )

    @admin.display(description="Share links")
    def links_panel(self, obj):
        links = hooks.participant_share_links(participant=obj)
        if not links:
            return "Only active participants have links."
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td><a href='{}'>{}</a></td></tr>",
            ((link["channel"], link["url"], link["url"]) for link in links),
        )
        png = hooks.participant_qr_png(participant=obj, box_size=4)
        qr = (
            format_html(
                '<p><img alt="QR code of the QR link" src="data:image/png;base64,{}"></p>',
                base64.b64encode(png).decode(),
            )
            if png
            else ""
        )
        return format_html("<table><tr><th>Channel</th><th>URL</th></tr>{}</table>{}", rows, qr)

    def save_model(self, request, obj, form, change):
        actor = request_actor(request)
        program = obj.program
        enrolment = services.participant_upsert(
            tenant=program.tenant,
            program=program,
            external_id=obj.external_id,
            name=form.cleaned_data["name"],
            email=form.cleaned_data["email"],
            company=form.cleaned_data.get("company", ""),
            actor=actor,
            source="admin" if not change else obj.source,
            tier=form.cleaned_data.get("tier") or "",
            welcome=not change,
        )
        participant = enrolment.participant
        obj.pk = participant.pk
        obj.__dict__.update(participant.__dict__)


# --- participant imports -----------------------------------------------------------------------
class ParticipantImportForm(forms.ModelForm):
    file = forms.FileField(help_text="CSV with a header row: external_id, name, email, company (optional). UTF-8.")

    class Meta:
        model = ParticipantImport
        fields = ["program", "send_welcome"]
        labels = {"send_welcome": "E-mail each new participant their welcome (links and dashboard)"}

    def clean_file(self):
        upload = self.cleaned_data["file"]
        content = upload.read()
        try:
            services.participant_import_inspect(content)
        except ValidationError as exc:
            raise ValidationError(exc.message_dict["file"]) from exc
        self.cleaned_data["content"] = content
        return upload

    def clean_program(self):
        program = self.cleaned_data["program"]
        if program.status == ProgramStatus.ARCHIVED:
            raise ValidationError("This program is archived; nobody can join it.")
        return program


class ParticipantImportAdmin(TenantScopedAdmin):
    form = ParticipantImportForm
    list_display = [
        "created_at",
        "filename",
        "program",
        "status",
        "progress",
        "created_count",
        "updated_count",
        "error_count",
    ]
    list_filter = ["program", "status"]

    @admin.display(description="Progress")
    def progress(self, obj):
        return f"{obj.percent_done} %"

    def has_change_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        actor = request_actor(request)
        upload = form.cleaned_data["file"]
        job = services.participant_import_create(
            tenant=obj.program.tenant,
            program=obj.program,
            actor=actor,
            filename=upload.name,
            content=form.cleaned_data["content"],
            send_welcome=form.cleaned_data.get("send_welcome", True),
        )
        obj.pk = job.pk
        obj.__dict__.update(job.__dict__)

    def response_add(self, request, obj, post_url_continue=None):
        messages.success(request, f"Importing {obj.total_rows} row(s) from {obj.filename}.")
        return HttpResponseRedirect(reverse("admin:programs_participantimport_change", args=[obj.pk]))

    def get_urls(self):
        info = self.model._meta.app_label, self.model._meta.model_name
        return [
            path(
                "<path:object_id>/progress.json",
                self.admin_site.admin_view(self.progress_json_view),
                name="{}_{}_progress".format(*info),
            ),
            *super().get_urls(),
        ]

    def _job_or_404(self, request, object_id) -> ParticipantImport:
        job = self.get_object(request, unquote(object_id))
        if job is None or not self.has_view_permission(request, job):
            raise Http404("No such import")
        return job

    def change_view(self, request, object_id, form_url="", extra_context=None):
        job = self._job_or_404(request, object_id)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "original": job,
            "title": f"Import of {job.filename}",
            "progress": selectors.participant_import_progress(job.tenant, participant_import=job),
            "progress_url": reverse("admin:programs_participantimport_progress", args=[job.pk]),
        }
        return TemplateResponse(request, "admin/programs/participantimport/progress.html", context)

    def progress_json_view(self, request, object_id):
        job = self._job_or_404(request, object_id)
        return JsonResponse(selectors.participant_import_progress(job.tenant, participant_import=job))


site.register(Program, ProgramAdmin)
site.register(ProgramVersion, ProgramVersionAdmin)
site.register(Participant, ParticipantAdmin)
site.register(ParticipantImport, ParticipantImportAdmin)
