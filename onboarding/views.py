"""The getting-started page of a workspace: the checklist with its progress, the tracking snippet and
copy-paste server examples with the workspace's own ids."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import render
from django.templatetags.static import static

from programs.models import Program
from rewards.stripe_api import stripe_keys_verify

from .selectors import onboarding_steps


@login_required
def onboarding_page(request):
    """Only the session's own workspace (request.actor.tenant); a user without one is refused."""
    actor = request.actor
    tenant = actor.tenant
    if tenant is None or actor.kind != "member":
        raise PermissionDenied
    # "Test the keys" on the Stripe step: one read call to Stripe, the answer shown in words.
    stripe_check = None
    if request.method == "POST" and "verify_stripe" in request.POST:
        stripe_check = stripe_keys_verify(tenant=tenant)
    steps = onboarding_steps(tenant)
    program = Program.objects.for_tenant(tenant).order_by("pk").first()
    site = settings.SITE_URL
    context = {
        "tenant": tenant,
        "steps": steps,
        "done": sum(step.done for step in steps),
        "total": len(steps),
        "percent": round(100 * sum(step.done for step in steps) / len(steps)),
        "program": program,
        "snippet_url": site + static("tracking/rp.js"),
        "cookie_days": program.cookie_window_days if program else 90,
        "api_base": site + "/api/v1",
        "stripe_check": stripe_check,
    }
    return render(request, "onboarding/checklist.html", context)
