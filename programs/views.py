"""Public, participant-facing pages of a program: its terms and its application form."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.csrf import csrf_exempt

from referral_platform import abuse

from . import selectors, services
from .models import ProgramAccess, ProgramKind, ProgramStatus
from .terms import render_terms


def _public_program(tenant_slug: str, program_slug: str):
    program = selectors.program_public_get(tenant_slug=tenant_slug, program_slug=program_slug)
    if program is None:
        raise Http404("No such program")
    return program


def program_terms_page(request, tenant_slug: str, program_slug: str):
    """The program's current terms in plain language; 404 for draft, archived or unknown programs."""
    program = _public_program(tenant_slug, program_slug)
    terms = render_terms(program, selectors.program_latest_version(program))
    can_apply = program.status == ProgramStatus.ACTIVE and program.access != ProgramAccess.INVITE_ONLY
    return render(request, "programs/terms_public.html", {"program": program, "terms": terms, "can_apply": can_apply})


# Their public application is the partners app's (/partners/<tenant>/<program>/apply/).
PARTNER_KINDS = (ProgramKind.PARTNER, ProgramKind.RESELLER)


class ApplicationForm(abuse.HoneypotFormMixin, forms.Form):
    name = forms.CharField(max_length=200)
    email = forms.EmailField()
    company = forms.CharField(max_length=200, required=False)
    note = forms.CharField(
        label="Why do you want to join?", max_length=2000, required=False, widget=forms.Textarea(attrs={"rows": 4})
    )
    accept_terms = forms.BooleanField(label="I have read the program terms")


def _takes_applications(program) -> bool:
    return program.status == ProgramStatus.ACTIVE and program.access != ProgramAccess.INVITE_ONLY


def program_apply_page(request, tenant_slug: str, program_slug: str):
    """Apply to join. Nothing is stored until the applicant confirms their address from the one e-mail the
    form sends (it carries no text they typed); then gated programs put them in review and open ones enrol
    them (links, welcome). Partner and reseller programs have their own application (the partners app).
    Rate-limited per address and per program (429 + Retry-After), with a honeypot field."""
    program = _public_program(tenant_slug, program_slug)
    if not _takes_applications(program):
        raise Http404("This program takes no applications")
    if program.kind in PARTNER_KINDS:
        return redirect("partner_apply", tenant_slug=tenant_slug, program_slug=program_slug)
    if request.method == "POST":
        retry_after = abuse.public_form_throttle(request, scope="program_apply", program_id=program.pk)
        if retry_after:
            form = abuse.throttled_form(ApplicationForm(request.POST))
            page = render(request, "programs/apply.html", {"program": program, "form": form})
            return abuse.too_many_requests(page, retry_after)
    form = ApplicationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            services.participant_application_request(
                program=program, name=data["name"], email=data["email"], company=data["company"], note=data["note"]
            )
        except ValidationError as exc:
            for field_name, messages in exc.message_dict.items():
                form.add_error(field_name if field_name in form.fields else None, messages)
        else:
            return render(request, "programs/apply_done.html", {"program": program, "status": "confirm"})
    return render(request, "programs/apply.html", {"program": program, "form": form})


@csrf_exempt  # RFC 8058 one-click: mail clients POST "List-Unsubscribe=One-Click" without a CSRF token
def email_unsubscribe(request, token: str):
    """The unsubscribe link of every e-mail: GET asks to confirm (link scanners must not unsubscribe anyone),
    POST unsubscribes (the one-click POST of mail clients, or the button). A tampered token: 404."""
    from .mailing import email_opt_out, unsubscribe_token_read

    found = unsubscribe_token_read(token)
    if found is None:
        raise Http404("Unknown unsubscribe link")
    tenant_id, email = found
    if request.method == "POST":
        one_click = request.POST.get("List-Unsubscribe") == "One-Click"
        email_opt_out(tenant_id=tenant_id, email=email, source="one_click" if one_click else "link")
        return render(request, "programs/unsubscribed.html", {"email": email, "done": True})
    return render(request, "programs/unsubscribed.html", {"email": email, "done": False})


def program_apply_confirm_page(request, tenant_slug: str, program_slug: str, token: str):
    """The link of the confirmation e-mail: GET shows a button (mail scanners that open links confirm
    nothing), POST confirms and applies for real."""
    program = _public_program(tenant_slug, program_slug)
    pending = _takes_applications(program) and services.participant_application_pending(program=program, token=token)
    if not pending:
        return render(request, "programs/apply_confirm.html", {"program": program, "expired": True}, status=404)
    if request.method == "POST":
        enrolment = services.participant_application_confirm(program=program, token=token)
        if enrolment is None:
            return render(request, "programs/apply_confirm.html", {"program": program, "expired": True}, status=404)
        status = enrolment.participant.status if enrolment.created else "known"
        return render(request, "programs/apply_done.html", {"program": program, "status": status})
    return render(request, "programs/apply_confirm.html", {"program": program})
