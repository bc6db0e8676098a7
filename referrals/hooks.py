"""How referrals serves and reacts to the layer below (registered in ``ReferralsConfig.ready``;
referral_platform/hooks.py): a participant who becomes active gets their links, a removed one loses them,
and programs' pages ask referrals for a participant's share links and QR code."""

from __future__ import annotations

from referral_platform.hooks import hooks


def links_for_active_participant(*, participant, welcome: bool = False) -> None:
    from .services import participant_links_ensure

    participant_links_ensure(participant=participant)


def links_off_for_removed_participant(*, participant) -> None:
    from .services import participant_links_deactivate

    participant_links_deactivate(participant=participant)


def share_links(*, participant) -> list[dict]:
    from .selectors import participant_share_links

    return participant_share_links(participant.tenant_id, participant=participant)


def qr_png(*, participant, box_size: int = 8) -> bytes | None:
    from .selectors import participant_qr_png

    return participant_qr_png(participant.tenant_id, participant=participant, box_size=box_size)


def activity(*, participant) -> list[dict]:
    """Clicks and referrals of a participant, for their admin page (the ``participant_activity`` hook)."""
    from django.urls import reverse

    from .models import Click, Referral

    clicks = Click.objects.for_tenant(participant.tenant_id).filter(participant=participant)
    referrals = Referral.objects.for_tenant(participant.tenant_id).filter(referrer=participant).order_by("-pk")
    return [
        {
            "title": "Clicks",
            "count": clicks.count(),
            "headers": [],
            "rows": [],
            "more_url": reverse("admin:referrals_click_changelist") + f"?participant__id__exact={participant.pk}",
        },
        {
            "title": "Referrals",
            "count": referrals.count(),
            "headers": ["Company", "E-mail", "Status", "Signed up"],
            "rows": [
                [
                    r.referred_company or "—",
                    r.referred_email or "—",
                    r.get_status_display(),
                    f"{r.signed_up_at:%Y-%m-%d}" if r.signed_up_at else "—",
                ]
                for r in referrals[:10]
            ],
            "more_url": reverse("admin:referrals_referral_changelist") + f"?referrer__id__exact={participant.pk}",
        },
    ]


def register() -> None:
    from referral_platform.reconcile import register_sweep

    from .click_buffer import clicks_pending_reclaim
    from .services import conversion_events_requeue_stale

    register_sweep("referrals.conversion_events", conversion_events_requeue_stale)
    register_sweep("referrals.click_stream", clicks_pending_reclaim)
    hooks.register("participant_activated", links_for_active_participant)
    hooks.register("participant_deactivated", links_off_for_removed_participant)
    hooks.register("participant_share_links", share_links)
    hooks.register("participant_qr_png", qr_png)
    hooks.register("participant_activity", activity)
