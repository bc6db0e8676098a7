"""A year of plausible history for the demo workspace, so every analytics chart tells a story:
growth over the year, a rule change (richer rewards from day 200: more referrers share, more convert),
a summer dip and a year-end dip. Bulk inserts (no services: history is facts, not events to process),
then the rollups are rebuilt from it.

Historic rewards are written as paid rows for the analytics only: they have no ledger entries, so the
ledger and the participants' balances describe only what the demo's services did.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

from programs.models import Participant, Program, ProgramKind, ProgramVersion
from referrals.models import (
    Attribution,
    Channel,
    Click,
    ConversionEvent,
    ConversionEventStatus,
    ConversionKind,
    Referral,
    ReferralLink,
    ReferralSource,
    ReferralStatus,
)
from referrals.services import new_referral_code
from rewards.models import Reward, RewardStatus

CHANNEL_WEIGHTS = [
    (Channel.EMAIL, 35),
    (Channel.SOCIAL, 25),
    (Channel.IN_APP, 20),
    (Channel.DIRECT, 15),
    (Channel.QR, 5),
]
HISTORY_PREFIX = "hist-"
EXTRA_REFERRERS = 36
RULE_CHANGE_DAY = 200  # days after the history starts


def _season(day: datetime) -> float:
    """Summer (August) and year-end dips."""
    if day.month == 8:
        return 0.55
    if day.month == 12 and day.day >= 18:
        return 0.6
    return 1.0


def _extra_people(tenant, program: Program, count: int, rng: random.Random) -> list[Participant]:
    first = ["Alex", "Sam", "Jo", "Kim", "Lee", "Max", "Noa", "Ola", "Pat", "Ray", "Sky", "Tea"]
    last = ["Berg", "Costa", "Dahl", "Eze", "Fox", "Gallo", "Holm", "Ito", "Jung", "Kaur", "Lund", "Moss"]
    people = [
        Participant(
            tenant=tenant,
            program=program,
            external_id=f"hist_{program.slug}_{index}",
            name=f"{rng.choice(first)} {rng.choice(last)}",
            email=f"hist{index}.{program.slug}@customers.example",
            company=f"Customer {index} Ltd",
            source="import",
        )
        for index in range(count)
    ]
    Participant.objects.bulk_create(people)
    links = [
        ReferralLink(tenant=tenant, program=program, participant=person, code=new_referral_code(), channel=channel)
        for person in people
        for channel, _ in CHANNEL_WEIGHTS
    ]
    ReferralLink.objects.bulk_create(links)
    return people


def seed_history(tenant, *, days: int = 365, scale: float = 1.0, progress=None, seed: int = 2026) -> dict:
    """Write ``days`` of history for ``tenant`` (idempotent: nothing when it is there already)."""
    if Click.objects.for_tenant(tenant).filter(stream_id__startswith=HISTORY_PREFIX).exists():
        return {"skipped": True}
    rng = random.Random(seed)
    programs = {program.kind: program for program in Program.objects.for_tenant(tenant)}
    customer_program = programs.get(ProgramKind.CUSTOMER)
    if customer_program is None:
        return {"skipped": True}
    _extra_people(tenant, customer_program, EXTRA_REFERRERS, rng)
    links = list(ReferralLink.objects.for_tenant(tenant).select_related("participant", "program"))
    by_channel: dict[str, list[ReferralLink]] = {}
    for link in links:
        by_channel.setdefault(link.channel, []).append(link)
    # A few referrers refer a lot (Zipf-like weights), as in every program.
    weights = {link.participant_id: 1 / (1 + (rank % 40)) ** 1.1 for rank, link in enumerate(links)}
    versions = {
        version.program_id: version
        for version in ProgramVersion.objects.for_tenant(tenant).order_by("program_id", "number")
    }
    currencies = {program.pk: program.currency for program in programs.values()}
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = today - timedelta(days=days)
    clicks: list[Click] = []
    referrals: list[Referral] = []
    counter = 0
    for offset in range(days):
        day = start + timedelta(days=offset)
        growth = 0.45 + 0.9 * offset / days  # the program grows through the year
        richer = offset >= RULE_CHANGE_DAY
        volume = 120 * scale * growth * _season(day) * (1.25 if richer else 1.0)
        count = max(0, int(rng.gauss(volume, math.sqrt(max(volume, 1)))))
        for _ in range(count):
            counter += 1
            channel = rng.choices([c for c, _ in CHANNEL_WEIGHTS], [w for _, w in CHANNEL_WEIGHTS])[0]
            pool = by_channel.get(channel) or links
            link = rng.choices(pool, [weights[item.participant_id] for item in pool])[0]
            at = day + timedelta(seconds=rng.randrange(86_400))
            clicks.append(
                Click(
                    tenant=tenant,
                    link=link,
                    program_id=link.program_id,
                    participant_id=link.participant_id,
                    stream_id=f"{HISTORY_PREFIX}{counter}",
                    visitor_id=f"h{counter:09d}",
                    channel=link.channel,
                    utm={"utm_source": link.channel},
                    occurred_at=at,
                )
            )
            signup_rate = 0.07 if link.channel in (Channel.EMAIL, Channel.IN_APP) else 0.045
            if rng.random() >= signup_rate:
                continue
            signed_up = at + timedelta(hours=rng.randrange(1, 72))
            referral = Referral(
                tenant=tenant,
                program_id=link.program_id,
                referrer_id=link.participant_id,
                link=link,
                visitor_id=f"h{counter:09d}",
                referred_email=f"lead{counter}@history{counter % 997}.example",
                referred_company=f"Prospect {counter}",
                referred_external_id=f"{HISTORY_PREFIX}{counter}",
                source=ReferralSource.LANDING_FORM,
                status=ReferralStatus.SIGNED_UP,
                rule_version=versions.get(link.program_id),
                clicked_at=at,
                signed_up_at=signed_up,
                established_at=signed_up,
                created_at=signed_up,
                fraud_screened_at=signed_up,
            )
            if rng.random() < 0.45:
                referral.qualified_at = signed_up + timedelta(days=rng.randrange(2, 12))
                referral.status = ReferralStatus.QUALIFIED
                if rng.random() < (0.62 if richer else 0.48):
                    referral.converted_at = referral.qualified_at + timedelta(days=rng.randrange(5, 45))
                    referral.status = ReferralStatus.CONVERTED
            elif rng.random() < 0.1:
                referral.rejected_at = signed_up + timedelta(days=rng.randrange(1, 6))
                referral.status = ReferralStatus.REJECTED
            for field in ("qualified_at", "converted_at", "rejected_at"):
                value = getattr(referral, field)
                if value is not None and value > today:
                    setattr(referral, field, None)
            if referral.status == ReferralStatus.CONVERTED and referral.converted_at is None:
                referral.status = ReferralStatus.QUALIFIED if referral.qualified_at else ReferralStatus.SIGNED_UP
            if referral.status == ReferralStatus.QUALIFIED and referral.qualified_at is None:
                referral.status = ReferralStatus.SIGNED_UP
            if referral.status == ReferralStatus.REJECTED and referral.rejected_at is None:
                referral.status = ReferralStatus.SIGNED_UP
            referrals.append(referral)
        if progress:
            progress(offset + 1, days)
    Click.objects.bulk_create(clicks, batch_size=5_000)
    Referral.objects.bulk_create(referrals, batch_size=2_000)
    converted = [referral for referral in referrals if referral.converted_at]
    events, rewards = [], []
    for referral in converted:
        amount = rng.choice([1_200_00, 2_400_00, 4_800_00, 9_600_00])
        events.append(
            ConversionEvent(
                tenant=tenant,
                external_event_id=f"{HISTORY_PREFIX}pay-{referral.pk}",
                kind=ConversionKind.PAYMENT,
                amount_minor=amount,
                currency=currencies.get(referral.program_id, tenant.default_currency),
                occurred_at=referral.converted_at,
                email=referral.referred_email,
                referral=referral,
                raw={"history": True},
                source="history",
                status=ConversionEventStatus.PROCESSED,
                received_at=referral.converted_at,
                processed_at=referral.converted_at,
            )
        )
    ConversionEvent.objects.bulk_create(events, batch_size=2_000)
    attributions = [
        Attribution(
            tenant=tenant,
            conversion_event=event,
            referral=event.referral,
            program_id=event.referral.program_id,
            participant_id=event.referral.referrer_id,
            rule_version=event.referral.rule_version,
            model="last_touch",
            share=1,
            exact_share="1/1",
            amount_minor=event.amount_minor,
            currency=event.currency,
            evidence={"history": True},
        )
        for event in events
    ]
    Attribution.objects.bulk_create(attributions, batch_size=2_000)
    for event in events:
        referral = event.referral
        richer = referral.converted_at >= start + timedelta(days=RULE_CHANGE_DAY)
        amount = 75_00 if richer else 50_00
        # Paid (never approved-but-unpaid: the payout run would try to pay rows without ledger entries).
        paid_at = min(
            referral.converted_at + timedelta(days=rng.randrange(2, 14), hours=rng.randrange(24)),
            datetime.now(UTC) - timedelta(hours=1),
        )
        paid = True
        rewards.append(
            Reward(
                tenant=tenant,
                program_id=referral.program_id,
                participant_id=referral.referrer_id,
                amount_minor=amount,
                currency=event.currency,
                status=RewardStatus.PAID if paid else RewardStatus.APPROVED,
                hold_until=referral.converted_at,
                explanation={"history": True},
                explanation_text="Demo history (analytics only, no ledger entries).",
                source_key=f"{HISTORY_PREFIX}{referral.pk}",
                slot_key=f"ref:{referral.pk}:referrer:{referral.referrer_id}:history:0:conversion",
                conversion_event=event,
                referral=referral,
                converted_at=referral.converted_at,
                approved_at=referral.converted_at,
                paid_at=paid_at if paid else None,
                time_to_reward=(paid_at - referral.converted_at) if paid else None,
                created_at=referral.converted_at,
            )
        )
    Reward.objects.bulk_create(rewards, batch_size=2_000)
    return {"clicks": len(clicks), "referrals": len(referrals), "customers": len(converted), "rewards": len(rewards)}
