"""Pages of rewards: the Stripe webhook endpoint (one URL per tenant, verified with that tenant's signing
secret) and the participant's dashboard reached through a signed link."""

from __future__ import annotations

import logging

from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from referral_platform.tenancy.models import Tenant

from .webhooks import WebhookRejected, webhook_receive

logger = logging.getLogger(__name__)


def webhook_answer(tenant_slug: str, body: bytes, signature: str) -> tuple[int, dict]:
    """The webhook door's answer (this view and the WSGI door, rewards/door.py): stored raw, then handled by a
    drain. Bad signature, stale timestamp or unknown workspace: 400 and nothing written (an unknown workspace
    answers like a bad signature, so slugs cannot be probed)."""
    try:
        event = webhook_receive(tenant_slug=tenant_slug, payload=body, signature=signature)
    except (Tenant.DoesNotExist, WebhookRejected) as error:
        logger.info("stripe webhook for %r rejected: %s", tenant_slug, error)
        message = "Webhook signature verification failed."
        return 400, {"error": {"status": 400, "code": "invalid_webhook", "message": message}}
    return 200, {"received": True, "id": event.stripe_event_id}


@csrf_exempt
@require_POST
def stripe_webhook(request, tenant_slug: str):
    """The Stripe webhook endpoint (normally answered one level higher, by the WSGI door: rewards/door.py)."""
    status, answer = webhook_answer(tenant_slug, request.body, request.headers.get("Stripe-Signature", ""))
    return JsonResponse(answer, status=status)


# --- the participant's dashboard (signed link) ---------------------------------------------------


def _dashboard_participant(token: str):
    """The participant and their actor for a dashboard token, or (None, None) for a bad one."""
    from programs.dashboard_links import participant_for_dashboard_token
    from referral_platform.tenancy.actors import actor_for_participant

    participant = participant_for_dashboard_token(token)
    if participant is None:
        return None, None
    return participant, actor_for_participant(participant)


def _private(response):
    # The URL is the credential: never cached by shared caches, never indexed, never sent as a referer.
    response["Cache-Control"] = "private, no-store"
    response["X-Robots-Tag"] = "noindex, nofollow"
    response["Referrer-Policy"] = "no-referrer"
    return response


def _offer(program) -> str:
    """The program's offer in words, from its current rules (programs.terms.program_offer_sentence)."""
    from programs.selectors import program_latest_version
    from programs.terms import program_offer_sentence

    version = program_latest_version(program)
    return program_offer_sentence(program, version.rules) if version is not None else ""


@require_GET
def participant_dashboard(request, token: str):
    """A participant's own dashboard, reached through their signed link (programs/dashboard_links.py):
    share in three steps (copy the link, a ready e-mail, LinkedIn / X), their referrals with their stage,
    their rewards with status and amounts, and their messages. A tampered, revoked or foreign token: 404."""
    from django.shortcuts import render

    from .selectors import participant_dashboard as dashboard_of

    participant, actor = _dashboard_participant(token)
    if participant is None:
        return render(request, "404.html", status=404)
    dashboard = dashboard_of(actor.tenant, participant=participant)
    response = render(
        request,
        "rewards/participant_dashboard.html",
        {
            "dashboard": dashboard,
            "token": token,
            "actor": actor,
            "tenant": actor.tenant,
            "offer": _offer(participant.program),
        },
    )
    return _private(response)


@require_GET
def participant_dashboard_qr(request, token: str):
    """The PNG QR code of the participant's QR link, for their dashboard (same token rules)."""
    from django.http import HttpResponse
    from django.shortcuts import render

    from referrals.selectors import participant_qr_png

    participant, actor = _dashboard_participant(token)
    png = participant_qr_png(actor.tenant, participant=participant) if participant is not None else None
    if png is None:
        return render(request, "404.html", status=404)
    return _private(HttpResponse(png, content_type="image/png"))
