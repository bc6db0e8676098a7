"""Set-based settlement (issue 15; docs/throughput.md "Set-based settlement").

``referrals_settle_sets(referral_ids=…)`` settles many referrals with a fixed number of statements per
chunk instead of ~70 per referral. Per chunk (``chunk_size()`` referrals, one transaction):

reads, each ONE statement for the whole chunk
    the referrals (locked, id order, ``SKIP LOCKED``: one another worker holds is left for the
    per-referral path), their settled events, their rewards (current ones and every slot's revisions),
    the credited participants (locked, id order, as the per-referral path locks them), the referred
    companies' participants, the referrers' rewarded referrals in the counting periods (caps and tiers),
    the attributions, the refunds and the Stripe charges of the payments;
decisions
    ``rewards.evaluation._evaluate`` for each referral, in conversion order — the SAME code the
    per-referral path runs, answered from those sets (``BatchReads``); a reward created for an earlier
    referral of the chunk counts at once for the later ones' caps and tiers;
writes, each ONE statement for the whole chunk
    the rewards, the reductions (one guarded UPDATE), their audit rows, the ledger's accrual and reversal
    transactions and their entries (and the ledger accounts used for the first time), the participant
    messages, the evaluation rows.

What a settlement decides by CREATING rewards, re-describing matching ones, REDUCING live, unpaid
rewards for a partial refund (``_reduction_of``: a reversal from pending / payable that leaves the reward
live, as ``reward_reduce_for_refund`` writes it) and TAKING BACK whole rewards not paid nor in a payout
(``_withdrawal``: a reward no longer earned — a cap another referral now fills — withdrawn and retired; one
whose money changed — a tier moved — withdrawn, retired and replaced; one a full refund or the cancellation
policy reverses; as ``ev._reconcile`` does through ``reward_reduce_for_refund`` and ``ev._retire``) is settled
here. A referral whose settlement must claw back a paid reward, withdraw a reward it has just created, or
create one ``reward_create`` would refuse, is returned in ``left`` and settled by the per-referral path
(``referral_rewards_settle``), unchanged. A reward the chunk reduces, reverses or retires is written only if
it is still as the chunk read it (same status, reductions, current, and no payout; another transaction may
approve or pay a reward without the referral's lock): otherwise the whole chunk is rolled back and left to that
path, which locks each reward. So every guarantee of docs/ledger.md holds as it did: the
referral and participant locks are the same, the slot and source keys are the same (one current reward
per slot, unique source keys), the ledger's idempotency keys and triggers are the same, and what a
referral earns is computed by the same function from the same set of events.

A referral whose evaluation raises is left to the per-referral path, which records it ``failed`` with
its reason; a failure while writing rolls the whole chunk back and leaves all of it to that path. A
transient database error (``OperationalError``) is raised: the task retries, and nothing of the chunk
was committed.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from copy import copy
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, OperationalError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from programs import rules as rules_module
from programs.models import Participant
from programs.services import referred_company_row
from referral_platform.celery import enqueue_on_commit
from referral_platform.db.sql import keys_in, rows_insert, rows_update
from referral_platform.hooks import hooks
from referral_platform.money import format_money
from referral_platform.tenancy.actors import system_actor
from referral_platform.tenancy.services import audit_row
from referrals.models import Attribution, ConversionEvent, ConversionKind, Referral
from referrals.selectors import referral_credits

from . import evaluation as ev
from . import messages
from .ledger import Line, Posting, ledger_accounts_many, ledger_post_many
from .models import AccountKind, BeneficiarySide, EntryKind, Reward, RewardEvaluation, RewardStatus, StripeCharge
from .services import (
    REDUCTION_CLAWBACK,
    REDUCTION_NONE,
    REDUCTION_REVERSAL,
    REDUCTION_WITHDRAW_ITEM,
    RefundReduction,
    refund_reduction,
    reversal_source,
    reward_create_errors,
    reward_row,
)

logger = logging.getLogger(__name__)

FAR_FUTURE = datetime(9999, 1, 1, tzinfo=UTC)


def chunk_size() -> int:
    """How many referrals one settlement transaction takes (``settings.SETTLEMENT_CHUNK``; 50 until issue 15's
    nineteenth session, now 200 as a Stripe drain's chunk: a drain's referrals settled in one transaction;
    validated where the environment is read: ``env_int``)."""
    return settings.SETTLEMENT_CHUNK


class RewardMoved(Exception):
    """A reward the chunk reduces was changed by another transaction after the chunk read it."""


@dataclass
class SetOutcome:
    """{referral id: evaluation status} of the referrals settled here; the ones left to the per-referral path."""

    settled: dict[int, str] = field(default_factory=dict)
    left: list[int] = field(default_factory=list)


def referrals_settle_sets(*, referral_ids: Iterable[int], now: datetime | None = None) -> SetOutcome:
    """Settle what can be settled set-based, chunk by chunk (see the module docstring). A referral another
    transaction held (``SKIP LOCKED``: the other worker processing or settling it) is tried once more,
    set-based, after the batch's other chunks — the other transaction has usually committed by then — and
    only then left to the per-referral path, which waits for its lock."""
    outcome = SetOutcome()
    held: list[int] = []
    _settle_chunks(sorted(set(referral_ids)), now=now, outcome=outcome, held=held)
    if held:
        _settle_chunks(sorted(held), now=now, outcome=outcome, held=None)
    return outcome


def _settle_chunks(ids: list[int], *, now: datetime | None, outcome: SetOutcome, held: list[int] | None) -> None:
    """``_settle_chunk`` of each chunk of ``ids``; what it did not settle is left to the per-referral path,
    except the referrals it could not lock, kept in ``held`` when given."""
    size = chunk_size()
    for start in range(0, len(ids), size):
        chunk = ids[start : start + size]
        unlocked: list[int] = []
        try:
            settled = _settle_chunk(chunk, now=now, unlocked=unlocked)
        except OperationalError:
            raise
        except RewardMoved as moved:  # the chunk rolled back: the per-referral path locks each reward
            logger.info("set-based settlement: %s; settling the chunk's %d referrals one by one", moved, len(chunk))
            settled, unlocked = {}, []
        except Exception:  # the chunk rolled back: the per-referral path settles (and isolates) each
            logger.exception("set-based settlement of %d referrals failed; settling them one by one", len(chunk))
            settled, unlocked = {}, []
        outcome.settled.update(settled)
        unlocked_ids = set(unlocked) if held is not None else set()
        held_now = [rid for rid in chunk if rid not in settled and rid in unlocked_ids]
        if held is not None:
            held.extend(held_now)
        outcome.left.extend(rid for rid in chunk if rid not in settled and rid not in unlocked_ids)


class BatchReads(ev.SettlementReads):
    """``SettlementReads`` answered from sets read once for the chunk."""

    def __init__(self, *, tenant_id: int, referrals: list[Referral]):
        self.tenant_id = tenant_id
        ids = [referral.pk for referral in referrals]
        self._events: dict[int, list[ConversionEvent]] = defaultdict(list)
        for event in ConversionEvent.objects.for_tenant(tenant_id).filter(
            referral_id__in=ids, status__in=ev.SETTLED_STATUSES
        ):
            self._events[event.referral_id].append(event)
        for events in self._events.values():
            events.sort(key=lambda e: (e.occurred_at, e.external_event_id))
        self._current: dict[int, dict[str, Reward]] = defaultdict(dict)
        self._revisions: dict[str, int] = defaultdict(int)
        self.referrer_participants: dict[int, set[int]] = defaultdict(set)
        for reward in (
            Reward.objects.for_tenant(tenant_id).filter(referral_id__in=ids).exclude(slot_key="").order_by("pk")
        ):
            self._revisions[reward.slot_key] += 1
            if reward.is_current:
                self._current[reward.referral_id][reward.slot_key] = reward
            if reward.beneficiary_side == BeneficiarySide.REFERRER:
                self.referrer_participants[reward.referral_id].add(reward.participant_id)
        self._credits: dict[int, object] = {}
        self._participants: dict[int, Participant] = {}
        self._referred: dict[int, Participant] = {}
        self._rewarded: dict[int, dict[int, datetime]] = defaultdict(dict)
        self._attributions: dict[int, dict[tuple[int, int], int]] = defaultdict(dict)
        self._refunds: list[ConversionEvent] = []
        self._charges: dict[int, StripeCharge] = {}
        self.broken: set[int] = set()

    # -- what the chunk reads after the referral rows -------------------------------------------------
    def read_credits(self, referrals: list[Referral]) -> set[int]:
        """Each referral's credit (identity clusters and touchpoints read for the whole chunk at once,
        ``referral_credits``); the participant ids involved. A referral whose credit cannot be computed is
        left to the per-referral path (``broken``)."""
        wanted: set[int] = set()
        for referral, credit in zip(referrals, referral_credits(referrals), strict=True):
            if isinstance(credit, OperationalError):
                raise credit
            if isinstance(credit, Exception):
                logger.error(
                    "referral %s: credit failed; left to the per-referral settlement",
                    referral.pk,
                    exc_info=(type(credit), credit, credit.__traceback__),
                )
                self.broken.add(referral.pk)
                continue
            result = credit.result
            self._credits[referral.pk] = result
            wanted |= set(result.participant_exact) | {referral.referrer_id}
        return wanted

    def lock_participants(self, ids: set[int], referrals: list[Referral]) -> None:
        """The credited participants, locked in id order (as ``SettlementReads.participants`` does per referral)."""
        programs = {referral.program_id: referral.program for referral in referrals}
        tenant = referrals[0].tenant
        for participant in (
            Participant.objects.for_tenant(self.tenant_id)
            .select_for_update(of=("self",), no_key=True)
            .filter(pk__in=sorted(ids))
            .order_by("pk")
        ):
            _known_relations(participant, tenant, programs)
            self._participants[participant.pk] = participant

    def read_referred(self, referrals: list[Referral], actor) -> None:
        """The referred companies' participants (double-sided rules): found by customer id, else e-mail, as
        ``participant_for_referred_company`` finds them (one query for all); a missing one is created by it."""
        wanted = {}
        for referral in referrals:
            rule_set = _rule_set(referral)
            if rule_set is not None and rule_set.referred:
                wanted[referral.pk] = referral
        if not wanted:
            return
        by_program_external: dict[tuple[int, str], Participant] = {}
        by_program_email: dict[tuple[int, str], Participant] = {}
        externals, emails = [], []
        for referral in wanted.values():
            externals.append((referral.program_id, (referral.referred_external_id or f"referred-{referral.pk}")[:200]))
            if referral.referred_email:
                emails.append((referral.program_id, referral.referred_email))
        condition = Q(keys_in(Participant, ("program", "external_id"), externals)) | Q(
            keys_in(Participant, ("program", "email"), emails)
        )
        tenant = referrals[0].tenant
        programs = {referral.program_id: referral.program for referral in referrals}
        for participant in Participant.objects.for_tenant(self.tenant_id).filter(condition).order_by("-pk"):
            _known_relations(participant, tenant, programs)
            by_program_external[(participant.program_id, participant.external_id)] = participant
            by_program_email[(participant.program_id, participant.email)] = participant  # lowest pk wins
        missing: dict[tuple[int, str], list[Referral]] = defaultdict(list)
        for rid, referral in wanted.items():
            external = (referral.referred_external_id or f"referred-{referral.pk}")[:200]
            found = by_program_external.get((referral.program_id, external))
            if found is None and referral.referred_email:
                found = by_program_email.get((referral.program_id, referral.referred_email))
            if found is None:
                missing[(referral.program_id, external)].append(referral)
            else:
                self._referred[rid] = found
        for referral, participant in _referred_companies_create(tenant, actor, missing):
            _known_relations(participant, tenant, programs)
            self._referred[referral.pk] = participant

    def read_counters(self, referrals: list[Referral], now: datetime) -> None:
        """The participants' rewarded referrals (a current, live referrer reward) converted within the widest
        counting period any referral of the chunk may count in: one query."""
        moments = [now]
        for referral in referrals:
            moments += [t for t in (referral.signed_up_at, referral.qualified_at, referral.converted_at) if t]
            moments += [event.occurred_at for event in self._events.get(referral.pk, ())]
        low = ev.period_bounds(min(moments), "year")[0]
        high = ev.period_bounds(max(moments) + timedelta(days=1), "year")[1]  # the evaluation's clock is later
        rows = (
            Reward.objects.for_tenant(self.tenant_id)
            .filter(ev.LIVE, beneficiary_side=BeneficiarySide.REFERRER, is_current=True)
            .filter(participant_id__in=sorted(self._participants))
            .filter(referral__converted_at__gte=low, referral__converted_at__lt=high)
            .values_list("participant_id", "referral_id", "referral__converted_at")
            .distinct()
        )
        for participant_id, referral_id, converted_at in rows:
            self._rewarded[participant_id][referral_id] = converted_at

    def read_money(self, referrals: list[Referral]) -> None:
        """Attributions, the refunds that may refund the chunk's payments, and their Stripe charges."""
        ids = [referral.pk for referral in referrals]
        for pk, event_id, participant_id, referral_id in (
            Attribution.objects.for_tenant(self.tenant_id)
            .filter(referral_id__in=ids)
            .values_list("pk", "conversion_event_id", "participant_id", "referral_id")
        ):
            self._attributions[referral_id][(event_id, participant_id)] = pk
        payments = [e for rid in ids for e in self._events.get(rid, ()) if e.kind == ConversionKind.PAYMENT]
        if not payments:
            return
        names = [payment.external_event_id for payment in payments]
        self._refunds = list(
            ConversionEvent.objects.for_tenant(self.tenant_id)
            .filter(kind=ConversionKind.REFUND, status__in=ev.SETTLED_STATUSES)
            .filter(Q(referral_id__in=ids) | Q(raw__refunded_event_id__in=names))
        )
        self._charges = {  # locked, as the per-referral path reads them (CHARGE LOCK in rewards.evaluation)
            charge.conversion_event_id: charge
            for charge in StripeCharge.objects.for_tenant(self.tenant_id)
            .filter(conversion_event_id__in=[payment.pk for payment in payments])
            .select_for_update(of=("self",), no_key=True)
            .order_by("pk")
        }

    # -- SettlementReads ------------------------------------------------------------------------------
    def events(self, referral):
        return list(self._events.get(referral.pk, ()))

    def current(self, referral):
        return dict(self._current.get(referral.pk, {}))

    def credit(self, referral):
        return self._credits[referral.pk]

    def participants(self, referral, ids):
        return {pid: self._participants[pid] for pid in ids if pid in self._participants}

    def referred(self, referral, actor):
        return self._referred[referral.pk]

    def previous(self, *, participant, referral, period, at):
        """``previous_successful_referrals`` over the rows read once, plus the rewards the chunk created."""
        start, end = ev.period_bounds(at, period)
        mine = (referral.converted_at or at, referral.pk)
        return sum(
            1
            for rid, converted_at in self._rewarded.get(participant.pk, {}).items()
            if rid != referral.pk and converted_at is not None and start <= converted_at < end
            if (converted_at, rid) < mine
        )

    def attribution_ids(self, referral):
        return self._attributions.get(referral.pk, {})

    def refund_of(self, payment):
        refunded = sum(
            refund.amount_minor for refund in self._refunds if self.refunded_payment_id(refund) == payment.pk
        )
        return ev.refund_with_charge(min(refunded, payment.amount_minor), payment, self._charges.get(payment.pk))

    def revision(self, slot, tenant_id):
        return self._revisions[slot] + 1

    # -- helpers ------------------------------------------------------------------------------------
    def refunded_payment_id(self, refund: ConversionEvent) -> int | bool | None:
        """``refunded_payment(refund).pk`` when the payment is one of the chunk's; None when it is known to be
        none at all; False when it is a payment outside the chunk (or unknown here)."""
        raw = refund.raw if isinstance(refund.raw, dict) else {}
        named = str(raw.get("refunded_event_id") or "").strip()
        if named:
            for events in self._events.values():
                for event in events:
                    if event.kind == ConversionKind.PAYMENT and event.external_event_id == named:
                        return event.pk
            return False
        if refund.referral_id is None:
            return None
        if refund.referral_id not in self._events and refund.referral_id not in self._current:
            return False
        earlier = [
            event
            for event in self._events.get(refund.referral_id, ())
            if event.kind == ConversionKind.PAYMENT and event.occurred_at <= refund.occurred_at
        ]
        if not earlier:
            return None
        return max(earlier, key=lambda e: (e.occurred_at, e.external_event_id)).pk

    def recount_rewarded(self, plan: _Plan) -> None:
        """What the chunk's later referrals count of this one (``previous``): the participants holding a live,
        current referrer reward for it once its plan is written (rewards created count at once, rewards
        withdrawn or retired stop counting)."""
        referral = plan.referral
        before = _live_referrers(plan.evaluation.current.values())
        after = _live_referrers(_rewards_after(plan)) | {
            target.participant.pk
            for target, _fields, _reduce_by in plan.creates
            if target.side == BeneficiarySide.REFERRER
        }
        for participant_id in before - after:
            self._rewarded.get(participant_id, {}).pop(referral.pk, None)
        if referral.converted_at is not None:
            for participant_id in after:
                self._rewarded[participant_id][referral.pk] = referral.converted_at


