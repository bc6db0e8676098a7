"""The marketer admin of partners: applications (approve / reject with a reason), partners and their tiers,
deal registrations (review, account lookup), conflicts (decide with a reason), resources (upload) and
support tickets (reply). Every decision goes through the services, which audit it."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from referral_platform.money import format_money, format_percent
from referral_platform.tenancy.admin_base import TenantScopedAdmin, TenantScopedInline, site

from . import selectors, services
from .models import (
    COMMISSION_DEFAULTS,
    ConflictDecision,
    DealConflict,
    DealExtension,
    DealRegistration,
    DealStatus,
    Partner,
    PartnerApplication,
    PartnerEnrolment,
    PartnerInvitation,
    PartnerProgramSettings,
    PartnerTier,
    PartnerTierChange,
    PartnerType,
    PartnerUser,
    Resource,
    SupportTicket,
    TicketAuthor,
    TicketMessage,
)


class DecisionForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "cols": 70}), required=False)


class ApprovalForm(DecisionForm):
    partner_type = forms.ChoiceField(choices=PartnerType.choices)
    commission_bp = forms.IntegerField(
        min_value=0, max_value=10_000, label="Commission (basis points, 100 = 1 %)", help_text=""
    )


class ConflictForm(forms.Form):
    decision = forms.ChoiceField(choices=ConflictDecision.choices, widget=forms.RadioSelect)
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "cols": 70}), help_text="Both partners read it.")


class ReplyForm(forms.Form):
    body = forms.CharField(widget=forms.Textarea(attrs={"rows": 5, "cols": 70}), label="Reply to the partner")
    close = forms.BooleanField(required=False, label="Close the ticket after replying")


class LookupForm(forms.Form):
    domain = forms.CharField(max_length=300, label="Domain, URL or e-mail of the account")


class DecisionPagesMixin:
    """Extra admin pages ``<id>/<action>/`` rendered with one template: a summary and a form."""

    decision_actions: tuple[str, ...] = ()

    def get_urls(self):
        info = self.model._meta.app_label, self.model._meta.model_name
        extra = [
            path(
                f"<path:object_id>/{action}/",
                self.admin_site.admin_view(self._decision_view),
                {"action": action},
                name="{}_{}_{}".format(*info, action),
            )
            for action in self.decision_actions
        ]
        return extra + super().get_urls()

    def _object_or_404(self, request, object_id):
        obj = self.get_object(request, unquote(object_id))
        if obj is None or not self.has_view_permission(request, obj):
            raise Http404("Not found")
        return obj

    def _decision_view(self, request, object_id, action):
        obj = self._object_or_404(request, object_id)
        if not self.has_change_permission(request, obj):
            raise PermissionDenied
        form_class, title, run = self.decision(action, obj)
        form = form_class(request.POST or None, initial=self.decision_initial(action, obj))
        if request.method == "POST" and form.is_valid():
            try:
                message = run(request, form.cleaned_data)
            except ValidationError as error:
                for name, errors in error.message_dict.items():
                    form.add_error(name if name in form.fields else None, errors)
            else:
                messages.success(request, message)
                info = self.model._meta.app_label, self.model._meta.model_name
                return HttpResponseRedirect(reverse("admin:{}_{}_change".format(*info), args=[obj.pk]))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "original": obj,
            "title": title,
            "form": form,
            "summary": self.decision_summary(obj),
        }
        return TemplateResponse(request, "admin/partners/decision.html", context, status=400 if form.errors else 200)

    def decision_initial(self, action, obj) -> dict:
        return {}

    def decision_summary(self, obj) -> list[tuple[str, object]]:
        return []


def _actor(request):
    return request.actor


# --- tiers, settings ------------------------------------------------------------------------------


@admin.register(PartnerTier, site=site)
class PartnerTierAdmin(TenantScopedAdmin):
    list_display = ("name", "slug", "rank", "min_won_deals", "revenue_rule", "period_days", "dedicated_support")
    ordering = ("rank",)

    @admin.display(description="Won revenue")
    def revenue_rule(self, obj):
        return format_money(obj.min_won_revenue_minor, obj.currency)


@admin.register(PartnerProgramSettings, site=site)
class PartnerProgramSettingsAdmin(TenantScopedAdmin):
    list_display = ("program", "protection_days", "extension_days", "max_protection_days", "auto_approve")
    autocomplete_fields = ("program",)

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)

        class Checked(form):
            def clean_protection_days(self):
                value = self.cleaned_data["protection_days"]
                if not 30 <= value <= 90:
                    raise ValidationError("Between 30 and 90 days.")
                return value

            def clean_required_qualification(self):
                value = self.cleaned_data["required_qualification"] or []
                unknown = set(value) - {"budget", "authority", "need", "timeline"}
                if unknown:
                    raise ValidationError(f"Unknown items: {', '.join(sorted(unknown))}.")
                return value

        return Checked


# --- partners ---------------------------------------------------------------------------------------


class PartnerUserInline(TenantScopedInline):
    model = PartnerUser
    fields = ("user", "role", "is_active", "created_at")
    readonly_fields = ("user", "created_at")
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


class PartnerEnrolmentInline(TenantScopedInline):
    model = PartnerEnrolment
    fields = ("program", "participant", "created_at")
    readonly_fields = ("program", "participant", "created_at")
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


class PartnerTierChangeInline(TenantScopedInline):
    model = PartnerTierChange
    fk_name = "partner"
    fields = ("created_at", "from_tier", "to_tier", "direction", "reason", "actor")
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Partner, site=site)
class PartnerAdmin(TenantScopedAdmin):
    list_display = ("name", "partner_type", "tier", "commission", "country", "status", "created_at")
    list_filter = ("partner_type", "status", "tier")
    search_fields = ("name", "website")
    readonly_fields = ("tier", "tier_changed_at", "created_at")
    inlines = (PartnerUserInline, PartnerEnrolmentInline, PartnerTierChangeInline)

    @admin.display(description="Commission")
    def commission(self, obj):
        return format_percent(obj.commission_bp)

    def save_model(self, request, obj, form, change):
        if not change:
            super().save_model(request, obj, form, change)
            return
        profile = {"name", "website", "partner_type", "country", "payout_currency", "commission_bp"}
        changes = {name: form.cleaned_data[name] for name in form.changed_data if name in profile}
        services.partner_update(partner=Partner.objects.get(pk=obj.pk), actor=_actor(request), **changes)
        if "status" in form.changed_data:
            services.partner_status_set(partner=obj, status=form.cleaned_data["status"], actor=_actor(request))
        obj.refresh_from_db()


@admin.register(PartnerTierChange, site=site)
class PartnerTierChangeAdmin(TenantScopedAdmin):
    list_display = ("created_at", "partner", "from_tier", "to_tier", "direction", "actor")
    list_filter = ("direction",)
    readonly_fields = ("partner", "from_tier", "to_tier", "direction", "reason", "metrics", "actor", "created_at")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(PartnerInvitation, site=site)
class PartnerInvitationAdmin(TenantScopedAdmin):
    list_display = ("email", "partner", "role", "created_at", "expires_at", "accepted_at")
    readonly_fields = ("partner", "email", "role", "invited_by", "created_at", "expires_at", "accepted_at")

    def has_add_permission(self, request):
        return False


# --- applications -------------------------------------------------------------------------------------


@admin.register(PartnerApplication, site=site)
class PartnerApplicationAdmin(DecisionPagesMixin, TenantScopedAdmin):
    list_display = ("company", "program", "partner_type", "email", "status", "created_at")
    list_filter = ("status", "partner_type", "program")
    search_fields = ("company", "email", "website_domain")
    readonly_fields = [f.name for f in PartnerApplication._meta.fields if f.name not in ("id", "tenant")]
    decision_actions = ("approve", "reject")
    change_form_template = "admin/partners/change_form_with_actions.html"

    def has_add_permission(self, request):
        return False

    def change_view(self, request, object_id, form_url="", extra_context=None):
        obj = self.get_object(request, unquote(object_id))
        actions = (
            [("approve", "Approve…"), ("reject", "Reject…")] if obj is not None and obj.status == "pending" else []
        )
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), "decision_links": actions})

    def decision_initial(self, action, obj):
        return {"partner_type": obj.partner_type, "commission_bp": COMMISSION_DEFAULTS[obj.partner_type]["default_bp"]}

    def decision_summary(self, obj):
        defaults = COMMISSION_DEFAULTS[obj.partner_type]
        return [
            ("Company", f"{obj.company} ({obj.website})"),
            ("Type", obj.get_partner_type_display()),
            ("Contact", f"{obj.contact_name} <{obj.email}>"),
            ("Audience", obj.audience),
            ("Expected volume", obj.expected_volume),
            (
                "Default commission",
                f"{format_percent(defaults['default_bp'])} {defaults['basis']} (usual range "
                f"{format_percent(defaults['min_bp'])} to {format_percent(defaults['max_bp'])})",
            ),
        ]

    def decision(self, action, obj):
        if action == "approve":

            def run(request, data):
                partner = services.application_approve(
                    application=obj,
                    actor=_actor(request),
                    reason=data["reason"],
                    commission_bp=data["commission_bp"],
                    partner_type=data["partner_type"],
                )
                return f"{partner.name} approved; the portal invitation was e-mailed to {obj.email}."

            return ApprovalForm, f"Approve {obj.company}", run

        def reject(request, data):
            services.application_reject(application=obj, actor=_actor(request), reason=data["reason"])
            return f"{obj.company} rejected; the applicant was told why."

        return DecisionForm, f"Reject {obj.company}", reject


# --- deals ----------------------------------------------------------------------------------------------


class DealExtensionInline(TenantScopedInline):
    model = DealExtension
    fields = ("created_at", "days", "from_expires_at", "to_expires_at", "reason", "requested_by")
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(DealRegistration, site=site)
class DealRegistrationAdmin(DecisionPagesMixin, TenantScopedAdmin):
    list_display = ("reference_label", "company_name", "domain", "partner", "status", "stage", "expires_at")
    list_filter = ("status", "stage", "program")
    search_fields = ("company_name", "domain", "partner__name")
    # Every change of a registration goes through a service (approve, reject, extend, stage): audited.
    readonly_fields = [f.name for f in DealRegistration._meta.fields if f.name not in ("id", "tenant")]
    inlines = (DealExtensionInline,)
    decision_actions = ("approve", "reject")
    change_form_template = "admin/partners/change_form_with_actions.html"
    change_list_template = "admin/partners/dealregistration/change_list.html"

    @admin.display(description="Deal", ordering="pk")
    def reference_label(self, obj):
        return obj.reference

    def has_add_permission(self, request):
        return False

    def get_urls(self):
        info = self.model._meta.app_label, self.model._meta.model_name
        lookup = path("lookup/", self.admin_site.admin_view(self.lookup_view), name="{}_{}_lookup".format(*info))
        return [lookup, *super().get_urls()]

    def lookup_view(self, request):
        """Does this account belong to a partner? The sales team's question, in the admin."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        form = LookupForm(request.GET or None)
        answer = None
        if request.GET and form.is_valid():
            try:
                answer = selectors.account_lookup(_actor(request).tenant, domain=form.cleaned_data["domain"])
            except ValidationError as error:
                form.add_error("domain", error.message_dict.get("domain"))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Does this account belong to a partner?",
            "form": form,
            "answer": answer,
        }
        return TemplateResponse(request, "admin/partners/dealregistration/lookup.html", context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        obj = self.get_object(request, unquote(object_id))
        actions = []
        if obj is not None and obj.status == DealStatus.PENDING:
            actions = [("approve", "Approve…"), ("reject", "Reject…")]
        elif obj is not None and obj.status == DealStatus.APPROVED:
            actions = [("reject", "Withdraw protection…")]
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), "decision_links": actions})

    def decision_summary(self, obj):
        return [
            ("Deal", f"{obj.reference} {obj.company_name} ({obj.domain})"),
            ("Partner", obj.partner.name),
            ("Status", obj.get_status_display()),
            ("Review note", obj.review_note or "—"),
            ("Qualification", ", ".join(f"{k}: {v}" for k, v in obj.qualification.items()) or "—"),
        ]

    def decision(self, action, obj):
        if action == "approve":

            def run(request, data):
                services.deal_approve(deal=obj, actor=_actor(request), reason=data["reason"])
                return f"{obj.reference} approved: the account is protected."

            return DecisionForm, f"Approve {obj.reference}", run

        def reject(request, data):
            services.deal_reject(deal=obj, actor=_actor(request), reason=data["reason"])
            return f"{obj.reference} rejected; the partner was told why."

        return DecisionForm, f"Reject {obj.reference}", reject


