"""Marketer admin of engagement: the NPS CSV import with its progress bar and per-row errors."""

from __future__ import annotations

import csv
import io

from django import forms
from django.contrib import messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import ValidationError
from django.http import Http404, HttpResponseRedirect, JsonResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse

from referral_platform.tenancy.admin_base import TenantScopedAdmin, request_actor, site

from .models import NpsImport
from .services import nps_import_create
from .services.moments import NPS_CSV_COLUMNS


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