def _referred_companies_create(tenant, actor, missing: dict[tuple[int, str], list[Referral]]):
    """The referred companies not found, created as ``participant_for_referred_company`` creates them (same
    row, same audit), with one INSERT and one audit INSERT; the referrals sharing a company share its row.
    A row another transaction created meanwhile (the INSERT fails): each is found or created by the service."""
    if not missing:
        return []
    firsts = [referrals[0] for referrals in missing.values()]
    rows = []
    for referral in firsts:
        fields = ev.referred_company_fields(referral)
        fields.pop("data")
        rows.append(referred_company_row(**fields))
    try:
        with transaction.atomic():
            created = rows_insert(rows)
            rows_insert(
                audit_row(
                    tenant=tenant,
                    actor=actor,
                    action="participant.created_for_referred_company",
                    obj=participant,
                    to_state=participant.status,
                    data={"referral": referral.pk},
                )
                for referral, participant in zip(firsts, created, strict=True)
            )
    except IntegrityError:
        created = [ev.referred_participant(referral=referral, actor=actor) for referral in firsts]
    return [
        (referral, participant)
        for referrals, participant in zip(missing.values(), created, strict=True)
        for referral in referrals
    ]


def _known_relations(participant: Participant, tenant, programs: dict) -> None:
    """Fill the participant's tenant and program from rows already read (no lazy look-ups later)."""
    if participant.tenant_id == tenant.pk:
        participant.tenant = tenant
    if participant.program_id in programs:
        participant.program = programs[participant.program_id]