@admin.register(DealConflict, site=site)
class DealConflictAdmin(DecisionPagesMixin, TenantScopedAdmin):
    list_display = ("__str__", "match", "similarity", "status", "decision", "created_at")
    list_filter = ("status", "match")
    readonly_fields = [f.name for f in DealConflict._meta.fields if f.name not in ("id", "tenant")] + ["claims"]
    decision_actions = ("resolve",)
    change_form_template = "admin/partners/change_form_with_actions.html"

    def has_add_permission(self, request):
        return False

    @admin.display(description="Both claims")
    def claims(self, obj):
        rows = format_html_join(
            "",
            "<tr><th>{}</th><td>{} {}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    role,
                    deal.reference,
                    deal.company_name,
                    deal.domain,
                    deal.partner.name,
                    deal.registered_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
                    deal.get_status_display(),
                )
                for role, deal in (("First", obj.holder), ("Second", obj.challenger))
            ),
        )
        return format_html(
            "<table><tr><th></th><th>Deal</th><th>Domain</th><th>Partner</th><th>Registered</th><th>Status</th></tr>"
            "{}</table><p>Similarity: {}</p>",
            rows,
            obj.similarity,
        )

    def change_view(self, request, object_id, form_url="", extra_context=None):
        obj = self.get_object(request, unquote(object_id))
        actions = [("resolve", "Decide…")] if obj is not None and obj.status == "open" else []
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), "decision_links": actions})

    def decision_summary(self, obj):
        summary = [("Match", f"{obj.get_match_display()} (similarity {obj.similarity})")]
        for role, deal in (("First claim", obj.holder), ("Second claim", obj.challenger)):
            summary.append(
                (
                    role,
                    f"{deal.reference} {deal.company_name} ({deal.domain}) by {deal.partner.name}, registered "
                    f"{deal.registered_at:%Y-%m-%d %H:%M:%S} UTC; {deal.get_status_display().lower()}; "
                    + (
                        "qualification: " + ", ".join(f"{k}: {v}" for k, v in deal.qualification.items())
                        if deal.qualification
                        else "no qualification"
                    )
                    + (f"; notes: {deal.notes}" if deal.notes else ""),
                )
            )
        return summary

    def decision(self, action, obj):
        def run(request, data):
            services.conflict_resolve(
                conflict=obj, decision=data["decision"], reason=data["reason"], actor=_actor(request)
            )
            return "Conflict resolved; both partners were told the decision and the reason."

        return ConflictForm, f"Decide conflict #{obj.pk}", run


