"""Writes for referral links and referrals."""

from __future__ import annotations

import secrets

from django.db import IntegrityError, transaction

from programs.models import Participant

from .models import Channel, ReferralLink

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