def _rule_set(referral: Referral) -> rules_module.RuleSet | None:
    """The referral's parsed rules (None: unreadable), parsed once per version: versions never change."""
    version = referral.rule_version
    if version is None:
        return None
    try:
        return rules_module.version_rules(version)  # parsed once per version (programs.rules)
    except rules_module.RulesError:
        return None


@dataclass
class _Withdrawal:
    """A reward the settlement takes back whole and/or retires, as ``ev._withdraw`` + ``ev._retire`` (or
    ``ev._reduce``'s full reduction) write it: ``after`` is the reward as it will be (a copy; the reward as
    read stays as it was). ``plan`` is ``refund_reduction``'s decision for a live reward (None: not live —
    nothing to take back, only retired)."""

    read: Reward
    after: Reward
    plan: RefundReduction | None
    refunded: int
    paid: int
    reason: str
    retire: bool

    @property
    def reverses(self) -> bool:
        return self.after.status != self.read.status


@dataclass
class _Plan:
    referral: Referral
    evaluation: ev._Evaluation
    creates: list[tuple[ev._Target, dict, int]]  # (target, the fields of its reward, its refund reduction)
    describes: list[tuple[Reward, dict]]  # (a matching reward, its description's changes: ev._describe)
    reduces: list[tuple[Reward, ev._Target, int]]  # (a live reward as read, its target, the reduction to add)
    withdraws: list[_Withdrawal] = field(default_factory=list)  # rewards reversed whole and/or retired


