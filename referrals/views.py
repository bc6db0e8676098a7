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


def _friend_offer(program) -> str:
    """What the friend gets, in words, from the program's current rules ("You get a free month when you subscribe.")."""
    from programs.selectors import program_latest_version
    from programs.terms import program_offer_sentence

    version = program_latest_version(program)
    return program_offer_sentence(program, version.rules, for_friend=True) if version is not None else ""


def _not_found(request):
    return render(request, "referrals/landing_not_found.html", status=404)


@require_http_methods(["GET"])
def referral_landing_hosted(request):
    """The hosted landing page as a program's landing URL (``https://<platform>/join/``): our /r/ redirect
    appends ``ref`` and ``vid``; this sends the visitor on to that code's own page, keeping the visitor id.
    Demo programs use it, so their links land on a page that exists."""
    from django.conf import settings
    from django.shortcuts import redirect
    from django.urls import reverse
    from django.utils.http import urlencode

    code = request.GET.get(settings.REFERRAL_CODE_PARAM, "")
    if not code or len(code) > 32 or not code.replace("-", "").replace("_", "").isalnum():
        return _not_found(request)
    target = reverse("referral_landing", kwargs={"code": code})
    visitor_id = request.GET.get(settings.REFERRAL_VISITOR_PARAM, "")
    return redirect(f"{target}?{urlencode({VISITOR_PARAM: visitor_id[:64]})}" if visitor_id else target)


@require_http_methods(["GET", "POST"])
def referral_landing(request, code: str):
    link = landing_link(code)
    if link is None:
        return _not_found(request)
    referrer = link.participant
    context = {
        "link": link,
        "referrer": referrer,
        "program": link.program,
        "tenant": link.tenant,
        "offer": _friend_offer(link.program),
    }
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
