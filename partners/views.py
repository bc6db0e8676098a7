"""The partner portal (``/portal/``): server-rendered pages for a logged-in partner user, every read and
write scoped to the actor's tenant and partner; and the public, tenant-branded partner application page."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from decimal import Decimal
from functools import wraps

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import ValidationError
from django.http import FileResponse, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from programs.models import ParticipantStatus, Program
from referral_platform import abuse
from referral_platform.money import currency_exponent
from referral_platform.tenancy import rls
from referrals.models import CompanySize
from referrals.selectors import participant_qr_png, participant_share_links
from referrals.services import lead_submit
from rewards.models import ParticipantStripeProfile, Reward
from rewards.payouts import connect_onboarding_link_create
from rewards.selectors import participant_statement, statement_csv_rows

from . import selectors, services
from .models import (
    COMMISSION_DEFAULTS,
    OPEN_STAGES,
    DealRegistration,
    DealStatus,
    Partner,
    PartnerEnrolment,
    PartnerInvitation,
    PartnerRole,
    PartnerType,
    PartnerUser,
    Resource,
    ResourceCategory,
    SupportTicket,
    TicketAuthor,
    TicketStatus,
)

PORTAL_NAV = [
    ("portal_home", "Home"),
    ("portal_deals", "Deals"),
    ("portal_leads", "Leads"),
    ("portal_links", "Links"),
    ("portal_statements", "Statements"),
    ("portal_resources", "Resources"),
    ("portal_tickets", "Support"),
    ("portal_team", "Team"),
    ("portal_profile", "Profile"),
    ("portal_payouts", "Payouts"),
]


def _not_found(request):
    return render(request, "404.html", status=404)


def _private(response):
    response["Cache-Control"] = "private, no-store"
    response["X-Robots-Tag"] = "noindex, nofollow"
    return response


def partner_required(view):
    """Only a partner user reaches the portal; the view gets the partner of the actor (never from input).
    Anyone else logged in (a marketer, staff) gets 404; a visitor is sent to log in."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        actor = request.actor
        if actor.kind != "partner_user":
            return _not_found(request)
        partner = Partner.objects.for_tenant(actor.tenant).select_related("tier", "tenant").get(pk=actor.partner_id)
        request.partner = partner
        return _private(view(request, *args, **kwargs))

    return wrapper


def _page(request, template: str, context: dict, status: int = 200):
    partner = request.partner
    context = {
        "partner": partner,
        "tenant": partner.tenant,
        "nav": PORTAL_NAV,
        "current": request.resolver_match.url_name,
        "partner_user": PartnerUser.objects.for_tenant(partner.tenant_id).filter(user=request.user).first(),
        **context,
    }
    return render(request, template, context, status=status)


def _form_errors(form, error: ValidationError) -> None:
    for name, errors in error.message_dict.items():
        form.add_error(name if name in form.fields else None, errors)


def _enrolment(partner: Partner, participant_id: int) -> PartnerEnrolment | None:
    return (
        PartnerEnrolment.objects.for_tenant(partner.tenant_id)
        .select_related("participant", "program")
        .filter(partner=partner, participant_id=participant_id)
        .first()
    )


def _minor(value: Decimal | None, currency: str) -> int | None:
    if value is None:
        return None
    return int((value * (10 ** currency_exponent(currency))).to_integral_value())


# --- home ---------------------------------------------------------------------------------------------


@require_GET
@partner_required
def portal_home(request):
    home = selectors.portal_home(request.partner)
    chart = {
        "pipeline": {
            "labels": [row["label"] for row in home.pipeline.values()],
            "counts": [row["count"] for row in home.pipeline.values()],
        },
        # Minor units and the currency's exponent: the chart shows major units, the page's figures stay exact.
        "earnings": {
            currency: [values["pending"], values["approved"], values["paid"]]
            for currency, values in home.earnings.items()
        },
        "exponents": {currency: currency_exponent(currency) for currency in home.earnings},
    }
    return _page(request, "partners/portal_home.html", {"home": home, "chart": chart})


# --- links ----------------------------------------------------------------------------------------------