def _settle_chunk(ids: list[int], *, now: datetime | None, unlocked: list[int] | None = None) -> dict[int, str]:
    """Settle the chunk's referrals that the set path settles, in one transaction; returns their statuses.
    ``unlocked`` receives the ids it did not lock (held by another transaction, or unknown)."""
    now_or_clock = now or timezone.now()
    with transaction.atomic():
        referrals = list(
            Referral.objects.select_for_update(of=("self",), skip_locked=True)
            .select_related("program", "referrer", "rule_version", "tenant")
            .filter(pk__in=ids)
            .order_by("pk")
        )
        if unlocked is not None:
            locked = {referral.pk for referral in referrals}
            unlocked.extend(rid for rid in ids if rid not in locked)
        by_tenant: dict[int, list[Referral]] = defaultdict(list)
        for referral in referrals:
            by_tenant[referral.tenant_id].append(referral)
        settled: dict[int, str] = {}
        for tenant_id, group in by_tenant.items():
            settled.update(_settle_group(tenant_id, group, now=now, clock=now_or_clock))
        return settled


def _settle_group(tenant_id: int, referrals: list[Referral], *, now: datetime | None, clock: datetime):
    tenant = referrals[0].tenant
    for referral in referrals:
        referral.tenant = tenant  # one Tenant object for the group
    actor = system_actor(tenant)
    reads = BatchReads(tenant_id=tenant_id, referrals=referrals)
    # What the evaluation of a referral that is neither held nor refused reads (its rules must parse: an
    # unreadable version is left to the per-referral path, which records the failure).
    judged = [r for r in referrals if r.review_status != ev.ReviewStatus.FLAGGED and not _refused(r) and _rule_set(r)]
    wanted = reads.read_credits(judged)
    reads.lock_participants(wanted, referrals)
    reads.read_referred([r for r in judged if r.pk not in reads.broken], actor)
    reads.read_counters(referrals, clock)
    reads.read_money(referrals)
    judged_ids = {r.pk for r in judged} - reads.broken

    plans: list[_Plan] = []
    for referral in sorted(referrals, key=lambda r: (r.converted_at or FAR_FUTURE, r.pk)):
        held_or_refused = referral.review_status == ev.ReviewStatus.FLAGGED or _refused(referral)
        if not held_or_refused and referral.pk not in judged_ids:
            continue
        try:
            evaluation = ev._evaluate(referral=referral, actor=actor, reads=reads)
            found = _creations(referral, evaluation, reads)
        except OperationalError:
            raise
        except Exception:
            logger.exception("referral %s: left to the per-referral settlement", referral.pk)
            continue
        if found is None:
            continue
        creates, describes, reduces, withdraws = found
        plan = _Plan(referral, evaluation, creates, describes, reduces, withdraws)
        plans.append(plan)
        reads.recount_rewarded(plan)
    _write(
        tenant,
        actor,
        plans,
        reads,
        now=now,
        clock=clock,
        left={r.pk for r in referrals} - {p.referral.pk for p in plans},
    )
    return {plan.referral.pk: plan.evaluation.settlement.status for plan in plans}


