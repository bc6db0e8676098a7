"""Pages of engagement: the participant's fuller dashboard (signed link, and the short-lived embedded
variant framed by the tenant's product), the leaderboard opt-in, and the inbound Typeform webhook."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging

from django.core.exceptions import ValidationError
from django.http import JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.clickjacking import xframe_options_exempt
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from programs.dashboard_links import participant_for_dashboard_token
from referral_platform.tenancy import rls
from referral_platform.tenancy.actors import actor_for_participant
from referral_platform.tenancy.models import Tenant

from . import selectors
from .dashboard import dashboard_extras, leaderboard_opt_in
from .models import MomentSource, Trigger, TypeformSettings
from .services import embed_token_read, moment_record

logger = logging.getLogger(__name__)


def _private(response):
    response["Cache-Control"] = "private, no-store"
    response["X-Robots-Tag"] = "noindex, nofollow"
    response["Referrer-Policy"] = "no-referrer"
    return response


def _render_dashboard(request, participant, *, token: str, embedded: bool):
    from rewards.selectors import participant_dashboard as dashboard_of

    actor = actor_for_participant(participant)
    dashboard = dashboard_of(actor.tenant, participant=participant)
    context = {
        "dashboard": dashboard,
        "token": token,
        "actor": actor,
        "tenant": actor.tenant,
        "embedded": embedded,
        "extras": dashboard_extras(actor.tenant, participant=participant, dashboard=dashboard),
        "notifications": selectors.participant_notifications(actor.tenant, participant=participant),
    }
    return _private(render(request, "engagement/participant_dashboard.html", context))


@require_GET
def participant_dashboard(request, token: str):
    """The participant's dashboard through their signed link (rewards' dashboard plus engagement's parts:
    the offer in words, progress, more ways to share, clicks, leaderboard and badges, notifications)."""
    participant = participant_for_dashboard_token(token)
    if participant is None:
        return render(request, "404.html", status=404)
    return _render_dashboard(request, participant, token=token, embedded=False)


@require_http_methods(["GET", "POST"])
def participant_leaderboard(request, token: str):
    """The participant opts in to (or out of) the leaderboard from their dashboard (POST). A GET — the
    address typed, bookmarked or reloaded — shows the dashboard's leaderboard, changing nothing."""
    participant = participant_for_dashboard_token(token)
    if participant is None:
        return render(request, "404.html", status=404)
    if request.method == "GET":
        return redirect(reverse("participant_dashboard", kwargs={"token": token}) + "#leaderboard")
    leaderboard_opt_in(participant=participant, on_leaderboard=request.POST.get("on_leaderboard") == "1")
    return redirect("participant_dashboard", token=token)


def frame_ancestors(tenant: Tenant) -> str:
    """CSP frame-ancestors from the tenant's allowed domains ('.acme.com' allows its sub-domains too)."""
    sources = ["'self'"]
    for domain in tenant.allowed_landing_domains or []:
        domain = domain.strip().lower()
        if not domain or any(char in domain for char in " ;,'\""):
            continue
        if domain.startswith("."):
            sources += [f"https://{domain[1:]}", f"https://*{domain}"]
        else:
            sources.append(f"https://{domain}")
    return "frame-ancestors " + " ".join(dict.fromkeys(sources))


@require_GET
@xframe_options_exempt
def embedded_dashboard(request, token: str):
    """The dashboard through a short-lived signed URL from the API, for the tenant's product to frame.
    Expired, tampered or revoked tokens: 403. Framing only from the tenant's allowed domains (CSP)."""
    participant = embed_token_read(token)
    if participant is None:
        return _private(render(request, "engagement/embed_expired.html", status=403))
    from programs.dashboard_links import dashboard_token

    response = _render_dashboard(request, participant, token=dashboard_token(participant), embedded=True)
    response["Content-Security-Policy"] = frame_ancestors(participant.tenant)
    return response


# --- inbound Typeform webhook -------------------------------------------------------------------


def typeform_signature_ok(secret: str, body: bytes, header: str) -> bool:
    expected = "sha256=" + base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
    return bool(header) and hmac.compare_digest(expected, header)


def typeform_fields(payload: dict, settings_row: TypeformSettings) -> dict:
    """The NPS response in a Typeform ``form_response`` payload; ValidationError naming what is missing."""
    response = payload.get("form_response") if isinstance(payload, dict) else None
    if not isinstance(response, dict):
        raise ValidationError({"form_response": "Missing."})
    hidden = response.get("hidden") or {}
    score, email, comment = None, hidden.get("email", ""), ""
    for answer in response.get("answers") or []:
        field = answer.get("field") or {}
        ref, kind = field.get("ref", ""), field.get("type", "")
        if score is None and (
            ref == settings_row.score_field_ref
            or (not settings_row.score_field_ref and kind in {"opinion_scale", "nps"})
        ):
            score = answer.get("number")
        elif answer.get("type") == "email" and (
            not settings_row.email_field_ref or ref == settings_row.email_field_ref
        ):
            email = answer.get("email", email)
        elif answer.get("type") == "text" and not comment:
            comment = answer.get("text", "")
    return {
        "external_id": response.get("token"),
        "customer_external_id": hidden.get("customer_id") or hidden.get("customer_external_id") or email,
        "email": email,
        "score": score,
        "occurred_at": response.get("submitted_at") or "",
        "name": hidden.get("name", ""),
        "comment": comment,
    }


@csrf_exempt
@require_POST
def typeform_webhook(request, tenant_slug: str):
    """A Typeform response, verified by its ``Typeform-Signature`` (HMAC-SHA256 of the body with the
    workspace's secret), stored raw and processed like an API response. Bad signature or unknown
    workspace: 400 and nothing written (the same answer, so slugs cannot be probed)."""
    tenant = Tenant.objects.filter(slug=tenant_slug).first()
    if tenant is not None:
        rls.bind(tenant.pk)
    settings_row = TypeformSettings.objects.for_tenant(tenant).first() if tenant else None
    if settings_row is None or not typeform_signature_ok(
        settings_row.secret, request.body, request.headers.get("Typeform-Signature", "")
    ):
        return JsonResponse(
            {"error": {"status": 400, "code": "invalid_webhook", "message": "Bad signature."}}, status=400
        )
    try:
        payload = json.loads(request.body)
        fields = typeform_fields(payload, settings_row)
        recorded = moment_record(
            tenant=tenant,
            raw=payload,
            source=MomentSource.TYPEFORM,
            program=settings_row.program,
            trigger=Trigger.NPS,
            **fields,
        )
    except (ValueError, ValidationError) as error:
        fields_errors = getattr(error, "message_dict", {"body": ["Not JSON."]})
        field, messages = next(iter(fields_errors.items()))
        return JsonResponse(
            {
                "error": {
                    "status": 400,
                    "code": "invalid",
                    "message": f"{field}: {messages[0]}",
                    "fields": fields_errors,
                }
            },
            status=400,
        )
    return JsonResponse({"received": True, "id": recorded.moment.pk, "created": recorded.created})
