"""Attribution: the credit of each event, decided at the referral's establishment."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from programs.services import program_current_version
from referral_platform.db.sql import rows_insert
from referral_platform.tenancy.actors import system_actor
from referral_platform.tenancy.services import audit_record
from referrals import attribution as attribution_math
from referrals.models import (
    Attribution,
    Channel,
    ConversionEvent,
    Referral,
    ReferralLink,
    ReferralStatus,
)
from referrals.selectors import (
    IdentityCluster,
    referral_credit,
)


@transaction.atomic
def attribution_run(
    *,
    event: ConversionEvent,
    referral: Referral | None = None,
    walked: IdentityCluster | None = None,
    first: bool = False,
    insert_later: list | None = None,
) -> list[Attribution]:
    """(Re)compute the attribution of one event and store one row per credited participant.

    The credit is decided at the referral's establishment (``Referral.established_at``: its sign-up or
    earliest event): only touchpoints up to that moment and within the cookie window before it count,
    so every event of a referral — a payment a year later too — is credited the same way, and touches
    after the sign-up never move it. The referral's referrer is kept equal to the participant credited
    most (``_referrer_agree``).

    Idempotent: the event row is locked, rows are updated in place (stable ids) and rows of
    participants no longer credited are deleted, so running it twice, or concurrently, leaves one
    set of rows with the same values. Shares sum to exactly 1, amounts to exactly the event's
    amount (split from the exact shares). The model, window and half-life come from the referral's
    rule version. Callers tell the higher layers through ``hooks.conversion_processed``.

    ``referral``: the caller already holds ``event`` locked in this transaction and passes the event's
    referral as it stands now (conversion processing, which matched it): neither is read again. ``walked``:
    the event's identity cluster as conversion processing walked it in this transaction (``referral_credit``).
    ``first``: the event is being processed from ``received`` (conversion processing): it has no rows yet
    (rows are written only here, and an event goes back to ``received`` only from ``unattributed`` without a
    referral, whose rows this function deleted), so none is read and its rows are inserted in one statement;
    a row that did exist would be refused by the one-row-per-participant constraint, never doubled.
    ``insert_later`` (with ``first``): the new rows are appended to this list, unsaved, for the caller to insert
    with its next statement (conversion processing writes them with the event's outcome: ``outcome_write``).
    """
    if referral is None:
        # Lock first, read relations after: a locking SELECT that waited for another transaction
        # re-checks only the locked row, so columns joined in the same statement could be stale.
        event = ConversionEvent.objects.for_tenant(event.tenant_id).select_for_update().get(pk=event.pk)
        referral = event.referral
    tenant = event.tenant
    existing = (
        {}
        if first
        else {row.participant_id: row for row in Attribution.objects.for_tenant(tenant).filter(conversion_event=event)}
    )
    if referral is None or referral.status == ReferralStatus.REJECTED:
        if not first:
            Attribution.objects.for_tenant(tenant).filter(conversion_event=event).delete()
        return []
    program = referral.program
    version = referral.rule_version or program_current_version(program=program)
    decision = referral_credit(
        referral,
        extra_identity={
            "visitor_id": event.visitor_id,
            "email": event.email,
            "customer_external_id": event.customer_external_id,
        },
        walked=walked,
    )
    model, anchor, window_start, credited = decision.model, decision.anchor, decision.window_start, decision.credited
    result = decision.result
    _referrer_agree(referral=referral, credit=result, model=model)
    order = list(result.participant_shares)
    amounts = dict(
        zip(
            order,
            attribution_math.split_amount(event.amount_minor, [result.participant_exact[pid] for pid in order]),
            strict=True,
        )
    )
    credited_json = [
        {**touch.as_json(), "share": str(share)} for touch, share in zip(credited, result.touch_shares, strict=True)
    ]
    evidence = {
        "model": model,
        "rule_version": version.number,
        "conversion": {
            "id": event.pk,
            "external_event_id": event.external_event_id,
            "kind": event.kind,
            "occurred_at": event.occurred_at.isoformat(),
            "amount_minor": event.amount_minor,
            "currency": event.currency,
        },
        "established_at": anchor.isoformat(),
        "cookie_window_days": decision.cookie_window_days,
        "window_start": window_start.isoformat(),
        "half_life_days": decision.half_life_days,
        "identity": decision.cluster.as_json(),
        "sequence": credited_json,
        "uncredited": [touch.as_json() for touch in decision.in_window if touch.participant_id is None],
        "excluded_before_window": [touch.as_json() for touch in decision.sequence if touch.occurred_at < window_start],
    }
    now = timezone.now()
    rows, new_rows = [], []
    for participant_id, share in result.participant_shares.items():
        values = {
            "referral": referral,
            "program": program,
            "rule_version": version,
            "model": model,
            "share": share,
            "exact_share": attribution_math.fraction_text(result.participant_exact[participant_id]),
            "amount_minor": amounts[participant_id],
            "currency": event.currency,
            "touchpoints": [item for item in credited_json if item["participant"] == participant_id],
            "evidence": evidence,
            "computed_at": now,
        }
        row = existing.pop(participant_id, None)
        if row is None:
            row = Attribution(tenant=tenant, conversion_event=event, participant_id=participant_id, **values)
            new_rows.append(row)
        else:
            for name, value in values.items():
                setattr(row, name, value)
            row.save(update_fields=list(values))
        rows.append(row)
    if new_rows and first and insert_later is not None:
        insert_later.extend(new_rows)
    elif new_rows:
        rows_insert(new_rows)  # one INSERT for every newly credited participant
    if existing:
        Attribution.objects.for_tenant(tenant).filter(pk__in=[row.pk for row in existing.values()]).delete()
    return rows


def _referrer_agree(*, referral: Referral, credit: attribution_math.Credit, model: str) -> None:
    """The referral's referrer is a participant its program's model credits most (first touch: the
    first clicker), so "who referred them" and "who is paid" never disagree. A referrer of record whose
    share equals the largest stays; audited when it changes."""
    participant_id = credit.top_participant
    if participant_id is None or participant_id == referral.referrer_id:
        return
    exact = credit.participant_exact
    if referral.referrer_id in exact and exact[referral.referrer_id] >= exact.get(participant_id, 0):
        return
    locked = Referral.objects.for_tenant(referral.tenant_id).select_for_update().get(pk=referral.pk)
    if locked.referrer_id == participant_id:
        return
    previous = locked.referrer_id
    link = (
        ReferralLink.objects.for_tenant(referral.tenant_id)
        .filter(participant_id=participant_id, channel=Channel.DIRECT)
        .first()
    )
    locked.referrer_id = participant_id
    locked.link = link
    locked.save(update_fields=["referrer", "link"])
    referral.referrer_id, referral.link = participant_id, link
    audit_record(
        tenant=locked.tenant,
        actor=system_actor(locked.tenant),
        action="referral.referrer_credited",
        obj=locked,
        from_state=locked.status,
        to_state=locked.status,
        reason=f"The program's attribution model ({model}) credits participant #{participant_id} most.",
        data={"from": previous, "to": participant_id},
    )