def _rewards_after(plan: _Plan) -> list[Reward]:
    """The referral's current rewards as they will be once its plan is written (withdrawn and retired ones
    changed; the rewards it creates not included)."""
    after = {withdrawal.read.pk: withdrawal.after for withdrawal in plan.withdraws}
    return [after.get(reward.pk, reward) for reward in plan.evaluation.current.values()]


def _live_referrers(rewards: Iterable[Reward]) -> set[int]:
    return {
        reward.participant_id
        for reward in rewards
        if reward.beneficiary_side == BeneficiarySide.REFERRER and ev._is_live(reward) and reward.is_current
    }


def _refused(referral: Referral) -> bool:
    return referral.review_status == ev.ReviewStatus.REJECTED or referral.status == ev.ReferralStatus.REJECTED


def _reduction_of(reward: Reward, target) -> int | None:
    """What ``reward_reduce_for_refund`` adds to a live reward's reductions for ``target``'s refund (the same
    decision, ``refund_reduction``) when that is a reversal leaving the reward live (0: nothing to add); None
    when it is anything else — a clawback, an item withdrawn whole, nothing left (the reward reversed: a change
    of status, ``_withdrawal``)."""
    refunded, paid = target.refund
    plan = refund_reduction(reward, refunded_minor=refunded, paid_minor=paid)
    if plan.kind == REDUCTION_NONE:
        return 0
    if plan.kind != REDUCTION_REVERSAL or plan.leaves_nothing:
        return None
    return plan.delta


def _withdrawal(reward: Reward, *, refunded: int, paid: int, reason: str, retire: bool) -> _Withdrawal | None:
    """``reward_reduce_for_refund(refunded, paid)`` of a reward (``ev._withdraw``: 1 of 1, all of it), then its
    retirement when ``retire`` (``ev._retire``), as a plan: the reward as it will be. A reward that is not live
    is only retired (``_withdraw`` skips it). None when taking it back is a clawback (paid, in a payout or
    clawed back already: the per-referral path, which locks the reward, settles that)."""
    after = copy(reward)
    if retire:
        after.is_current = False
    if not ev._is_live(reward):
        return _Withdrawal(reward, after, None, refunded, paid, reason, retire)
    if reward.status == RewardStatus.PAID or reward.payout_id is not None or reward.clawed_back_minor:
        return None
    plan = refund_reduction(reward, refunded_minor=refunded, paid_minor=paid)
    if plan.kind == REDUCTION_CLAWBACK or (plan.kind == REDUCTION_REVERSAL and not plan.leaves_nothing):
        return None  # a clawback; a reduction that leaves the reward live is a ``reduces`` entry, not this
    if plan.kind == REDUCTION_WITHDRAW_ITEM:
        after.status = RewardStatus.REVERSED
    elif plan.kind == REDUCTION_REVERSAL:
        after.status = RewardStatus.REVERSED
        after.reversed_minor += plan.delta
    return _Withdrawal(reward, after, plan, refunded, paid, reason, retire)


def _creations(referral: Referral, evaluation: ev._Evaluation, reads: BatchReads):
    """What settling needs when it is new rewards, new descriptions of matching rewards, partial refunds'
    reductions of live rewards and rewards taken back whole before payout (withdrawn, corrected, reversed by a
    full refund or the cancellation policy): ((target, reward fields, reduction) to create, (reward,
    description changes) to write, (reward, target, reduction) to reduce, withdrawals); None when it needs
    anything else (a clawback, a new reward withdrawn at once, one ``reward_create`` refuses), so the
    per-referral path settles it. The decisions are ``ev._reconcile``'s, slot by slot."""
    if evaluation.blocked:
        return [], [], [], []
    current, targets, frozen = evaluation.current, evaluation.targets, evaluation.frozen
    creates, describes, reduces, withdraws = [], [], [], []
    for slot in sorted(set(current) | set(targets)):
        reward, target = current.get(slot), targets.get(slot)
        if reward is not None and target is None and reward.participant_id in frozen:
            continue
        if target is None:  # withdrawn and retired
            withdrawal = _withdrawal(reward, refunded=1, paid=1, reason=ev.NO_LONGER_EARNED, retire=True)
            if withdrawal is None:
                return None
            withdraws.append(withdrawal)
            continue
        if reward is not None:
            if reward.status == RewardStatus.REJECTED and not ev._money_differs(reward, target):
                continue
            if ev._money_differs(reward, target) or ev._over_reduced(reward, target):  # corrected: replaced
                withdrawal = _withdrawal(reward, refunded=1, paid=1, reason=ev.CORRECTED, retire=True)
                if withdrawal is None:
                    return None
                withdraws.append(withdrawal)
                reward = None
        if reward is not None:
            reduce_by = 0
            changes = ev._description_changes(reward, target)
            if ev._is_live(reward):
                if target.withdraws(reward):  # withdrawn by the cancellation policy
                    withdrawal = _withdrawal(reward, refunded=1, paid=1, reason="cancellation", retire=False)
                    if withdrawal is None:
                        return None
                    withdraws.append(withdrawal)
                elif target.refund[0] > 0:
                    reduce_by = _reduction_of(reward, target)
                    if reduce_by is None:  # a full reduction: reversed (or a clawback: None)
                        refunded, paid = target.refund
                        withdrawal = _withdrawal(reward, refunded=refunded, paid=paid, reason="refund", retire=False)
                        if withdrawal is None:
                            return None
                        withdraws.append(withdrawal)
                        reduce_by = 0
            if changes and withdraws and withdraws[-1].read is reward:
                withdraws[-1].after.__dict__.update(changes)  # described anew, then reversed: as it will be
            if changes:
                describes.append((reward, changes))  # the same money, described anew (ev._describe)
            if reduce_by:
                reduces.append((reward, target, reduce_by))
            continue
        if ev._nothing_to_pay(target, evaluation.settlement.notes):
            continue
        if target.withdraws(None):
            return None  # created, then withdrawn
        fields = ev._reward_fields(referral, target, revision=reads.revision(slot, referral.tenant_id))
        errors = reward_create_errors(
            **{
                name: fields[name]
                for name in (
                    "tenant",
                    "program",
                    "participant",
                    "amount_minor",
                    "source_key",
                    "kind",
                    "beneficiary_side",
                    "conversion_event",
                    "referral",
                    "earned_on",
                )
            },
            currency=fields["currency"].upper(),
            coupon_percent_off=fields.get("coupon_percent_off"),
        )
        if errors:
            return None  # reward_create refuses: the per-referral path records why
        reduce_by = 0
        if target.refund[0] > 0:  # created, then reduced (as _reconcile reduces what it just created)
            reduce_by = _reduction_of(Reward(amount_minor=fields["amount_minor"]), target)  # new: pending, unpaid
            if reduce_by is None:
                return None
        creates.append((target, fields, reduce_by))
    return creates, describes, reduces, withdraws