@require_GET
@partner_required
def portal_links(request):
    partner = request.partner
    programs = [
        {
            "enrolment": enrolment,
            "links": participant_share_links(partner.tenant, participant=enrolment.participant),
        }
        for enrolment in selectors.partner_enrolments(partner)
    ]
    return _page(request, "partners/portal_links.html", {"programs": programs})


@require_GET
@partner_required
def portal_link_qr(request, participant_id: int):
    enrolment = _enrolment(request.partner, participant_id)
    png = participant_qr_png(request.partner.tenant, participant=enrolment.participant) if enrolment else None
    if png is None:
        return _not_found(request)
    return HttpResponse(png, content_type="image/png")


# --- deals ----------------------------------------------------------------------------------------------


class DealForm(forms.Form):
    program = forms.TypedChoiceField(coerce=int, label="Program")
    company_name = forms.CharField(max_length=200, label="Prospect company")
    domain = forms.CharField(max_length=253, label="Web domain", help_text="e.g. acme.com")
    contact_name = forms.CharField(max_length=200, required=False)
    contact_email = forms.EmailField(required=False)
    deal_value = forms.DecimalField(required=False, min_value=0, decimal_places=3, label="Expected deal value")
    budget = forms.CharField(max_length=500, required=False)
    authority = forms.CharField(max_length=500, required=False, label="Authority (who decides)")
    need = forms.CharField(max_length=500, required=False)
    timeline = forms.CharField(max_length=500, required=False)
    notes = forms.CharField(max_length=4000, required=False, widget=forms.Textarea(attrs={"rows": 3}))

    def __init__(self, *args, enrolments, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["program"].choices = [(e.program_id, e.program.name) for e in enrolments]


@partner_required
def portal_deals(request):
    partner = request.partner
    enrolments = [e for e in selectors.partner_enrolments(partner) if e.participant.status == ParticipantStatus.ACTIVE]
    form = DealForm(request.POST or None, enrolments=enrolments)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        program = next(e.program for e in enrolments if e.program_id == data["program"])
        try:
            deal = services.deal_register(
                tenant=partner.tenant,
                partner=partner,
                program=program,
                company_name=data["company_name"],
                domain=data["domain"],
                contact_name=data["contact_name"],
                contact_email=data["contact_email"],
                deal_value_minor=_minor(data["deal_value"], program.currency),
                qualification={k: data[k] for k in ("budget", "authority", "need", "timeline")},
                notes=data["notes"],
                actor=request.actor,
            )
        except ValidationError as error:
            _form_errors(form, error)
        else:
            messages.success(request, f"{deal.reference} registered: {deal.get_status_display().lower()}.")
            return redirect("portal_deal_detail", pk=deal.pk)
    deals = list(selectors.partner_deals(partner)[:200])
    return _page(
        request,
        "partners/portal_deals.html",
        {"form": form, "deals": deals, "now": timezone.now()},
        status=400 if form.errors else 200,
    )


def _partner_deal(request, pk: int) -> DealRegistration | None:
    return (
        DealRegistration.objects.for_tenant(request.partner.tenant_id)
        .select_related("program")
        .filter(partner=request.partner, pk=pk)
        .first()
    )


class ExtensionForm(forms.Form):
    days = forms.IntegerField(min_value=1, max_value=365, required=False)
    reason = forms.CharField(max_length=2000, widget=forms.Textarea(attrs={"rows": 2}), label="How the deal progressed")


@require_GET
@partner_required
def portal_deal_detail(request, pk: int):
    deal = _partner_deal(request, pk)
    if deal is None:
        return _not_found(request)
    settings_ = services.program_settings(deal.program)
    return _page(
        request,
        "partners/portal_deal_detail.html",
        {
            "deal": deal,
            "extensions": deal.extensions.order_by("-created_at"),
            "form": ExtensionForm(initial={"days": settings_.extension_days}),
            "can_extend": deal.status == DealStatus.APPROVED and deal.stage in OPEN_STAGES,
            "program_settings": settings_,
        },
    )


@require_POST
@partner_required
def portal_deal_extend(request, pk: int):
    deal = _partner_deal(request, pk)
    if deal is None:
        return _not_found(request)
    form = ExtensionForm(request.POST)
    if form.is_valid():
        try:
            extension = services.deal_extend(
                deal=deal, actor=request.actor, reason=form.cleaned_data["reason"], days=form.cleaned_data["days"]
            )
        except ValidationError as error:
            _form_errors(form, error)
        else:
            messages.success(request, f"Protection extended until {extension.to_expires_at:%d %b %Y}.")
            return redirect("portal_deal_detail", pk=deal.pk)
    settings_ = services.program_settings(deal.program)
    return _page(
        request,
        "partners/portal_deal_detail.html",
        {
            "deal": deal,
            "extensions": deal.extensions.order_by("-created_at"),
            "form": form,
            "can_extend": True,
            "program_settings": settings_,
        },
        status=400,
    )


# --- leads ----------------------------------------------------------------------------------------------


class LeadForm(forms.Form):
    program = forms.TypedChoiceField(coerce=int)
    name = forms.CharField(max_length=200, label="Contact name")
    email = forms.EmailField(label="Work e-mail")
    company = forms.CharField(max_length=200)
    company_size = forms.ChoiceField(choices=[("", "—"), *CompanySize.choices], required=False)
    budget = forms.CharField(max_length=500, required=False)
    authority = forms.CharField(max_length=500, required=False)
    need = forms.CharField(max_length=500, required=False)
    timeline = forms.CharField(max_length=500, required=False)
    notes = forms.CharField(max_length=2000, required=False, widget=forms.Textarea(attrs={"rows": 3}))

    def __init__(self, *args, enrolments, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["program"].choices = [(e.program_id, e.program.name) for e in enrolments]


@partner_required
def portal_leads(request):
    partner = request.partner
    enrolments = [e for e in selectors.partner_enrolments(partner) if e.participant.status == ParticipantStatus.ACTIVE]
    form = LeadForm(request.POST or None, enrolments=enrolments)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        enrolment = next(e for e in enrolments if e.program_id == data["program"])
        try:
            lead_submit(
                tenant=partner.tenant,
                actor=request.actor,
                participant=enrolment.participant,
                name=data["name"],
                email=data["email"],
                company=data["company"],
                company_size=data["company_size"],
                budget=data["budget"],
                authority=data["authority"],
                need=data["need"],
                timeline=data["timeline"],
                notes=data["notes"],
            )
        except ValidationError as error:
            _form_errors(form, error)
        else:
            messages.success(request, f"Lead {data['company']} submitted.")
            return redirect("portal_leads")
    leads = list(selectors.partner_leads(partner)[:200])
    return _page(
        request, "partners/portal_leads.html", {"form": form, "leads": leads}, status=400 if form.errors else 200
    )


# --- statements -----------------------------------------------------------------------------------------


def _period(text: str | None) -> tuple[str, datetime, datetime] | None:
    """``YYYY-MM`` → (label, first instant, first instant of the next month), UTC."""
    now = timezone.now()
    text = text or f"{now:%Y-%m}"
    try:
        start = datetime.strptime(text, "%Y-%m").replace(tzinfo=UTC)
    except ValueError:
        return None
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return text, start, end


def _described(statement):
    """Each line says what it is: the reward's description (e.g. "Commission: Acme (DR-7)"), else the memo."""
    ids = {line.reward_id for line in statement.lines if line.reward_id}
    texts = dict(
        Reward.objects.for_tenant(statement.participant.tenant_id).filter(pk__in=ids).values_list("pk", "description")
    )
    for line in statement.lines:
        line.what = texts.get(line.reward_id) or line.memo
    return statement


def _statements(partner: Partner, period: tuple[str, datetime, datetime]):
    _label, start, end = period
    return [
        {
            "enrolment": enrolment,
            "statement": _described(
                participant_statement(partner.tenant, participant=enrolment.participant, start=start, end=end)
            ),
        }
        for enrolment in selectors.partner_enrolments(partner)
    ]


def _recent_periods(count: int = 12) -> list[str]:
    now = timezone.now()
    year, month = now.year, now.month
    periods = []
    for _ in range(count):
        periods.append(f"{year:04d}-{month:02d}")
        year, month = (year - 1, 12) if month == 1 else (year, month - 1)
    return periods


@require_GET
@partner_required
def portal_statements(request):
    period = _period(request.GET.get("period"))
    if period is None:
        messages.error(request, "period: use YYYY-MM, e.g. 2026-11.")
        period = _period(None)
    return _page(
        request,
        "partners/portal_statements.html",
        {"period": period[0], "statements": _statements(request.partner, period), "periods": _recent_periods()},
    )


def _one_statement(request, participant_id: int, period_text: str):
    enrolment = _enrolment(request.partner, participant_id)
    period = _period(period_text)
    if enrolment is None or period is None:
        return None, None, None
    _label, start, end = period
    statement = participant_statement(request.partner.tenant, participant=enrolment.participant, start=start, end=end)
    return enrolment, period, _described(statement)


@require_GET
@partner_required
def portal_statement_csv(request, participant_id: int, period: str):
    enrolment, period_, statement = _one_statement(request, participant_id, period)
    if statement is None:
        return _not_found(request)
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="statement-{enrolment.program.slug}-{period_[0]}.csv"'
    writer = csv.writer(response)
    for row in statement_csv_rows(statement):
        writer.writerow(row)
    return response


@require_GET
@partner_required
def portal_statement_print(request, participant_id: int, period: str):
    enrolment, period_, statement = _one_statement(request, participant_id, period)
    if statement is None:
        return _not_found(request)
    return _page(
        request,
        "partners/portal_statement_print.html",
        {"enrolment": enrolment, "period": period_[0], "statement": statement, "movements": statement.movements()},
    )


# --- resources ------------------------------------------------------------------------------------------


@require_GET
@partner_required
def portal_resources(request):
    partner = request.partner
    visible = list(selectors.partner_resources(partner))
    by_category = [
        (label, [r for r in visible if r.category == value])
        for value, label in ResourceCategory.choices
        if any(r.category == value for r in visible)
    ]
    hidden = Resource.objects.for_tenant(partner.tenant_id).filter(is_published=True).count() - len(visible)
    return _page(request, "partners/portal_resources.html", {"by_category": by_category, "hidden": hidden})


@require_GET
@partner_required
def portal_resource_download(request, pk: int):
    """The file (or the video link) of a resource the partner's tier may see; others answer 404. Every
    download is audited. Files stream from the default storage (local, or S3-compatible when configured)."""
    partner = request.partner
    resource = Resource.objects.for_tenant(partner.tenant_id).select_related("min_tier").filter(pk=pk).first()
    if resource is None or not services.resource_visible_to(resource, partner):
        return _not_found(request)
    services.resource_download_record(resource=resource, partner=partner, actor=request.actor)
    if resource.file:
        handle = resource.file.open("rb")
        return FileResponse(handle, as_attachment=True, filename=resource.file.name.rsplit("/", 1)[-1])
    if resource.url:
        return HttpResponseRedirect(resource.url)
    return _not_found(request)


# --- support tickets ------------------------------------------------------------------------------------


class TicketForm(forms.Form):
    subject = forms.CharField(max_length=200)
    body = forms.CharField(max_length=10_000, widget=forms.Textarea(attrs={"rows": 4}), label="Message")


class ReplyForm(forms.Form):
    body = forms.CharField(max_length=10_000, widget=forms.Textarea(attrs={"rows": 4}), label="Reply")


@partner_required
def portal_tickets(request):
    partner = request.partner
    form = TicketForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            ticket = services.ticket_open(partner=partner, actor=request.actor, **form.cleaned_data)
        except ValidationError as error:
            _form_errors(form, error)
        else:
            messages.success(request, f"Ticket #{ticket.pk} opened; the team is told by e-mail.")
            return redirect("portal_ticket_detail", pk=ticket.pk)
    tickets = list(selectors.partner_tickets(partner)[:200])
    dedicated = bool(partner.tier_id and partner.tier.dedicated_support)
    return _page(
        request,
        "partners/portal_tickets.html",
        {"form": form, "tickets": tickets, "dedicated": dedicated},
        status=400 if form.errors else 200,
    )


@partner_required
def portal_ticket_detail(request, pk: int):
    partner = request.partner
    ticket = SupportTicket.objects.for_tenant(partner.tenant_id).filter(partner=partner, pk=pk).first()
    if ticket is None:
        return _not_found(request)
    form = ReplyForm(request.POST or None)
    if request.method == "POST":
        if request.POST.get("close"):
            services.ticket_close(ticket=ticket, actor=request.actor, reason="closed by the partner")
            messages.success(request, "Ticket closed.")
            return redirect("portal_ticket_detail", pk=ticket.pk)
        if form.is_valid():
            try:
                services.ticket_reply(
                    ticket=ticket, body=form.cleaned_data["body"], author_kind=TicketAuthor.PARTNER, actor=request.actor
                )
            except ValidationError as error:
                _form_errors(form, error)
            else:
                return redirect("portal_ticket_detail", pk=ticket.pk)
    return _page(
        request,
        "partners/portal_ticket_detail.html",
        {
            "ticket": ticket,
            "messages_": ticket.messages.all(),
            "form": form,
            "closed": ticket.status == TicketStatus.CLOSED,
        },
        status=400 if form.errors else 200,
    )


# --- profile, team, payouts -----------------------------------------------------------------------------


class ProfileForm(forms.Form):
    name = forms.CharField(max_length=200, label="Company name")
    website = forms.URLField(max_length=300, required=False)
    country = forms.CharField(max_length=2, required=False, help_text="Two-letter code, e.g. DE")
    payout_currency = forms.CharField(max_length=3)


@partner_required
def portal_profile(request):
    partner = request.partner
    form = ProfileForm(
        request.POST or None,
        initial={
            "name": partner.name,
            "website": partner.website,
            "country": partner.country,
            "payout_currency": partner.payout_currency,
        },
    )
    if request.method == "POST" and form.is_valid():
        try:
            services.partner_update(partner=partner, actor=request.actor, **form.cleaned_data)
        except ValidationError as error:
            _form_errors(form, error)
        else:
            messages.success(request, "Profile saved.")
            return redirect("portal_profile")
    commission = COMMISSION_DEFAULTS.get(partner.partner_type, {})
    return _page(
        request,
        "partners/portal_profile.html",
        {
            "form": form,
            "commission_basis": commission.get("basis", ""),
            "tier_history": partner.tier_changes.select_related("from_tier", "to_tier")[:20],
        },
        status=400 if form.errors else 200,
    )


class InviteForm(forms.Form):
    email = forms.EmailField(label="Colleague's e-mail")
    role = forms.ChoiceField(choices=PartnerRole.choices, initial=PartnerRole.MEMBER)


@partner_required
def portal_team(request):
    partner = request.partner
    me = PartnerUser.objects.for_tenant(partner.tenant_id).get(user=request.user)
    form = InviteForm(request.POST or None)
    if request.method == "POST":
        if me.role != PartnerRole.ADMIN:
            messages.error(request, "Only your company's portal admins can invite colleagues.")
            return redirect("portal_team")
        if form.is_valid():
            try:
                services.partner_invitation_create(
                    partner=partner, actor=request.actor, inviter=request.user.email, **form.cleaned_data
                )
            except ValidationError as error:
                _form_errors(form, error)
            else:
                messages.success(request, f"Invitation sent to {form.cleaned_data['email']}.")
                return redirect("portal_team")
    return _page(
        request,
        "partners/portal_team.html",
        {
            "form": form,
            "me": me,
            "members": PartnerUser.objects.for_tenant(partner.tenant_id).filter(partner=partner).select_related("user"),
            "invitations": PartnerInvitation.objects.for_tenant(partner.tenant_id).filter(
                partner=partner, accepted_at__isnull=True, expires_at__gt=timezone.now()
            ),
        },
        status=400 if form.errors else 200,
    )


@partner_required
def portal_payouts(request):
    """Payout set-up: the existing Stripe Connect onboarding link, per program the partner is paid in."""
    partner = request.partner
    enrolments = selectors.partner_enrolments(partner)
    if request.method == "POST":
        enrolment = next((e for e in enrolments if str(e.participant_id) == request.POST.get("participant")), None)
        if enrolment is None:
            return _not_found(request)
        back = settings.SITE_URL + reverse("portal_payouts")
        try:
            url = connect_onboarding_link_create(
                participant=enrolment.participant, actor=request.actor, refresh_url=back, return_url=back
            )
        except Exception as error:
            messages.error(request, f"Payout set-up is not available right now ({type(error).__name__}).")
            return redirect("portal_payouts")
        return HttpResponseRedirect(url)
    profiles = {
        profile.participant_id: profile
        for profile in ParticipantStripeProfile.objects.for_tenant(partner.tenant_id).filter(
            participant_id__in=[e.participant_id for e in enrolments]
        )
    }
    rows = [
        {"enrolment": e, "connected": bool(getattr(profiles.get(e.participant_id), "connected_account_id", ""))}
        for e in enrolments
    ]
    return _page(request, "partners/portal_payouts.html", {"rows": rows})


# --- team invitations (reached by a one-time link) ------------------------------------------------------


class InvitationSignUpForm(forms.Form):
    name = forms.CharField(max_length=150, label="Your name")
    password = forms.CharField(widget=forms.PasswordInput, min_length=10, label="Choose a password")


def portal_invitation(request, token: str):
    invitation = services.partner_invitation_for_token(token)
    if invitation is None or not invitation.is_pending:
        return render(request, "partners/invitation_invalid.html", {"program": None}, status=404)
    form = InvitationSignUpForm(request.POST or None)
    # public_base.html brands the page with ``program.tenant``.
    context = {
        "invitation": invitation,
        "form": form,
        "tenant": invitation.tenant,
        "program": {"tenant": invitation.tenant},
    }
    if request.method == "POST":
        try:
            if request.user.is_authenticated:
                partner_user = services.partner_invitation_accept(token=token, user=request.user)
            elif form.is_valid():
                partner_user = services.partner_invitation_sign_up(
                    token=token, password=form.cleaned_data["password"], name=form.cleaned_data["name"]
                )
                login(request, partner_user.user, backend="django.contrib.auth.backends.ModelBackend")
            else:
                return render(request, "partners/invitation.html", context, status=400)
        except ValidationError as error:
            _form_errors(form, error)
            return render(request, "partners/invitation.html", context, status=400)
        messages.success(request, f"Welcome to the {invitation.tenant.name} partner portal.")
        return redirect("portal_home")
    return _private(render(request, "partners/invitation.html", context))


# --- the public application page ------------------------------------------------------------------------


class ApplicationForm(abuse.HoneypotFormMixin, forms.Form):
    company = forms.CharField(max_length=200)
    website = forms.URLField(max_length=300)
    partner_type = forms.ChoiceField(choices=PartnerType.choices, label="Type of partner")
    country = forms.CharField(max_length=2, required=False, help_text="Two-letter code, e.g. DE")
    contact_name = forms.CharField(max_length=200, label="Your name")
    email = forms.EmailField(label="Work e-mail")
    audience = forms.CharField(max_length=2000, widget=forms.Textarea(attrs={"rows": 3}), label="Who is your audience?")
    expected_volume = forms.CharField(max_length=200, label="Expected deals or leads per quarter")
    terms_accepted = forms.BooleanField(label="I accept the partner terms")


def partner_apply(request, tenant_slug: str, program_slug: str):
    """Public, tenant-branded application to a partner program; rate-limited per address (429 + Retry-After)."""
    program = Program.objects.select_related("tenant").filter(tenant__slug=tenant_slug, slug=program_slug).first()
    if program is not None:
        rls.bind(program.tenant_id)
    if program is None or not services.program_takes_applications(program):
        return _not_found(request)
    terms = services.program_settings(program).terms_text
    form = ApplicationForm(request.POST or None)
    context = {"program": program, "tenant": program.tenant, "form": form, "terms": terms}
    if request.method == "POST":
        retry_after = abuse.public_form_throttle(request, scope="partner_apply", program_id=program.pk)
        if retry_after:
            return abuse.too_many_requests(
                render(request, "partners/apply.html", {**context, "throttled": True}), retry_after
            )
        if form.is_valid():
            try:
                services.application_submit(program=program, **form.cleaned_data)
            except ValidationError as error:
                _form_errors(form, error)
            else:
                return render(request, "partners/apply_done.html", context)
        return render(request, "partners/apply.html", context, status=400)
    return render(request, "partners/apply.html", context)
