"""Marketer admin of engagement: the NPS CSV import (progress bar, per-row errors), trigger policies, message
templates (preview, test send), webhook endpoints (secret shown once), the delivery, send and NPS logs."""

from __future__ import annotations

import csv
import io

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import Http404, HttpResponseRedirect, JsonResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse

from referral_platform.tenancy.admin_base import TenantScopedAdmin, request_actor, site

from .models import (
    Communication,
    MessageTemplate,
    Moment,
    NpsImport,
    TriggerPolicy,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEventType,
)
from .services import nps_import_create
from .services.communications import message_template_preview, message_template_save, message_template_test_send
from .services.moments import NPS_CSV_COLUMNS
from .services.policies import trigger_policy_save
from .services.webhooks import (
    webhook_delivery_resend,
    webhook_endpoint_create,
    webhook_endpoint_rotate_secret,
    webhook_endpoint_update,
)


def nps_import_progress(job: NpsImport) -> dict:
    return {
        "id": job.pk,
        "status": job.status,
        "is_finished": job.status in {"done", "failed"},
        "percent": job.percent_done,
        "total_rows": job.total_rows,
        "processed_rows": job.processed_rows,
        "created": job.created_count,
        "error_count": job.error_count,
        "errors": job.errors[:100],
    }


class NpsImportForm(forms.ModelForm):
    file = forms.FileField(
        help_text="CSV with a header row: response_id, customer_external_id, email, score, answered_at "
        "(optional: name, company, comment). UTF-8."
    )

    class Meta:
        model = NpsImport
        fields = ["program"]

    def clean_file(self):
        upload = self.cleaned_data["file"]
        try:
            content = upload.read().decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ValidationError("The file must be UTF-8 CSV.") from None
        header = next(csv.reader(io.StringIO(content)), [])
        missing = [column for column in NPS_CSV_COLUMNS if column not in header]
        if missing:
            raise ValidationError(f"Missing column(s): {', '.join(missing)}.")
        self.cleaned_data["content"] = content
        return upload


class NpsImportAdmin(TenantScopedAdmin):
    form = NpsImportForm
    list_display = ["created_at", "filename", "program", "status", "progress", "created_count", "error_count"]
    list_filter = ["status"]

    def progress(self, obj):
        return f"{obj.percent_done} %"

    def has_change_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        upload = form.cleaned_data["file"]
        job = nps_import_create(
            tenant=request_actor(request).tenant,
            filename=upload.name,
            content=form.cleaned_data["content"],
            program=form.cleaned_data.get("program"),
        )
        obj.pk = job.pk
        obj.__dict__.update(job.__dict__)

    def response_add(self, request, obj, post_url_continue=None):
        messages.success(request, f"Importing {obj.total_rows} response(s) from {obj.filename}.")
        return HttpResponseRedirect(reverse("admin:engagement_npsimport_change", args=[obj.pk]))

    def get_urls(self):
        return [
            path(
                "<path:object_id>/progress.json",
                self.admin_site.admin_view(self.progress_json_view),
                name="engagement_npsimport_progress",
            ),
            *super().get_urls(),
        ]

    def _job_or_404(self, request, object_id) -> NpsImport:
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
            "title": f"NPS import of {job.filename}",
            "progress": nps_import_progress(job),
            "progress_url": reverse("admin:engagement_npsimport_progress", args=[job.pk]),
        }
        return TemplateResponse(request, "admin/engagement/npsimport/progress.html", context)

    def progress_json_view(self, request, object_id):
        return JsonResponse(nps_import_progress(self._job_or_404(request, object_id)))


site.register(NpsImport, NpsImportAdmin)


# --- marketer pages: policies, templates, webhooks, logs ------------------------------------------