def _write(
    tenant, actor, plans: list[_Plan], reads: BatchReads, *, now: datetime | None, clock: datetime, left: set[int]
) -> None:
    rows: list[Reward] = []
    owners: list[tuple[_Plan, ev._Target, int]] = []
    for plan in plans:
        for target, fields, reduce_by in plan.creates:
            fields = {name: value for name, value in fields.items() if name != "earned_on"}
            fields["currency"] = fields["currency"].upper()
            rows.append(reward_row(**fields, now=clock))
            owners.append((plan, target, reduce_by))
    # The rewards taken back and retired first: a corrected slot's new reward is its only current one.
    withdrawn = _withdraw_many(tenant, actor, [(plan, w) for plan in plans for w in plan.withdraws], reads)
    created = rows_insert(rows)
    reductions: list[tuple[_Plan, Reward, ev._Target, int]] = []
    for (plan, target, reduce_by), reward in zip(owners, created, strict=True):
        plan.evaluation.settlement.created.append(reward)
        if reduce_by:
            reductions.append((plan, reward, target, reduce_by))
    for plan in plans:
        reductions += [(plan, reward, target, reduce_by) for reward, target, reduce_by in plan.reduces]
    audits = [
        audit_row(tenant=tenant, actor=actor, action="reward.created", obj=reward, to_state=reward.status)
        for reward in created
    ]
    for reward in created:
        hooks.reward_changed(reward=reward, change="created")
    _describe_many([described for plan in plans for described in plan.describes])
    reduced = _reduce_many(tenant, reductions, reads) + withdrawn
    audits += [audit_row(tenant=tenant, actor=actor, **fields) for _reward, _delta, fields in reduced]
    if audits:
        rows_insert(audits)
    _post(tenant, created, reduced)
    # As the per-referral path sends them: the reductions' messages while reconciling, then the announcements
    # (worded from the rewards as created: ``_reconcile`` reduces a copy it re-reads under lock).
    specs = [
        messages.reward_reduced_spec(
            reward=reward,
            reduced_by_minor=delta,
            total_reduction_minor=fields["data"]["total_reduction_minor"] if fields["data"] else 0,
            reason=fields["reason"],
        )
        for reward, delta, fields in reduced
    ]
    for plan in plans:
        if plan.evaluation.blocked:
            continue
        ev._nothing_granted_note(plan.evaluation)
        specs += ev._announcements(referral=plan.referral, created=plan.evaluation.settlement.created)
    messages.participant_messages_send_many(specs)
    for reward, _delta, fields in reduced:
        if fields["action"] == "reward.reduced":  # a withdrawal's hooks were told when it was written
            hooks.reward_changed(reward=reward, change="reduced")
    _record(tenant.pk, plans, reads)
    _settle_later(tenant.pk, plans, reads, left=left)
    del now


def _describe_many(describes: list[tuple[Reward, dict]]) -> None:
    """``ev._describe`` of every matching reward whose description changes: one statement per set of changed
    columns, writing only those (no ledger line moves)."""
    by_columns: dict[tuple[str, ...], list[Reward]] = defaultdict(list)
    for reward, changes in describes:
        for name, value in changes.items():
            setattr(reward, name, value)
        by_columns[tuple(sorted(changes))].append(reward)
    for columns, rewards in by_columns.items():
        fields = ["conversion_event" if name == "conversion_event_id" else name for name in columns]
        rows_update(rewards, fields, connection)


_REDUCE_SQL = """
UPDATE rewards_reward AS r SET reversed_minor = v.reversed_minor
FROM UNNEST(%s::bigint[], %s::bigint[], %s::bigint[], %s::text[]) AS v(id, reversed_minor, was, status)
WHERE r.id = v.id AND r.tenant_id = %s AND r.reversed_minor = v.was AND r.status = v.status
  AND r.clawed_back_minor = 0 AND r.payout_id IS NULL
RETURNING r.id
"""


def _reduce_many(tenant, reductions: list[tuple[_Plan, Reward, ev._Target, int]], reads: BatchReads):
    """The partial refunds' reductions (``_reduction_of``), written as ``reward_reduce_for_refund`` writes
    them when the reward stays live: the new ``reversed_minor`` of each with ONE UPDATE that writes a row
    only while it is as the chunk read it (status, reductions, no clawback, no payout; the per-referral path
    reads it under its lock instead). A row another transaction changed meanwhile raises ``RewardMoved``:
    the chunk rolls back and the per-referral path settles it. Returns (the reduced reward — a copy, the
    rewards as read stay as they were for their announcements —, the reduction, its audit fields)."""
    if not reductions:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            _REDUCE_SQL,
            [
                [reward.pk for _plan, reward, _target, _delta in reductions],
                [reward.reversed_minor + delta for _plan, reward, _target, delta in reductions],
                [reward.reversed_minor for _plan, reward, _target, _delta in reductions],
                [reward.status for _plan, reward, _target, _delta in reductions],
                tenant.pk,
            ],
        )
        written = {row[0] for row in cursor.fetchall()}
    moved = [reward.pk for _plan, reward, _target, _delta in reductions if reward.pk not in written]
    if moved:
        raise RewardMoved(f"rewards {moved[:5]} changed since the chunk read them")
    out = []
    for plan, read, target, delta in reductions:
        reward = copy(read)
        reward.reversed_minor += delta
        _known_reward_relations(reward, plan.referral, reads)
        refunded, paid = target.refund
        fields = {
            "action": "reward.reduced",
            "obj": reward,
            "from_state": reward.status,
            "to_state": reward.status,
            "reason": "refund",
            "data": {
                "reduced_by_minor": delta,
                "total_reduction_minor": reward.reversed_minor + reward.clawed_back_minor,
                "refunded_minor": refunded,
                "paid_minor": paid,
                "clawback": False,
            },
        }
        out.append((reward, delta, fields))
    return out


