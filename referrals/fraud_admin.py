"""Admin of fraud screening: the review queue, the flags with their evidence, per-program policies.

The queue lists flagged referrals (filter for cleared / rejected ones); its detail page shows every
signal with a table of the compared values and the rows they came from. "Clear" and "Reject" are
bulk actions that ask for a reason on an intermediate page and call one review service per
referral; without a reason nothing is written.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.core.exceptions import ValidationError
from django.db.models import Min, Prefetch
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from referral_platform.state import allowed_moves
from referral_platform.tenancy.admin_base import TenantScopedAdmin, bulk_action, request_actor, site

from .fraud import referral_is_rewardable
from .fraud_services import REVIEW_REASON_MAX_LENGTH, fraud_policy_save, referral_review_clear, referral_review_reject
from .models import FraudFlag, FraudPolicy, FraudReview, Referral, ReviewStatus


# --- evidence, rendered for people -----------------------------------------------------------------
def _admin_link(model_label: str, pk) -> str:
    app_label, _, model_name = model_label.partition(".")
    try:
        url = reverse(f"admin:{app_label}_{model_name}_change", args=[pk])
    except NoReverseMatch:
        return format_html("{} #{}", model_label, pk)
    return format_html('<a href="{}">{} #{}</a>', url, model_label, pk)


def _plain(value) -> str:
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    return "—" if value in (None, "") else str(value)


def render_evidence(evidence: dict) -> SafeString:
    """The evidence of one signal as HTML tables: the compared values, the rows they came from, the
    thresholds used. Every value is escaped."""
    parts = []
    compared = evidence.get("compared") or []
    if compared:
        body = format_html_join(
            "",
            "<tr><th>{}</th><td><code>{}</code></td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
            (
                (
                    row.get("field", ""),
                    _plain(row.get("referral")),
                    _plain(row.get("other")),
                    row.get("other_source", ""),
                    _plain(row.get("normalised", "")),
                )
                for row in compared
            ),
        )
        parts.append(
            format_html(
                '<table class="fraud-compared"><thead><tr><th>Value</th><th>This referral</th><th>Compared with</th>'
                "<th>Where that comes from</th><th>Normalised</th></tr></thead><tbody>{}</tbody></table>",
                body,
            )
        )
    rows = evidence.get("rows") or []
    if rows:
        body = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    row.get("role", ""),
                    _admin_link(row.get("model", ""), row.get("id")),
                    _plain(row.get("at")),
                    "; ".join(f"{key}: {_plain(value)}" for key, value in (row.get("details") or {}).items()),
                )
                for row in rows
            ),
        )
        parts.append(
            format_html(
                '<table class="fraud-rows"><thead><tr><th>Role</th><th>Row</th><th>At</th><th>Details</th></tr>'
                "</thead><tbody>{}</tbody></table>",
                body,
            )
        )
    params = evidence.get("params") or {}
    if params:
        parts.append(
            format_html(
                '<p class="fraud-params">Check settings: {}</p>',
                format_html_join(", ", "{} = <code>{}</code>", ((k, _plain(v)) for k, v in params.items())),
            )
        )
    return mark_safe("".join(str(part) for part in parts))  # noqa: S308 - each part is built with format_html


def render_flags(flags) -> SafeString:
    if not flags:
        return format_html("<p>{}</p>", "No fraud signals.")
    return format_html_join(
        "",
        '<div class="fraud-signal"><h3>{} <small>({}, flagged {})</small></h3><p>{}</p>{}</div>',
        (
            (
                flag.get_code_display(),
                flag.code,
                flag.created_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
                flag.message,
                render_evidence(flag.evidence),
            )
            for flag in flags
        ),
    )


# --- the review queue ------------------------------------------------------------------------------
class ReviewQueueFilter(admin.SimpleListFilter):
    """Flagged referrals by default; cleared, rejected or all reviewed on request."""

    title = "review"
    parameter_name = "review"
    ALL = "all"

    def lookups(self, request, model_admin):
        return [
            (ReviewStatus.FLAGGED.value, "Waiting for review"),
            (ReviewStatus.CLEARED.value, "Cleared"),
            (ReviewStatus.REJECTED.value, "Rejected"),
            (self.ALL, "All flagged at some point"),
        ]

    def value(self):
        return super().value() or ReviewStatus.FLAGGED.value

    def choices(self, changelist):
        for lookup, title in self.lookup_choices:
            yield {
                "selected": self.value() == lookup,
                "query_string": changelist.get_query_string({self.parameter_name: lookup}),
                "display": title,
            }

    def queryset(self, request, queryset):
        if self.value() == self.ALL:
            return queryset
        return queryset.filter(review_status=self.value())


DECISION_TITLES = {
    "cleared": "Clear the selected referrals: why are they not fraud?",
    "rejected": "Reject the selected referrals as fraud: why?",
}


class ReviewReasonForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 80}),
        max_length=REVIEW_REASON_MAX_LENGTH,
        strip=True,
        help_text="Required. Kept in the audit trail with your name.",
    )


def _decision(service, *, name: str, description: str, to: str):
    """A review decision as a bulk action: asks for the reason first, then calls ``service`` per referral."""
    return bulk_action(
        lambda referral, actor, data: service(referral=referral, actor=actor, reason=data["reason"]),
        name=name,
        description=description,
        noun="referral",
        verb=str(to),
        to=to,
        machine=Referral.review_machine,
        form_class=ReviewReasonForm,
        title=DECISION_TITLES[to],
        template="admin/referrals/fraudreview/review_decision.html",
        context={"verb": str(to), "render_flags": render_flags},
    )


class FraudReviewAdmin(TenantScopedAdmin):
    list_display = [
        "referral_label",
        "referred_company",
        "referrer",
        "program",
        "signal_codes",
        "first_flagged_at",
        "status",
        "review_status",
        "reviewed_by",
    ]
    list_display_links = ["referral_label"]
    list_filter = [ReviewQueueFilter, "program", "fraud_flags__code"]
    search_fields = ["referred_email", "referred_company", "referrer__name", "referrer__email"]
    ordering = ["-pk"]
    fields = [
        "referral_label",
        "program",
        "referrer",
        "referred_email",
        "referred_company",
        "visitor_id",
        "status",
        "created_at",
        "review_status",
        "rewardable",
        "reviewed_by",
        "reviewed_at",
        "review_reason",
        "fraud_screened_at",
        "signals",
    ]
    readonly_fields = fields
    actions = ["clear_referrals", "reject_referrals"]
    change_form_template = "admin/referrals/fraudreview/change_form.html"

    def get_queryset(self, request):
        flags = FraudFlag.objects.order_by("created_at", "code")
        return (
            super()
            .get_queryset(request)
            .exclude(review_status=ReviewStatus.CLEAR)
            .select_related("program", "referrer", "reviewed_by")
            .prefetch_related(Prefetch("fraud_flags", queryset=flags))
            .annotate(first_flagged=Min("fraud_flags__created_at"))
        )

    # Decisions go through the actions (services with an audit row), never through a form save.
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return obj is None and super().has_change_permission(request)

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="Referral", ordering="pk")
    def referral_label(self, obj):
        return f"#{obj.pk} {obj.referred_email or obj.visitor_id or ''}".strip()

    @admin.display(description="Signals")
    def signal_codes(self, obj):
        return ", ".join(flag.get_code_display() for flag in obj.fraud_flags.all())

    @admin.display(description="First flagged", ordering="first_flagged")
    def first_flagged_at(self, obj):
        return obj.first_flagged

    @admin.display(description="Can earn rewards", boolean=True)
    def rewardable(self, obj):
        return referral_is_rewardable(obj)

    @admin.display(description="Signals and evidence")
    def signals(self, obj):
        return render_flags(list(obj.fraud_flags.all()))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        # The decision buttons: for roles that may decide, the moves the review machine allows from here.
        referral = self.get_object(request, unquote(object_id))
        can_decide = super().has_change_permission(request) and referral is not None
        moves = allowed_moves(referral, machine=Referral.review_machine) if can_decide else []
        extra_context = {
            **(extra_context or {}),
            "can_clear": ReviewStatus.CLEARED in moves,
            "can_reject": ReviewStatus.REJECTED in moves,
        }
        return super().change_view(request, object_id, form_url, extra_context=extra_context)

    clear_referrals = _decision(
        referral_review_clear,
        name="clear_referrals",
        description="Clear selected referrals (not fraud; they may earn rewards)",
        to=ReviewStatus.CLEARED,
    )
    reject_referrals = _decision(
        referral_review_reject,
        name="reject_referrals",
        description="Reject selected referrals as fraud",
        to=ReviewStatus.REJECTED,
    )


# --- flags -----------------------------------------------------------------------------------------
class FraudFlagAdmin(TenantScopedAdmin):
    """Every signal ever raised, searchable by code; written by screening only."""

    list_display = ["referral", "code", "message", "created_at"]
    list_filter = ["code"]
    search_fields = ["referral__referred_email", "referral__referred_company", "message"]
    date_hierarchy = "created_at"
    fields = ["referral", "code", "message", "evidence_table", "created_at"]
    readonly_fields = fields

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="Evidence")
    def evidence_table(self, obj):
        return render_evidence(obj.evidence)


# --- policies --------------------------------------------------------------------------------------
class FraudPolicyForm(forms.ModelForm):
    class Meta:
        model = FraudPolicy
        fields = [
            "program",
            "self_referral_enabled",
            "self_referral_activity_days",
            "own_company_enabled",
            "disposable_email_enabled",
            "velocity_enabled",
            "velocity_max_per_hour",
            "duplicate_company_enabled",
            "duplicate_company_window_days",
        ]

    def clean_program(self):
        program = self.cleaned_data["program"]
        taken = FraudPolicy.objects.filter(tenant_id=program.tenant_id, program=program)
        if self.instance.pk:
            taken = taken.exclude(pk=self.instance.pk)
        if taken.exists():
            raise ValidationError("This program already has fraud settings; edit those instead.")
        return program


class FraudPolicyAdmin(TenantScopedAdmin):
    form = FraudPolicyForm
    autocomplete_fields = ["program"]
    list_display = [
        "program",
        "self_referral_enabled",
        "own_company_enabled",
        "disposable_email_enabled",
        "velocity_enabled",
        "velocity_max_per_hour",
        "duplicate_company_enabled",
        "duplicate_company_window_days",
        "updated_at",
    ]
    list_filter = ["program"]
    fieldsets = [
        (None, {"fields": ["program"]}),
        ("Self-referral", {"fields": ["self_referral_enabled", "self_referral_activity_days"]}),
        ("Own company", {"fields": ["own_company_enabled"]}),
        ("Disposable e-mail", {"fields": ["disposable_email_enabled"]}),
        ("Velocity", {"fields": ["velocity_enabled", "velocity_max_per_hour"]}),
        ("Duplicate company", {"fields": ["duplicate_company_enabled", "duplicate_company_window_days"]}),
    ]

    def get_readonly_fields(self, request, obj=None):
        return ["program"] if obj is not None else []

    def save_model(self, request, obj, form, change):
        if not change:
            obj.tenant_id = obj.program.tenant_id
        fraud_policy_save(policy=obj, actor=request_actor(request))


site.register(FraudReview, FraudReviewAdmin)
site.register(FraudFlag, FraudFlagAdmin)
site.register(FraudPolicy, FraudPolicyAdmin)