class ReadOnlyEngagementAdmin(TenantScopedAdmin):
    """Rows written by services only: marketers look, never add, edit or delete."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


def _service_errors_to_form(form, error: ValidationError) -> None:
    for field, messages_ in error.message_dict.items():
        form.add_error(field if field in form.fields else None, messages_)


class TriggerPolicyForm(forms.ModelForm):
    class Meta:
        model = TriggerPolicy
        fields = [
            "program",
            "trigger",
            "is_enabled",
            "delay_minutes",
            "suppression_days",
            "quiet_hours_start",
            "quiet_hours_end",
            "daily_cap",
            "review_url",
        ]

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        values = {name: cleaned.get(name) for name in self.Meta.fields}
        try:
            # The service decides (one policy per program + trigger, both ends of the quiet hours);
            # run it in a savepoint that is rolled back, save_model saves for real.
            with transaction.atomic():
                trigger_policy_save(tenant=self.tenant, policy=self.instance if self.instance.pk else None, **values)
                transaction.set_rollback(True)
        except ValidationError as error:
            _service_errors_to_form(self, error)
        if self.instance.pk:
            self.instance.refresh_from_db()
        return cleaned


class TriggerPolicyAdmin(TenantScopedAdmin):
    admin_section = "Programs"
    form = TriggerPolicyForm
    list_display = ["program", "trigger", "is_enabled", "delay_minutes", "suppression_days", "daily_cap"]
    list_filter = ["trigger", "is_enabled"]

    def get_form(self, request, obj=None, **kwargs):
        form_class = super().get_form(request, obj, **kwargs)
        tenant = obj.tenant if obj is not None else request_actor(request).tenant
        return type("ScopedTriggerPolicyForm", (form_class,), {"tenant": tenant})

    def save_model(self, request, obj, form, change):
        values = {name: form.cleaned_data.get(name) for name in TriggerPolicyForm.Meta.fields}
        saved = trigger_policy_save(tenant=form.tenant, policy=obj if change else None, **values)
        obj.pk = saved.pk
        obj.__dict__.update(saved.__dict__)


class MessageTemplateForm(forms.ModelForm):
    class Meta:
        model = MessageTemplate
        fields = ["program", "kind", "subject", "body"]

    def clean(self):
        cleaned = super().clean()
        if not self.errors:
            try:
                message_template_preview(
                    program=cleaned["program"], kind=cleaned["kind"], subject=cleaned["subject"], body=cleaned["body"]
                )
            except ValidationError as error:
                _service_errors_to_form(self, error)
        return cleaned


class MessageTemplateAdmin(TenantScopedAdmin):
    admin_section = "Programs"
    form = MessageTemplateForm
    list_display = ["program", "kind", "subject", "updated_at"]
    list_filter = ["kind"]
    actions = ["preview_templates", "send_test_to_me"]

    def save_model(self, request, obj, form, change):
        saved = message_template_save(
            program=form.cleaned_data["program"],
            kind=form.cleaned_data["kind"],
            subject=form.cleaned_data["subject"],
            body=form.cleaned_data["body"],
        )
        obj.pk = saved.pk
        obj.__dict__.update(saved.__dict__)

    @admin.action(description="Preview the selected templates (sample participant)", permissions=["view"])
    def preview_templates(self, request, queryset):
        previews = [
            {"template": row, **message_template_preview(program=row.program, kind=row.kind)}
            for row in queryset.select_related("program")
        ]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Template preview",
            "previews": previews,
        }
        return TemplateResponse(request, "admin/engagement/messagetemplate/preview.html", context)

    @admin.action(description="Send a test of the selected templates to my address", permissions=["change"])
    def send_test_to_me(self, request, queryset):
        to = request.user.email
        if not to:
            messages.error(request, "Your account has no e-mail address.")
            return None
        for row in queryset.select_related("program"):
            message_template_test_send(program=row.program, kind=row.kind, to=to)
        messages.success(request, f"Sent {queryset.count()} test message(s) to {to} (subject prefixed [TEST]).")
        return None


class WebhookEndpointForm(forms.ModelForm):
    event_types = forms.MultipleChoiceField(
        choices=WebhookEventType.choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: every event type.",
    )

    class Meta:
        model = WebhookEndpoint
        fields = ["url", "description", "event_types", "is_active"]


def _last_four(secret: str) -> str:
    return f"…{secret[-4:]}" if secret else ""


class WebhookEndpointAdmin(TenantScopedAdmin):
    """The signing secret is shown in full once (creation, rotation); afterwards only its last four."""

    admin_section = "Settings"
    form = WebhookEndpointForm
    list_display = ["url", "description", "is_active", "secret_hint", "disabled_at"]
    list_filter = ["is_active"]
    readonly_fields = ["secret_hint", "created_at", "failing_since", "disabled_at", "disabled_reason"]
    actions = ["rotate_secret"]

    @admin.display(description="Signing secret")
    def secret_hint(self, obj):
        return _last_four(obj.secret) if obj and obj.pk else "(shown once, after saving)"

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        # The form validated the URL and event types (the service checks them again).
        if change:
            saved = webhook_endpoint_update(
                endpoint=obj, url=data["url"], event_types=data["event_types"], is_active=data["is_active"]
            )
        else:
            saved = webhook_endpoint_create(
                tenant=request_actor(request).tenant,
                url=data["url"],
                event_types=data["event_types"],
                description=data.get("description", ""),
            )
            if not data["is_active"]:
                saved = webhook_endpoint_update(endpoint=saved, is_active=False)
        if change and data.get("description", "") != saved.description:
            saved.description = data.get("description", "")[:200]
            saved.save(update_fields=["description"])
        obj.pk = saved.pk
        obj.__dict__.update(saved.__dict__)

    def _secret_page(self, request, endpoints, title):
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": title,
            "endpoints": endpoints,
            "changelist_url": reverse("admin:engagement_webhookendpoint_changelist"),
        }
        response = TemplateResponse(request, "admin/engagement/webhookendpoint/secret.html", context)
        response["Cache-Control"] = "no-store"
        return response

    def response_add(self, request, obj, post_url_continue=None):
        return self._secret_page(request, [obj], "Webhook endpoint created: copy its signing secret now")

    @admin.action(description="Rotate the signing secret (the old one keeps signing for 24 h)", permissions=["change"])
    def rotate_secret(self, request, queryset):
        rotated = [webhook_endpoint_rotate_secret(endpoint=endpoint) for endpoint in queryset]
        return self._secret_page(request, rotated, "New signing secret(s): copy them now")


class WebhookDeliveryAdmin(ReadOnlyEngagementAdmin):
    """The delivery log (every attempt's request and response); a marketer may re-send a delivery."""

    admin_section = "Activity"
    list_display = ["created_at", "event_type", "endpoint", "status", "attempt_count", "delivered_at"]
    list_filter = ["status"]
    readonly_fields = [
        "endpoint",
        "message",
        "event_type",
        "status",
        "attempt_count",
        "next_attempt_at",
        "delivered_at",
        "created_at",
        "attempts",
    ]
    fields = readonly_fields
    actions = ["resend"]

    @admin.display(description="Event")
    def event_type(self, obj):
        return obj.message.event_type

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("endpoint", "message")

    def has_resend_permission(self, request, obj=None):
        return TenantScopedAdmin.has_change_permission(self, request, obj)

    @admin.action(description="Re-send the selected deliveries now", permissions=["resend"])
    def resend(self, request, queryset):
        sent = 0
        for delivery in queryset:
            try:
                webhook_delivery_resend(delivery=delivery)
                sent += 1
            except ValidationError as error:
                messages.error(request, f"{delivery.endpoint}: {' '.join(error.messages)}")
        if sent:
            messages.success(request, f"Re-sending {sent} delivery(ies).")


class CommunicationAdmin(ReadOnlyEngagementAdmin):
    """The send log."""

    admin_section = "People"
    list_display = ["created_at", "kind", "email_to", "subject", "status", "sent_at"]
    list_filter = ["kind", "status"]
    search_fields = ["email_to", "subject"]
    fields = ["participant", "kind", "related_key", "email_to", "subject", "body", "status", "created_at", "sent_at"]
    readonly_fields = fields


class MomentAdmin(ReadOnlyEngagementAdmin):
    """NPS responses and other trigger moments as received, with what was decided."""

    admin_section = "Activity"
    list_display = ["occurred_at", "trigger", "email", "score", "outcome", "source"]
    list_filter = ["trigger", "outcome", "source"]
    search_fields = ["email", "customer_external_id", "external_id"]
    fields = [
        "trigger",
        "external_id",
        "source",
        "program",
        "customer_external_id",
        "email",
        "name",
        "company",
        "score",
        "comment",
        "occurred_at",
        "outcome",
        "received_at",
        "processed_at",
        "raw",
    ]
    readonly_fields = fields


NpsImportAdmin.admin_section = "People"
site.register(TriggerPolicy, TriggerPolicyAdmin)
site.register(MessageTemplate, MessageTemplateAdmin)
site.register(WebhookEndpoint, WebhookEndpointAdmin)
site.register(WebhookDelivery, WebhookDeliveryAdmin)
site.register(Communication, CommunicationAdmin)
site.register(Moment, MomentAdmin)