_WITHDRAW_SQL = """
UPDATE rewards_reward AS r
SET status = v.status, reversed_minor = v.reversed_minor, is_current = v.is_current,
    reversed_at = CASE WHEN v.status <> v.was_status THEN %s ELSE r.reversed_at END
FROM UNNEST(%s::bigint[], %s::text[], %s::bigint[], %s::boolean[], %s::text[], %s::bigint[], %s::bigint[])
    AS v(id, status, reversed_minor, is_current, was_status, was_reversed, was_clawed_back)
WHERE r.id = v.id AND r.tenant_id = %s AND r.is_current
  AND r.status = v.was_status AND r.reversed_minor = v.was_reversed AND r.clawed_back_minor = v.was_clawed_back
  AND (r.payout_id IS NULL OR r.status NOT IN ('pending', 'approved'))
RETURNING r.id
"""


def _withdraw_many(tenant, actor, withdrawals: list[tuple[_Plan, _Withdrawal]], reads: BatchReads):
    """The rewards taken back whole and/or retired (``_withdrawal``), written as ``ev._withdraw`` (through
    ``reward_reduce_for_refund``: reversed, its remaining value reversed from pending / payable) and
    ``ev._retire`` write them, with ONE UPDATE that writes a row only while it is as the chunk read it
    (status, reductions, current; a live one in no payout): otherwise ``RewardMoved`` (the chunk rolls back;
    the per-referral path locks each reward). Their hooks are told here, as the per-referral path tells them
    before the slot's new reward. Returns (the reward as it is now, the reduction posted, its audit fields) of
    each reversed one, for the audit rows, the ledger and the messages."""
    if not withdrawals:
        return []
    rows = [withdrawal for _plan, withdrawal in withdrawals]
    with connection.cursor() as cursor:
        cursor.execute(
            _WITHDRAW_SQL,
            [
                timezone.now(),
                [w.read.pk for w in rows],
                [w.after.status for w in rows],
                [w.after.reversed_minor for w in rows],
                [w.after.is_current for w in rows],
                [w.read.status for w in rows],
                [w.read.reversed_minor for w in rows],
                [w.read.clawed_back_minor for w in rows],
                tenant.pk,
            ],
        )
        written = {row[0] for row in cursor.fetchall()}
    moved = [w.read.pk for w in rows if w.read.pk not in written]
    if moved:
        raise RewardMoved(f"rewards {moved[:5]} changed since the chunk read them")
    out = []
    for plan, withdrawal in withdrawals:
        reward = withdrawal.after
        _known_reward_relations(reward, plan.referral, reads)
        if withdrawal.reverses:
            reversal = withdrawal.plan.kind == REDUCTION_REVERSAL
            data = None
            if reversal:
                data = {
                    "reduced_by_minor": withdrawal.plan.delta,
                    "total_reduction_minor": withdrawal.plan.total,
                    "refunded_minor": withdrawal.refunded,
                    "paid_minor": withdrawal.paid,
                    "clawback": False,
                }
            fields = {
                "action": f"reward.{RewardStatus.REVERSED}",
                "obj": reward,
                "from_state": withdrawal.read.status,
                "to_state": reward.status,
                "reason": withdrawal.reason,
                "data": data,
            }
            out.append((reward, withdrawal.plan.delta if reversal else 0, fields))
            hooks.reward_changed(reward=reward, change="reversed")
        if withdrawal.retire:
            hooks.reward_changed(reward=reward, change="retired")
    return out


def _known_reward_relations(reward: Reward, referral: Referral, reads: BatchReads) -> None:
    """Fill a reward's tenant, program, referral and participant from rows the chunk holds."""
    reward.tenant = referral.tenant
    if reward.program_id == referral.program_id:
        reward.program = referral.program
    if reward.referral_id == referral.pk:
        reward.referral = referral
    participant = reads._participants.get(reward.participant_id) or reads._referred.get(referral.pk)
    if participant is not None and participant.pk == reward.participant_id:
        reward.participant = participant


