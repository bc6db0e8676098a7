"""Named hooks: how a lower layer lets a higher one react, without importing it.

The layers (docs/architecture.md) are core → programs → referrals → rewards → partners → top (participant
pages, analytics, engagement, the demo). A module never imports a higher layer. When a lower layer must let
a higher one react — a participant became active, a referral changed stage, a conversion was processed, an
account may belong to a partner's deal — it calls a named hook here, the way Saleor's order actions call
``manager.order_confirmed(order)``: ``hooks.referral_changed(referral=referral)``. Higher layers register
their implementation at start-up, in their ``AppConfig.ready()``::

    from referral_platform.hooks import hooks
    hooks.register("referral_changed", on_referral_changed)

No Django signals for business events: every hook is listed in ``HOOK_SPECS`` with what it means, called
through a method of the same name (so calling an unknown hook fails at once), and its implementations run
in registration order — INSTALLED_APPS order, i.e. lower layers first.

Two kinds:

- **notifications** (``HookKind.NOTIFY``): every implementation runs, nothing is returned. They run inside
  the caller's transaction; an implementation that does slow work (e-mail, HTTP) queues a task with
  ``enqueue_on_commit``.
- **providers** (``HookKind.PROVIDE``): a lower layer asks a question only a higher layer can answer ("the
  share links of this participant?"); the first implementation that returns something other than None
  answers, else the caller's default.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any


class HookKind(Enum):
    NOTIFY = "notify"
    PROVIDE = "provide"


@dataclass(frozen=True)
class HookSpec:
    kind: HookKind
    caller: str
    meaning: str


HOOK_SPECS: dict[str, HookSpec] = {
    # core → higher layers
    "session_actor": HookSpec(
        HookKind.PROVIDE,
        "core (tenancy.actors)",
        "The actor of a logged-in user when a higher layer knows it better than the memberships do (a partner "
        "user of the portal: kind partner_user, one tenant, one partner), or None.",
    ),
    # programs → higher layers
    "participant_activated": HookSpec(
        HookKind.NOTIFY,
        "programs",
        "A participant became active (enrolled, approved, reinstated): give it what it needs to refer (links); "
        "``welcome`` says whether to send the welcome e-mail.",
    ),
    "participant_deactivated": HookSpec(
        HookKind.NOTIFY, "programs", "A participant was removed: their links stop working (referrals are kept)."
    ),
    "participant_share_links": HookSpec(
        HookKind.PROVIDE,
        "programs",
        "The participant's active share links: a list of {channel, code, url, created_at}.",
    ),
    "participant_qr_png": HookSpec(
        HookKind.PROVIDE, "programs", "A PNG QR code of the participant's QR-channel link (bytes), or None."
    ),
    "participant_activity": HookSpec(
        HookKind.PROVIDE,
        "programs",
        "Sections for a participant's admin page (every implementation adds its own): a list of "
        "{title, count, headers, rows, more_url}, rows being lists of plain strings.",
    ),
    "rules_change_preview": HookSpec(
        HookKind.PROVIDE,
        "programs",
        "What a program paid on its recent payments and what proposed rules would have paid (a RulesPreview).",
    ),
    "program_rules_changed": HookSpec(
        HookKind.NOTIFY, "programs", "A program got a new rule version (``previous`` is the one before, or None)."
    ),
    # referrals → higher layers
    "referral_created": HookSpec(HookKind.NOTIFY, "referrals", "A referral was created (inside its transaction)."),
    "referral_changed": HookSpec(
        HookKind.NOTIFY,
        "referrals",
        "A referral moved stage, had a stage date re-dated, was rejected or cleared in review: ``change`` names "
        "what happened (signed_up, qualified, converted, churned, rejected, redated, review_cleared, review_rejected).",
    ),
    "conversion_processed": HookSpec(
        HookKind.NOTIFY,
        "referrals",
        "A conversion event was matched and attributed (status processed / unattributed / failed).",
    ),
    "clicks_flushed": HookSpec(
        HookKind.NOTIFY,
        "referrals",
        "A batch of clicks was written from the Redis stream (``click_ids``: the new rows' ids).",
    ),
    "conversions_process_batch": HookSpec(
        HookKind.PROVIDE,
        "referrals",
        "Process these stored conversion events (one workspace's) in ONE batch with their follow-ups "
        "(settlement, stage messages, analytics) batched too; returns the ids handed back to be processed alone "
        "(a list, maybe empty), or None when no layer batches them (each is then processed on its own).",
    ),
    "account_owner": HookSpec(
        HookKind.PROVIDE,
        "referrals",
        "Does this prospect account (e-mail, company, domain) belong to a partner right now (deal registration)? "
        "Returns an AccountClaim (participant, evidence) or None.",
    ),
    # rewards → higher layers
    "reward_changed": HookSpec(
        HookKind.NOTIFY,
        "rewards",
        "A reward was created or changed status or value (``change``: created, approved, rejected, paid, "
        "reduced, reversed, clawed_back).",
    ),
    "payout_changed": HookSpec(HookKind.NOTIFY, "rewards", "A payout changed status (paid, failed, abandoned)."),
    # partners → higher layers
    "deal_changed": HookSpec(
        HookKind.NOTIFY,
        "partners",
        "A deal registration was registered, approved, extended, expired, won, lost or put in conflict.",
    ),
}


class UnknownHook(KeyError):
    pass


class Hooks:
    """The registry. Use the module-level ``hooks``."""

    def __init__(self) -> None:
        self._implementations: dict[str, list[Callable[..., Any]]] = {name: [] for name in HOOK_SPECS}

    def register(self, name: str, implementation: Callable[..., Any]) -> None:
        """Register ``implementation`` for hook ``name`` (once: registering it again is a no-op)."""
        if name not in HOOK_SPECS:
            raise UnknownHook(f"No hook named {name!r}; add it to HOOK_SPECS with its meaning.")
        if implementation not in self._implementations[name]:
            self._implementations[name].append(implementation)

    def unregister(self, name: str, implementation: Callable[..., Any]) -> None:
        if implementation in self._implementations.get(name, []):
            self._implementations[name].remove(implementation)

    def implementations(self, name: str) -> list[Callable[..., Any]]:
        return list(self._implementations[name])

    def _notify(self, name: str, **kwargs: Any) -> None:
        for implementation in self._implementations[name]:
            implementation(**kwargs)

    def _provide(self, name: str, default: Any = None, **kwargs: Any) -> Any:
        for implementation in self._implementations[name]:
            answer = implementation(**kwargs)
            if answer is not None:
                return answer
        return default

    # --- core ----------------------------------------------------------------------------------
    def session_actor(self, *, user):
        return self._provide("session_actor", user=user)

    # --- programs ------------------------------------------------------------------------------
    def participant_activated(self, *, participant, welcome: bool = False) -> None:
        self._notify("participant_activated", participant=participant, welcome=welcome)

    def participant_deactivated(self, *, participant) -> None:
        self._notify("participant_deactivated", participant=participant)

    def participant_share_links(self, *, participant) -> list[dict]:
        return self._provide("participant_share_links", default=[], participant=participant)

    def participant_qr_png(self, *, participant, box_size: int = 8) -> bytes | None:
        return self._provide("participant_qr_png", participant=participant, box_size=box_size)

    def participant_activity(self, *, participant) -> list[dict]:
        """Every implementation's sections, in registration order (layers' order)."""
        sections: list[dict] = []
        for implementation in self._implementations["participant_activity"]:
            sections.extend(implementation(participant=participant) or [])
        return sections

    def rules_change_preview(self, *, tenant, program, proposed_rules, **options):
        return self._provide(
            "rules_change_preview", tenant=tenant, program=program, proposed_rules=proposed_rules, **options
        )

    def program_rules_changed(self, *, program, version, previous) -> None:
        self._notify("program_rules_changed", program=program, version=version, previous=previous)

    # --- referrals -----------------------------------------------------------------------------
    def referral_created(self, *, referral) -> None:
        self._notify("referral_created", referral=referral)

    def referral_changed(self, *, referral, change: str) -> None:
        self._notify("referral_changed", referral=referral, change=change)

    def conversion_processed(self, *, event) -> None:
        self._notify("conversion_processed", event=event)

    def clicks_flushed(self, *, click_ids: list[int]) -> None:
        self._notify("clicks_flushed", click_ids=click_ids)

    def conversions_process_batch(self, *, event_ids: list[int]) -> list[int] | None:
        return self._provide("conversions_process_batch", event_ids=event_ids)

    def account_owner(self, *, tenant, program, email: str = "", company: str = "", at=None):
        return self._provide("account_owner", tenant=tenant, program=program, email=email, company=company, at=at)

    # --- rewards -------------------------------------------------------------------------------
    def reward_changed(self, *, reward, change: str) -> None:
        self._notify("reward_changed", reward=reward, change=change)

    def payout_changed(self, *, payout, change: str) -> None:
        self._notify("payout_changed", payout=payout, change=change)

    # --- partners ------------------------------------------------------------------------------
    def deal_changed(self, *, deal, change: str) -> None:
        self._notify("deal_changed", deal=deal, change=change)


hooks = Hooks()


@dataclass(frozen=True)
class AccountClaim:
    """A partner's claim on a prospect account (the answer of the ``account_owner`` hook)."""

    participant: Any  # programs.Participant of the claiming partner
    evidence: dict
