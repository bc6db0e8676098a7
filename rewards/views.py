"""The Stripe webhook endpoint: one URL per tenant, verified with that tenant's signing secret."""

from __future__ import annotations

import logging

from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from referral_platform.tenancy.models import Tenant

from .webhooks import WebhookRejected, webhook_receive

logger = logging.getLogger(__name__)


def _rejected(message: str) -> JsonResponse:
    return JsonResponse({"error": {"status": 400, "code": "invalid_webhook", "message": message}}, status=400)


@csrf_exempt
@require_POST
def stripe_webhook(request, tenant_slug: str):
    """Stored raw, then handled by a task. Bad signature, stale timestamp or unknown workspace: 400 and
    nothing written (an unknown workspace answers like a bad signature, so slugs cannot be probed)."""
    try:
        event = webhook_receive(
            tenant_slug=tenant_slug, payload=request.body, signature=request.headers.get("Stripe-Signature", "")
        )
    except (Tenant.DoesNotExist, WebhookRejected) as error:
        logger.info("stripe webhook for %r rejected: %s", tenant_slug, error)
        return _rejected("Webhook signature verification failed.")
    return JsonResponse({"received": True, "id": event.stripe_event_id})
