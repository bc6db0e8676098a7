"""Marketer admin for rewards: the review queue, payouts, the ledger, statements, Stripe wiring."""

from __future__ import annotations

import csv
from datetime import UTC, datetime, time, timedelta

import stripe
from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.http import url_has_allowed_host_and_scheme

from programs.models import Participant
from referral_platform.money import format_amount
from referral_platform.tenancy.admin_base import (
    EDIT_ROLES,
    TenantScopedAdmin,
    TenantScopedInline,
    bulk_action,
    bulk_apply,
    json_with_money,
    move_action,
    request_actor,
    site,
)

from .ledger import account_balance, presented
from .models import (
    EvaluationStatus,
    LedgerAccount,
    LedgerEntry,
    LedgerTransaction,
    ParticipantMessage,
    ParticipantStripeProfile,
    Payout,
    PayoutSettings,
    PayoutStatus,
    Reward,
    RewardEvaluation,
    RewardStatus,
    StripeCredentials,
    StripeWebhookEvent,
    mask_secret,
)
from .payouts import connect_onboarding_link_create, payout_mark_fulfilled, payout_retry_queue, payouts_pay_now
from .selectors import (
    TIME_TO_REWARD_TARGET,
    participant_statement,
    review_queue_q,
    statement_csv_rows,
    time_to_reward_by_program,
)
from .services import hold_has_ended, reward_approve, reward_reject, stripe_credentials_save, stripe_credentials_values


