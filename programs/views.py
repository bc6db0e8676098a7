"""Public, participant-facing pages of a program: its terms and its application form."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError
from django.http import Http404
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt

from . import selectors, services
from .models import ProgramAccess, ProgramStatus
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


class ApplicationForm(forms.Form):
    name = forms.CharField(max_length=200)
    email = forms.EmailField()
    company = forms.CharField(max_length=200, required=False)
    note = forms.CharField(
        label="Why do you want to join?", max_length=2000, required=False, widget=forms.Textarea(attrs={"rows": 4})
    )
    accept_terms = forms.BooleanField(label="I have read the program terms")


def program_apply_page(request, tenant_slug: str, program_slug: str):
    """Apply to join: gated programs put the applicant in review, open ones enrol at once (links by e-mail)."""
    program = _public_program(tenant_slug, program_slug)
    if program.status != ProgramStatus.ACTIVE or program.access == ProgramAccess.INVITE_ONLY:
        raise Http404("This program takes no applications")
    form = ApplicationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            enrolment = services.participant_apply(
                program=program, name=data["name"], email=data["email"], company=data["company"], note=data["note"]
            )
        except ValidationError as exc:
            for field_name, messages in exc.message_dict.items():
                form.add_error(field_name if field_name in form.fields else None, messages)
        else:
            return render(
                request,
                "programs/apply_done.html",
                {"program": program, "status": enrolment.participant.status if enrolment.created else "known"},
            )
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
