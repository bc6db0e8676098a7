"""Referral links: one per participant and channel, with an unguessable code."""

from __future__ import annotations

import secrets

from django.db import IntegrityError, transaction

from programs.models import Participant, ParticipantStatus
from referrals.models import (
    Channel,
    ReferralLink,
)

CODE_BYTES = 9  # 72 bits: unguessable, 12 URL-safe characters


def new_referral_code() -> str:
    return secrets.token_urlsafe(CODE_BYTES)


@transaction.atomic
def referral_link_create(*, participant: Participant, channel: str = Channel.DIRECT) -> ReferralLink:
    """The participant's link for ``channel`` (created once, with a fresh unguessable code)."""
    existing = (
        ReferralLink.objects.for_tenant(participant.tenant_id).filter(participant=participant, channel=channel).first()
    )
    if existing:
        return existing
    for _ in range(5):
        try:
            with transaction.atomic():
                return ReferralLink.objects.create(
                    tenant_id=participant.tenant_id,
                    program_id=participant.program_id,
                    participant=participant,
                    channel=channel,
                    code=new_referral_code(),
                )
        except IntegrityError:
            existing = (
                ReferralLink.objects.for_tenant(participant.tenant_id)
                .filter(participant=participant, channel=channel)
                .first()
            )
            if existing:
                return existing
    raise RuntimeError("could not allocate a unique referral code")


@transaction.atomic
def participant_links_ensure(*, participant: Participant, welcome: bool = False) -> None:
    """An active participant has one active link per channel (email, social, in-app, QR, direct): the
    referrals side of the ``participant_activated`` hook."""
    if participant.status != ParticipantStatus.ACTIVE:
        return
    mine = ReferralLink.objects.for_tenant(participant.tenant_id).filter(participant=participant)
    have = set(mine.values_list("channel", flat=True))
    missing = [channel for channel in Channel.values if channel not in have]
    if missing:
        # One INSERT for every missing channel instead of a SELECT + savepoint + INSERT per channel (the
        # cost that dominated an invitation). A clash — a concurrent ensure for the same participant, or a
        # code already taken — skips that row; those channels go through the per-link path with its retries.
        ReferralLink.objects.bulk_create(
            [
                ReferralLink(
                    tenant_id=participant.tenant_id,
                    program_id=participant.program_id,
                    participant=participant,
                    channel=channel,
                    code=new_referral_code(),
                )
                for channel in missing
            ],
            ignore_conflicts=True,  # ON CONFLICT DO NOTHING: no error, so no savepoint needed
        )
        created = set(mine.filter(channel__in=missing).values_list("channel", flat=True))
        for channel in missing:
            if channel not in created:
                referral_link_create(participant=participant, channel=channel)
    ReferralLink.objects.for_tenant(participant.tenant_id).filter(participant=participant, is_active=False).update(
        is_active=True
    )


def participant_links_deactivate(*, participant: Participant) -> int:
    """A removed participant's links stop working (``participant_deactivated``); their referrals stay."""
    return (
        ReferralLink.objects.for_tenant(participant.tenant_id)
        .filter(participant=participant, is_active=True)
        .update(is_active=False)
    )