def _post(tenant, created: list[Reward], reduced: list[tuple[Reward, int, dict]]) -> None:
    """The accrual of every new reward (Dr program expense, Cr participant pending), as ``reward_create``
    posts it, then every reduction's reversal (Dr participant pending / payable, Cr program expense), as
    ``reward_reduce_for_refund`` posts it: same idempotency keys, same lines, same memos; one read of the
    accounts, one ``ledger_post_many``."""
    paying = [reward for reward in created if reward.amount_minor > 0]
    wanted = []
    for reward in paying:
        wanted += [
            (reward.program, None, AccountKind.EXPENSE, reward.currency),
            (reward.program, reward.participant, AccountKind.PENDING, reward.currency),
        ]
    reduced = [(reward, delta, fields) for reward, delta, fields in reduced if delta > 0]  # an item: no money
    for reward, _delta, fields in reduced:
        wanted += [
            (reward.program, None, AccountKind.EXPENSE, reward.currency),
            (reward.program, reward.participant, reversal_source(fields["from_state"]), reward.currency),
        ]
    if not wanted:
        return
    accounts = ledger_accounts_many(tenant=tenant, wanted=wanted)

    def account(reward: Reward, kind: str, *, own: bool):
        return accounts[(reward.program_id, reward.participant_id if own else None, kind, reward.currency.upper())]

    postings = [
        Posting(
            idempotency_key=f"reward:{reward.pk}:accrual",
            kind=EntryKind.ACCRUAL,
            lines=[
                Line(account(reward, AccountKind.EXPENSE, own=False), reward.amount_minor),
                Line(account(reward, AccountKind.PENDING, own=True), -reward.amount_minor),
            ],
            memo=f"Reward #{reward.pk} accrued",
            reward=reward,
        )
        for reward in paying
    ]
    postings += [
        Posting(
            idempotency_key=f"reward:{reward.pk}:reduce-to:{fields['data']['total_reduction_minor']}",
            kind=EntryKind.REVERSAL,
            lines=[
                Line(account(reward, reversal_source(fields["from_state"]), own=True), delta),
                Line(account(reward, AccountKind.EXPENSE, own=False), -delta),
            ],
            memo=f"Reward #{reward.pk} reduced by {format_money(delta, reward.currency)} (refund)",
            reward=reward,
        )
        for reward, delta, fields in reduced
    ]
    ledger_post_many(tenant=tenant, postings=postings)


def _record(tenant_id: int, plans: list[_Plan], reads: BatchReads) -> None:
    """Every settled event's evaluation row, created or updated with one statement each."""
    events = {plan.referral.pk: reads.events(plan.referral) for plan in plans}
    event_ids = [event.pk for rows in events.values() for event in rows]
    existing = {
        row.conversion_event_id: row
        for row in RewardEvaluation.objects.for_tenant(tenant_id).filter(conversion_event_id__in=event_ids)
    }
    unknown_named = []
    waiting_of: dict[int, int | bool | None] = {}
    for rows in events.values():
        for event in rows:
            if event.kind == ConversionKind.REFUND:
                waiting_of[event.pk] = reads.refunded_payment_id(event)
                if waiting_of[event.pk] is False:
                    unknown_named.append(event)
    waiting = {pk for pk, target in waiting_of.items() if target is None}
    waiting |= {refund.pk for refund in unknown_named if ev.refunded_payment(refund) is None}
    fresh, changed = [], []
    for plan in plans:
        new, old = ev._evaluation_rows(
            referral=plan.referral,
            settlement=plan.evaluation.settlement,
            events=events[plan.referral.pk],
            existing=existing,
            waiting=waiting,
        )
        fresh += new
        changed += old
    rows_insert(fresh)
    if changed:
        rows_update(changed, [*ev.EVALUATION_FIELDS, "attempts", "rewards_created"], connection)


def _settle_later(tenant_id: int, plans: list[_Plan], reads: BatchReads, *, left: set[int]) -> None:
    """``_settle_later_referrals`` for every referral whose standing the chunk changed, with one query:
    the referrers' referrals converted after it in the same counting period are settled again (one
    ``settle_referrals`` task), except those of this chunk settled after it (they already counted it) and
    those ``left`` to the per-referral path (settled right after this chunk commits)."""
    changed = []
    for position, plan in enumerate(plans):
        referral = plan.referral
        new_referrer = {
            reward.participant_id
            for reward in plan.evaluation.settlement.created
            if reward.beneficiary_side == BeneficiarySide.REFERRER
        }
        if (not new_referrer and not plan.withdraws) or referral.converted_at is None or plan.evaluation.refused:
            continue  # (only a created or a withdrawn reward changes a standing)
        rule_set = _rule_set(referral)
        if rule_set is None or not ev._counting_matters(rule_set):
            continue
        before = _standing(plan.evaluation.current.values(), referral, extra=())
        after = _standing(_rewards_after(plan), referral, extra=plan.evaluation.settlement.created)
        if before == after:
            continue
        participants = reads.referrer_participants.get(referral.pk, set()) | new_referrer
        end = ev.period_bounds(referral.converted_at, rule_set.counting_period)[1]
        changed.append((position, referral, participants, end))
    if not changed:
        return
    position_of = {plan.referral.pk: index for index, plan in enumerate(plans)}
    rows = (
        Reward.objects.for_tenant(tenant_id)
        .filter(participant_id__in=sorted({pid for _p, _r, parts, _e in changed for pid in parts}))
        .filter(beneficiary_side=BeneficiarySide.REFERRER, is_current=True)
        .filter(referral__converted_at__gte=min(referral.converted_at for _p, referral, _s, _e in changed))
        .values_list("participant_id", "referral_id", "referral__converted_at")
        .distinct()
    )
    rows = list(rows)
    later: set[int] = set()
    for position, referral, participants, end in changed:
        for participant_id, referral_id, converted_at in rows:
            if participant_id not in participants or referral_id == referral.pk:
                continue
            if not referral.converted_at <= converted_at < end:
                continue
            if position_of.get(referral_id, -1) > position or referral_id in left:
                continue  # settled after it in this chunk (it counted it already), or right after the chunk
            later.add(referral_id)
    if later:
        from .tasks import settle_referrals

        enqueue_on_commit(settle_referrals, sorted(later), once=True)


def _standing(current: Iterable[Reward], referral: Referral, *, extra: Iterable[Reward]) -> frozenset:
    """``rewards.evaluation._standing`` from the rows in hand: the earliest live current referrer reward per
    participant, and the referral's conversion."""
    earliest: dict[int, datetime] = {}
    for reward in [*current, *extra]:
        if reward.beneficiary_side != BeneficiarySide.REFERRER or not ev._is_live(reward) or not reward.is_current:
            continue
        at = reward.converted_at
        earliest[reward.participant_id] = min(at, earliest.get(reward.participant_id, at))
    return frozenset(earliest.items()) | frozenset({("converted_at", referral.converted_at)})


__all__ = ["SetOutcome", "chunk_size", "referrals_settle_sets"]
