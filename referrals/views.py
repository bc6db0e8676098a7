"""Public pages of referrals: the referred company's landing page with its lead form.

The landing page lives at ``/join/<code>/``: the referral code alone identifies the link, hence
the referrer, program and tenant (codes are unique across tenants). A program's landing URL can
point here, or the tenant can host its own page and report sign-ups through the API. The visitor
id comes from the ``vid`` query parameter (appended by the /r/ redirect) or the visitor cookie.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.shortcuts import render
from django.views.decorators.http import require_http_methods

from referral_platform import abuse

from .forms import LandingLeadForm
from .selectors import landing_link
from .services import landing_lead_submit

VISITOR_PARAM = "vid"
VISITOR_COOKIE = "rp_vid"


def _not_found(request):
    return render(request, "referrals/landing_not_found.html", status=404)


@require_http_methods(["GET", "POST"])
def referral_landing(request, code: str):
    link = landing_link(code)
    if link is None:
        return _not_found(request)
    referrer = link.participant
    context = {"link": link, "referrer": referrer, "program": link.program, "tenant": link.tenant}
    if request.method == "POST":
        # Beyond the address's or the program's limit the lead is refused (429), not stored.
        retry_after = abuse.public_form_throttle(request, scope="landing_lead", program_id=link.program_id)
        if retry_after:
            page = render(
                request,
                "referrals/landing.html",
                {**context, "form": abuse.throttled_form(LandingLeadForm(request.POST))},
            )
            return abuse.too_many_requests(page, retry_after)
        form = LandingLeadForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            try:
                referral = landing_lead_submit(
                    link=link,
                    name=data["name"],
                    email=data["email"],
                    company=data["company"],
                    company_size=data["company_size"],
                    how_did_you_hear=data["how_did_you_hear"],
                    visitor_id=data["visitor_id"],
                )
            except ValidationError as exc:
                for field, messages in exc.message_dict.items():
                    form.add_error(field if field in form.fields else None, messages)
            else:
                return render(request, "referrals/landing_thanks.html", {**context, "referral": referral})
        return render(request, "referrals/landing.html", {**context, "form": form}, status=400)
    visitor_id = request.GET.get(VISITOR_PARAM) or request.COOKIES.get(VISITOR_COOKIE) or ""
    form = LandingLeadForm(
        initial={
            "visitor_id": visitor_id[:64],
            "how_did_you_hear": f"{referrer.name}" + (f" from {referrer.company}" if referrer.company else ""),
        }
    )
    return render(request, "referrals/landing.html", {**context, "form": form})