# --- resources, tickets --------------------------------------------------------------------------------


@admin.register(Resource, site=site)
class ResourceAdmin(TenantScopedAdmin):
    list_display = ("title", "category", "min_tier", "is_published", "created_at")
    list_filter = ("category", "min_tier", "is_published")
    search_fields = ("title",)

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)

        class Checked(form):
            def clean(self):
                cleaned = super().clean()
                if not cleaned.get("file") and not cleaned.get("url"):
                    raise ValidationError({"file": "Upload a file or give a link."})
                return cleaned

        return Checked


class TicketMessageInline(TenantScopedInline):
    model = TicketMessage
    fields = ("created_at", "author_kind", "author", "body")
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(SupportTicket, site=site)
class SupportTicketAdmin(DecisionPagesMixin, TenantScopedAdmin):
    list_display = ("__str__", "partner", "status", "updated_at")
    list_filter = ("status",)
    readonly_fields = ("partner", "subject", "status", "opened_by", "created_at", "updated_at", "closed_at")
    inlines = (TicketMessageInline,)
    decision_actions = ("reply",)
    change_form_template = "admin/partners/change_form_with_actions.html"

    def has_add_permission(self, request):
        return False

    def change_view(self, request, object_id, form_url="", extra_context=None):
        return super().change_view(
            request, object_id, form_url, {**(extra_context or {}), "decision_links": [("reply", "Reply…")]}
        )

    def decision_summary(self, obj):
        return [(f"{m.get_author_kind_display()} · {m.author}", m.body) for m in obj.messages.all()]

    def decision(self, action, obj):
        def run(request, data):
            services.ticket_reply(ticket=obj, body=data["body"], author_kind=TicketAuthor.TEAM, actor=_actor(request))
            if data["close"]:
                services.ticket_close(ticket=obj, actor=_actor(request))
            return "Reply sent; the partner was e-mailed."

        return ReplyForm, f"Reply to #{obj.pk} {obj.subject}", run