class ReadOnlyAdmin(TenantScopedAdmin):
    """Rows written only by services: viewable, never added, edited or deleted here."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


def _can_edit(modeladmin, request) -> bool:
    actor = request_actor(request)
    return actor.is_platform_staff or (actor.kind == "member" and actor.role in EDIT_ROLES)


class ReasonForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "cols": 60}), max_length=2000)


# --- rewards -----------------------------------------------------------------------------------


class ReviewQueueFilter(admin.SimpleListFilter):
    title = "queue"
    parameter_name = "queue"

    def lookups(self, request, model_admin):
        return [("review", "Awaiting review (above auto-approve limit)"), ("hold", "On hold")]

    def queryset(self, request, queryset):
        now = timezone.now()
        if self.value() == "review":
            return queryset.filter(review_queue_q(now=now))
        if self.value() == "hold":
            return queryset.filter(status=RewardStatus.PENDING, hold_until__gt=now)
        return queryset


approve_rewards = move_action(
    reward_approve,
    name="approve_rewards",
    description="Approve selected rewards",
    noun="reward",
    verb="approved",
    to=RewardStatus.APPROVED,
    reason="approved in review",
)
reject_rewards = bulk_action(
    lambda reward, actor, data: reward_reject(reward=reward, actor=actor, reason=data["reason"]),
    name="reject_rewards",
    description="Reject selected rewards (asks for a reason)",
    noun="reward",
    verb="rejected",
    to=RewardStatus.REJECTED,
    form_class=ReasonForm,
    title="Reject rewards",
)


@admin.action(description="Pay the approved rewards of the selected rewards' participants now", permissions=["change"])
def pay_now_rewards(modeladmin, request, queryset):
    """Instead of waiting for the next scheduled payout run: one payout per participant (and method and
    currency) for just the participants of the selected rewards, queued at once."""
    actor = request_actor(request)
    participants = {reward.participant_id: reward.participant for reward in queryset.select_related("participant")}
    queued = 0
    for participant in participants.values():
        try:
            queued += len(payouts_pay_now(participant=participant, actor=actor))
        except ValidationError as exc:
            messages.error(request, f"{participant}: {' '.join(exc.messages)}")
    if queued:
        messages.success(request, f"{queued} payout(s) queued for {len(participants)} participant(s).")
    else:
        messages.info(
            request,
            "Nothing to pay now: no approved, unpaid rewards ready for payout (a participant may still need to "
            "connect a payout account, or be under the program's minimum payout).",
        )


class RewardAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "participant",
        "program",
        "amount",
        "status",
        "decide",
        "kind",
        "net",
        "hold_until",
        "payout",
        "created_at",
    ]
    list_per_page = 50
    autocomplete_fields: list[str] = []
    list_filter = [ReviewQueueFilter, "status", "kind", "beneficiary_side", "program"]
    list_select_related = ["participant", "program", "payout"]
    search_fields = ["participant__name", "participant__email", "source_key"]
    actions = [approve_rewards, reject_rewards, pay_now_rewards]
    change_form_template = "admin/rewards/reward/change_form.html"
    readonly_fields = [
        "program",
        "participant",
        "beneficiary_side",
        "kind",
        "description",
        "amount",
        "net",
        "reversed",
        "clawed_back",
        "status",
        "status_reason",
        "hold_until",
        "explanation_text",
        "explanation_shown",
        "source_key",
        "conversion_event",
        "referral",
        "payout",
        "converted_at",
        "approved_at",
        "paid_at",
        "time_to_reward",
        "created_at",
    ]
    fields = readonly_fields
    change_list_template = "admin/rewards/reward/change_list.html"

    def has_change_permission(self, request, obj=None):
        # Actions need "change"; the form itself stays read-only (every field is in readonly_fields).
        return _can_edit(self, request) and self._owns(request, obj)

    @admin.display(description="amount", ordering="amount_minor")
    def amount(self, obj):
        return format_amount(obj.amount_minor, obj.currency)

    @admin.display(description="reversed (before payout)")
    def reversed(self, obj):
        return format_amount(obj.reversed_minor, obj.currency)

    @admin.display(description="clawed back (after payout)")
    def clawed_back(self, obj):
        return format_amount(obj.clawed_back_minor, obj.currency)

    @admin.display(description="explanation")
    def explanation_shown(self, obj):
        return json_with_money(obj.explanation, obj.currency)

    def changelist_view(self, request, extra_context=None):
        """The list, with the time to reward (conversion → paid) per program above it (R-18: target < 7 days)."""
        actor = request_actor(request)
        stats = time_to_reward_by_program(actor.tenant) if actor.tenant is not None else []
        return super().changelist_view(
            request,
            {
                **(extra_context or {}),
                "time_to_reward": [
                    {
                        "program": row.program_name,
                        "paid": row.paid,
                        "median": _duration_words(row.median),
                        "p90": _duration_words(row.p90),
                        "within_target": row.within_target,
                    }
                    for row in stats
                ],
                "time_to_reward_target_days": TIME_TO_REWARD_TARGET.days,
            },
        )

    @admin.display(description="net")
    def net(self, obj):
        return format_amount(obj.net_minor, obj.currency)

    # --- one-click decisions on the row and the detail page ----------------------------------------
    DECISIONS = ("approve", "reject", "pay")

    def decisions_for(self, reward) -> list[str]:
        if reward.status == RewardStatus.PENDING:
            # Approving is refused while the hold runs (reward_approve), so only offer it once the hold has ended.
            return ["approve", "reject"] if hold_has_ended(reward, timezone.now()) else ["reject"]
        if reward.status == RewardStatus.APPROVED and reward.payout_id is None:
            return ["pay", "reject"]
        return []

    @admin.display(description="decide")
    def decide(self, obj):
        choices = self.decisions_for(obj)
        if not choices:
            return "—"
        labels = {"approve": "Approve", "reject": "Reject…", "pay": "Pay now"}
        return format_html_join(
            " ",
            '<a class="button decide decide-{}" href="{}">{}</a>',
            ((name, reverse("admin:rewards_reward_decide", args=[obj.pk, name]), labels[name]) for name in choices),
        )

    def change_view(self, request, object_id, form_url="", extra_context=None):
        reward = self.get_object(request, object_id)
        labels = {"approve": "Approve", "reject": "Reject…", "pay": "Pay now"}
        decisions = [(name, labels[name]) for name in self.decisions_for(reward)] if reward is not None else []
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), "decisions": decisions})

    def decide_view(self, request, object_id, decision):
        """Approve / reject (with a reason) / pay one reward: a confirmation page, then the service."""
        reward = self.get_object(request, object_id)
        if reward is None or decision not in self.decisions_for(reward):
            # Only the decisions the row offers (approve after the hold, pay once approved): the URL is no back door.
            raise Http404("No such decision for this reward")
        if not self.has_change_permission(request, reward):
            raise PermissionDenied
        actor = request_actor(request)
        form = ReasonForm(request.POST or None) if decision == "reject" else None
        error = ""
        if request.method == "POST" and (form is None or form.is_valid()):
            try:
                if decision == "approve":
                    reward_approve(reward=reward, actor=actor, reason="approved in review")
                    messages.success(request, f"Reward #{reward.pk} approved.")
                elif decision == "reject":
                    reward_reject(reward=reward, actor=actor, reason=form.cleaned_data["reason"])
                    messages.success(request, f"Reward #{reward.pk} rejected.")
                else:
                    queued = payouts_pay_now(participant=reward.participant, actor=actor)
                    if queued:
                        messages.success(request, f"{len(queued)} payout(s) queued for {reward.participant}.")
                    else:
                        messages.info(request, "Nothing to pay now (no payout account yet, or under the minimum).")
            except ValidationError as exc:
                error = " ".join(exc.messages)
            else:
                target = request.POST.get("next", "")
                if not url_has_allowed_host_and_scheme(
                    target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
                ):
                    target = reverse("admin:rewards_reward_changelist")
                return redirect(target)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "original": reward,
            "title": {"approve": "Approve this reward?", "reject": "Reject this reward?", "pay": "Pay now?"}[decision],
            "decision": decision,
            "form": form,
            "error": error,
            "next": request.GET.get("next") or request.POST.get("next") or "",
        }
        return TemplateResponse(request, "admin/rewards/reward/decide.html", context)

    def get_urls(self):
        return [
            path(
                "<path:object_id>/decide/<str:decision>/",
                self.admin_site.admin_view(self.decide_view),
                name="rewards_reward_decide",
            ),
            path("statement/", self.admin_site.admin_view(self.statement_view), name="rewards_statement"),
            *super().get_urls(),
        ]

    def statement_view(self, request):
        """Per participant and period: opening balances, ledger movements, closing balances; ?format=csv."""
        actor = request_actor(request)
        if not self.has_view_permission(request):
            raise PermissionDenied
        participants = Participant.objects.select_related("program").order_by("name", "pk")
        if not actor.is_platform_staff:
            participants = participants.filter(tenant_id=actor.tenant.pk if actor.tenant else None)
        form = StatementForm(request.GET or None, participants=participants)
        context = {
            **self.admin_site.each_context(request),
            "title": "Participant statement",
            "form": form,
            "opts": self.model._meta,
        }
        if form.is_bound and form.is_valid():
            participant = form.cleaned_data["participant"]
            start = datetime.combine(form.cleaned_data["start"], time.min, tzinfo=UTC)
            end = datetime.combine(form.cleaned_data["end"], time.min, tzinfo=UTC) + timedelta(days=1)
            statement = participant_statement(participant.tenant, participant=participant, start=start, end=end)
            if request.GET.get("format") == "csv":
                response = HttpResponse(content_type="text/csv")
                response["Content-Disposition"] = (
                    f'attachment; filename="statement-{participant.pk}-{form.cleaned_data["start"]}.csv"'
                )
                writer = csv.writer(response)
                for row in statement_csv_rows(statement):
                    writer.writerow(row)
                return response
            movements = statement.movements()
            rows = [
                (STATEMENT_ACCOUNT_WORDS.get(k, k), statement.opening[k], movements[k], statement.closing[k])
                for k in statement.opening
            ]
            lines = [(statement_line_words(line), line) for line in statement.lines]
            context.update(
                statement=statement, rows=rows, lines=lines, csv_query=request.GET.urlencode() + "&format=csv"
            )
        return TemplateResponse(request, "admin/rewards/statement.html", context)


# Statements in words (issue 11): what a balance is and what happened, for people; the ledger's own
# account and entry kinds stay one click away (and in the CSV) for accountants.
STATEMENT_ACCOUNT_WORDS = {
    "pending": "On hold",
    "payable": "Approved, to be paid",
    "paid": "Paid",
    "receivable": "Owed back",
}
STATEMENT_ENTRY_WORDS = {
    "accrual": "Earned",
    "approval": "Approved",
    "payout": "Paid",
    "credit": "Applied as account credit",
    "reversal": "Withdrawn",
    "clawback": "Clawed back",
    "adjustment": "Adjusted",
}


def statement_line_words(line) -> str:
    """A statement line in words: Earned / Approved / Paid / Clawed back …, with where the money now is."""
    word = STATEMENT_ENTRY_WORDS.get(line.kind, line.kind)
    where = STATEMENT_ACCOUNT_WORDS.get(line.account, line.account).lower()
    if line.kind == "accrual" and line.account == "pending":
        return "Earned (on hold)"
    if line.kind == "approval":
        return "Approved" if line.account == "payable" else "Approved (released from hold)"
    if line.kind == "payout":
        return "Paid" if line.account == "paid" else "Paid out (no longer to be paid)"
    return f"{word} ({where})"


def _duration_words(value: timedelta | None) -> str:
    if value is None:
        return "—"
    hours = value.total_seconds() / 3600
    return f"{hours / 24:.1f} days" if hours >= 24 else f"{hours:.1f} hours"


class StatementForm(forms.Form):
    participant = forms.ModelChoiceField(queryset=Participant.objects.none())
    start = forms.DateField(widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(widget=forms.DateInput(attrs={"type": "date"}), help_text="Inclusive.")

    def __init__(self, *args, participants, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["participant"].queryset = participants
        if not self.is_bound:
            today = timezone.now().date()
            self.initial.update(start=today.replace(day=1), end=today)

    def clean(self):
        data = super().clean()
        for name in ("start", "end"):  # a date the statement can compute with (9999-12-31 + 1 day overflows)
            if data.get(name) and not 2000 <= data[name].year <= 2100:
                self.add_error(name, "Pick a date between 2000-01-01 and 2100-12-31.")  # drops it from data
        if data.get("start") and data.get("end") and data["end"] < data["start"]:
            raise ValidationError({"end": "The period ends before it starts."})
        return data


# --- payouts -----------------------------------------------------------------------------------


class FulfilForm(forms.Form):
    note = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2, "cols": 60}),
        required=False,
        help_text="E.g. the gift card code sent, the tracking number of the swag.",
    )
    reference = forms.CharField(
        required=False, max_length=100, help_text="Only for Stripe payouts paid by hand: the transfer / payment id."
    )


fulfil_payouts = bulk_action(
    lambda payout, actor, data: payout_mark_fulfilled(
        payout=payout, actor=actor, note=data["note"], reference=data["reference"]
    ),
    name="fulfil_payouts",
    description="Mark selected payouts fulfilled (asks for a note)",
    noun="payout",
    verb="marked fulfilled",
    to=PayoutStatus.PAID,
    form_class=FulfilForm,
    title="Mark payouts fulfilled",
)
retry_payouts = bulk_action(
    lambda payout, actor: payout_retry_queue(payout=payout, actor=actor),
    name="retry_payouts",
    description="Retry selected failed payouts now",
    noun="payout",
    verb="queued for a new attempt",
)


class PayoutAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "participant",
        "method",
        "amount",
        "netted",
        "status",
        "attempts",
        "error",
        "next_attempt_at",
        "stripe_object_id",
        "paid_at",
    ]
    list_filter = ["status", "method", "program"]
    search_fields = ["participant__name", "participant__email", "stripe_object_id"]
    actions = [fulfil_payouts, retry_payouts]
    readonly_fields = [
        "program",
        "participant",
        "method",
        "currency",
        "gross",
        "netted",
        "amount",
        "status",
        "idempotency_key",
        "attempts",
        "last_error",
        "next_attempt_at",
        "stripe_object_id",
        "stripe_detail",
        "fulfilment_note",
        "created_at",
        "paid_at",
        "covered_rewards",
    ]
    fields = readonly_fields

    def has_change_permission(self, request, obj=None):
        return _can_edit(self, request) and self._owns(request, obj)

    @admin.display(description="amount", ordering="amount_minor")
    def amount(self, obj):
        return format_amount(obj.amount_minor, obj.currency)

    @admin.display(description="gross (rewards covered)")
    def gross(self, obj):
        return format_amount(obj.gross_minor, obj.currency)

    @admin.display(description="netted (clawbacks offset)")
    def netted(self, obj):
        return format_amount(obj.netted_minor, obj.currency) if obj.netted_minor else ""

    @admin.display(description="last error")
    def error(self, obj):
        return (obj.last_error[:80] + "…") if len(obj.last_error) > 80 else obj.last_error

    @admin.display(description="rewards")
    def covered_rewards(self, obj):
        links = [
            format_html('<a href="{}">#{}</a>', reverse("admin:rewards_reward_change", args=[r.pk]), r.pk)
            for r in obj.rewards.all()
        ]
        return format_html(", ".join(["{}"] * len(links)), *links) if links else "—"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("participant")


# --- ledger ------------------------------------------------------------------------------------


class LedgerEntryInline(TenantScopedInline):
    model = LedgerEntry
    fields = ["account", "amount", "posted_at"]
    readonly_fields = fields
    can_delete = False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("account")

    @admin.display(description="amount (debit +, credit -)")
    def amount(self, obj):
        return format_amount(obj.amount_minor, obj.account.currency)

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class LedgerTransactionAdmin(ReadOnlyAdmin):
    list_display = ["posted_at", "kind", "idempotency_key", "memo", "reward", "payout"]
    list_select_related = ["reward", "payout"]
    list_filter = ["kind"]
    search_fields = ["idempotency_key", "memo"]
    inlines = [LedgerEntryInline]
    readonly_fields = ["posted_at", "kind", "idempotency_key", "memo", "reward", "payout"]
    fields = readonly_fields


class LedgerAccountAdmin(ReadOnlyAdmin):
    list_display = ["__str__", "program", "participant", "kind", "currency", "balance"]
    list_filter = ["kind", "currency", "program"]
    search_fields = ["participant__name", "participant__email"]
    readonly_fields = ["program", "participant", "kind", "currency", "created_at", "balance"]
    fields = readonly_fields

    @admin.display(description="balance (normal direction)")
    def balance(self, obj):
        return format_amount(presented(obj.kind, account_balance(obj)), obj.currency)


# --- Stripe wiring -----------------------------------------------------------------------------


class StripeCredentialsForm(forms.ModelForm):
    secret_key = forms.CharField(
        widget=forms.PasswordInput(render_value=False), required=False, help_text="Leave blank to keep the current key."
    )
    webhook_secret = forms.CharField(
        widget=forms.PasswordInput(render_value=False),
        required=False,
        help_text="The endpoint's signing secret (whsec_…). Leave blank to keep the current one.",
    )

    tenant = None  # bound by StripeCredentialsAdmin.get_form

    class Meta:
        model = StripeCredentials
        fields = ["secret_key", "webhook_secret"]

    def clean(self):
        data = super().clean()
        if self.tenant is None:
            raise ValidationError("Choose a workspace first.")
        try:
            data.update(
                stripe_credentials_values(
                    tenant=self.tenant,
                    secret_key=data.get("secret_key", ""),
                    webhook_secret=data.get("webhook_secret", ""),
                )
            )
        except ValidationError as exc:
            for name, errors in exc.message_dict.items():
                self.add_error(name, errors)
        return data


class StripeCredentialsAdmin(TenantScopedAdmin):
    form = StripeCredentialsForm
    list_display = ["__str__", "masked_secret_key", "masked_webhook_secret", "webhook_url", "updated_at"]
    readonly_fields = ["masked_secret_key", "masked_webhook_secret", "webhook_url", "updated_at"]

    def get_fields(self, request, obj=None):
        return ["secret_key", "webhook_secret", *self.readonly_fields]

    @admin.display(description="secret key")
    def masked_secret_key(self, obj):
        return mask_secret(obj.secret_key) if obj else ""

    @admin.display(description="webhook signing secret")
    def masked_webhook_secret(self, obj):
        return mask_secret(obj.webhook_secret) if obj else ""

    @admin.display(description="webhook endpoint")
    def webhook_url(self, obj):
        if not obj or not obj.tenant_id:
            return ""
        return reverse("stripe_webhook", kwargs={"tenant_slug": obj.tenant.slug})

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        tenant = obj.tenant if obj is not None else request_actor(request).tenant
        return type(form.__name__, (form,), {"tenant": tenant})

    def save_model(self, request, obj, form, change):
        actor = request_actor(request)
        if form.tenant is None:
            raise PermissionDenied
        credentials = stripe_credentials_save(
            tenant=form.tenant,
            actor=actor,
            secret_key=form.cleaned_data["secret_key"],
            webhook_secret=form.cleaned_data["webhook_secret"],
        )
        obj.pk = credentials.pk
        obj.__dict__.update(credentials.__dict__)


@admin.action(description="Create a Stripe Connect onboarding link", permissions=["change"])
def onboarding_link(modeladmin, request, queryset):
    actor = request_actor(request)
    back = request.build_absolute_uri(reverse("admin:rewards_participantstripeprofile_changelist"))
    profiles = list(queryset.select_related("participant", "participant__tenant"))
    outcome = bulk_apply(
        modeladmin,
        request,
        profiles,
        lambda profile: (
            profile.participant,
            connect_onboarding_link_create(
                participant=profile.participant, actor=actor, refresh_url=back, return_url=back
            ),
        ),
        noun="onboarding link",
        verb="created",
        refusals=(ValidationError, PermissionDenied, stripe.StripeError),
        atomic=False,  # it calls Stripe between short transactions of its own
    )
    for participant, url in outcome.results:
        modeladmin.message_user(request, f"Onboarding link for {participant}: {url}")


class ParticipantStripeProfileAdmin(TenantScopedAdmin):
    list_display = ["participant", "connected_account_id", "customer_id", "onboarding_link_created_at"]
    search_fields = ["participant__name", "participant__email", "connected_account_id", "customer_id"]
    autocomplete_fields = ["participant"]
    actions = [onboarding_link]


class PayoutSettingsAdmin(TenantScopedAdmin):
    list_display = ["program", "minimum_payout_shown"]
    autocomplete_fields = ["program"]
    list_select_related = ["program"]
    money_fields = {"minimum_payout_minor": "program.currency"}


def _event_reprocess(event, actor):
    from .webhooks import stripe_event_process

    return stripe_event_process(event=event)


reprocess_events = bulk_action(
    _event_reprocess,
    name="reprocess_events",
    description="Process selected events again",
    noun="event",
    verb="processed (events already processed or ignored are left as they are)",
)


class StripeWebhookEventAdmin(ReadOnlyAdmin):
    list_display = ["received_at", "type", "stripe_event_id", "status", "attempts", "error"]
    list_filter = ["type", "status"]
    search_fields = ["stripe_event_id"]
    readonly_fields = [
        "stripe_event_id",
        "type",
        "status",
        "attempts",
        "error",
        "received_at",
        "processed_at",
        "payload",
    ]
    fields = readonly_fields
    actions = [reprocess_events]

    def has_change_permission(self, request, obj=None):
        return _can_edit(self, request) and self._owns(request, obj)


site.register(Reward, RewardAdmin)
site.register(Payout, PayoutAdmin)
site.register(LedgerTransaction, LedgerTransactionAdmin)
site.register(LedgerAccount, LedgerAccountAdmin)
site.register(StripeCredentials, StripeCredentialsAdmin)
site.register(ParticipantStripeProfile, ParticipantStripeProfileAdmin)
site.register(PayoutSettings, PayoutSettingsAdmin)
site.register(StripeWebhookEvent, StripeWebhookEventAdmin)


# --- reward evaluation and participant messages ------------------------------------------------


def _evaluate(evaluation, actor):
    from .evaluation import reward_evaluate

    return reward_evaluate(event_id=evaluation.conversion_event_id)


def _report_rewards_created(modeladmin, request, outcome):
    created = sum(result.rewards_created for result in outcome.results if result is not None)
    modeladmin.message_user(request, f"Evaluated again: {created} reward(s) created.")


evaluate_again = bulk_action(
    _evaluate,
    name="evaluate_again",
    description="Evaluate selected conversions again (those not done)",
    noun="conversion",
    verb="evaluated again",
    rows=lambda queryset: queryset.exclude(status=EvaluationStatus.DONE),
    report=_report_rewards_created,
)


class RewardEvaluationAdmin(ReadOnlyAdmin):
    """Why each conversion earned what it did (or nothing): the evaluation's notes and the rules' outcome."""

    list_display = ["evaluated_at", "conversion_event", "referral", "status", "rewards_created", "summary"]
    list_filter = ["status"]
    search_fields = ["conversion_event__external_event_id"]
    readonly_fields = [
        "conversion_event",
        "referral",
        "status",
        "notes",
        "rewards_created",
        "attempts",
        "evaluated_at",
        "detail_shown",
    ]
    fields = readonly_fields
    actions = [evaluate_again]

    @admin.display(description="detail")
    def detail_shown(self, obj):
        # Rules' outcomes name their currency; anything else is in the program's (the event's if none).
        currency = obj.referral.program.currency if obj.referral_id else obj.conversion_event.currency
        return json_with_money(obj.detail, currency)

    def has_change_permission(self, request, obj=None):
        return _can_edit(self, request) and self._owns(request, obj)

    @admin.display(description="why")
    def summary(self, obj):
        return " ".join(obj.notes or [])[:200]


class ParticipantMessageAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "participant", "kind", "subject", "emailed_at"]
    list_filter = ["kind"]
    search_fields = ["participant__name", "participant__email", "subject"]
    readonly_fields = [
        "participant",
        "kind",
        "related_key",
        "referral",
        "reward",
        "subject",
        "body",
        "email_to",
        "emailed_at",
        "created_at",
    ]
    fields = readonly_fields


site.register(RewardEvaluation, RewardEvaluationAdmin)
site.register(ParticipantMessage, ParticipantMessageAdmin)
