"""One state machine for every status in the product.

A model declares its status field's allowed moves once, as a ``StateMachine`` class attribute::

    class Referral(TenantOwnedModel):
        status_machine = StateMachine(
            field="status",
            moves={"clicked": {"signed_up", ...}, ...},
            timestamps={"signed_up": "signed_up_at", ...},
            audit_prefix="referral",
        )

and every move goes through ``transition(obj, to=..., actor=..., reason=...)``, which

1. locks the row through its tenant (``SELECT … FOR NO KEY UPDATE OF`` the row only, never joined rows),
2. checks the move against the declaration (a refused move is a ``ValidationError`` on the field naming
   both states, and changes nothing),
3. stamps the time of the new state (when the machine names a timestamp field for it),
4. saves with ``update_fields`` (the status, the timestamp and any ``changes`` the caller passes),
5. writes the audit row (who, when, from, to, why, data),
6. refreshes the caller's object with what was saved.

Admin buttons and actions ask ``allowed_moves(obj)`` which moves exist from the current state. The
services of each app stay the public way to change a status (``referral_reject``, ``reward_approve``…):
they validate their own preconditions, then call ``transition``.

A model may have more than one status field, each with its own machine (``Referral.status_machine`` and
``Referral.review_machine``); ``status_machine`` is the default and the others are passed as
``machine=``: ``transition(referral, to="cleared", machine=Referral.review_machine, ...)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from referral_platform.db.sql import save_fields


@dataclass(frozen=True)
class StateMachine:
    """The allowed moves of one status field. ``moves`` maps each state to the states it may move to
    (a state missing from the map is final; a state listed among its own moves may be re-entered, e.g. a
    payout attempted again while processing, and re-entering writes no audit row: the state did not
    change); ``timestamps`` names the field stamped on entering a state; ``reason_required`` lists the
    states a move into needs a reason for; ``labels`` are the words for states in messages;
    ``refusal`` is the message of a refused move, formatted with ``noun``, ``current``, ``to``,
    ``current_label`` and ``to_label``."""

    field: str
    moves: Mapping[str, Iterable[str]]
    audit_prefix: str
    timestamps: Mapping[str, str] = field(default_factory=dict)
    reason_required: frozenset[str] = frozenset()
    labels: Mapping[str, str] = field(default_factory=dict)
    refusal: str = "A {noun} cannot move from {current_label} to {to_label}."

    def __post_init__(self) -> None:
        object.__setattr__(self, "moves", {state: frozenset(to) for state, to in self.moves.items()})
        object.__setattr__(self, "reason_required", frozenset(self.reason_required))

    def can(self, from_state: str, to_state: str) -> bool:
        return to_state in self.moves.get(from_state, frozenset())

    def allowed(self, from_state: str) -> list[str]:
        return sorted(self.moves.get(from_state, frozenset()))

    def label(self, state: str) -> str:
        return str(self.labels.get(state, state)).replace("_", " ")

    @property
    def states(self) -> frozenset[str]:
        return frozenset(self.moves) | frozenset(state for to in self.moves.values() for state in to)


class IllegalMove(ValidationError):
    """A move the state machine does not allow (a ValidationError on the status field)."""


def machine_of(obj_or_model, machine: StateMachine | None = None) -> StateMachine:
    """``machine`` when given, else the ``status_machine`` that ``obj_or_model`` declares."""
    machine = machine if machine is not None else getattr(obj_or_model, "status_machine", None)
    if not isinstance(machine, StateMachine):
        raise TypeError(f"{obj_or_model!r} declares no status_machine")
    return machine


def allowed_moves(obj, *, machine: StateMachine | None = None) -> list[str]:
    """The states ``obj`` may move to from its current one (what admin buttons and actions offer)."""
    machine = machine_of(obj, machine)
    return machine.allowed(getattr(obj, machine.field))


def illegal_move(obj, to: str, *, machine: StateMachine | None = None) -> IllegalMove:
    """The refusal of moving ``obj`` from its current state to ``to``, in the machine's words (for a
    service whose own precondition narrows the machine's moves)."""
    machine = machine_of(obj, machine)
    current = getattr(obj, machine.field)
    message = machine.refusal.format(
        noun=obj._meta.concrete_model._meta.verbose_name,
        current=current,
        to=to,
        current_label=machine.label(current),
        to_label=machine.label(to),
    )
    return IllegalMove({machine.field: message})


def check_move(obj, to: str, *, machine: StateMachine | None = None) -> None:
    """Raise IllegalMove unless ``obj`` (as read) may move to ``to``."""
    machine = machine_of(obj, machine)
    if not machine.can(getattr(obj, machine.field), to):
        raise illegal_move(obj, to, machine=machine)


def lock(obj):
    """``obj``'s row, locked for update through its tenant (the row only: no joined rows are locked). A proxy
    (e.g. the admin's FraudReview) is locked, saved and audited as its concrete model."""
    model = obj._meta.concrete_model
    manager = model._default_manager
    queryset = manager.for_tenant(obj.tenant_id) if hasattr(manager, "for_tenant") else manager.all()
    return queryset.select_for_update(of=("self",), no_key=True).get(pk=obj.pk)


@transaction.atomic
def transition(
    obj,
    *,
    to: str,
    actor,
    reason: str = "",
    at: datetime | None = None,
    data: dict | None = None,
    changes: Mapping[str, Any] | None = None,
    action: str = "",
    locked=None,
    machine: StateMachine | None = None,
):
    """Move ``obj`` to state ``to`` (see the module docstring). Returns the saved object; ``obj`` itself is
    refreshed too. ``changes`` are further fields saved with the move (e.g. a reason column);
    ``action`` overrides the audit action (default ``<audit_prefix>.<to>``); ``locked`` is the row when
    the caller already holds its lock; ``machine`` names another machine of the model than its
    ``status_machine``."""
    from referral_platform.tenancy.services import audit_record

    machine = machine_of(obj, machine)
    row = locked if locked is not None else lock(obj)
    from_state = getattr(row, machine.field)
    check_move(row, to, machine=machine)
    reason = (reason or "").strip()
    if to in machine.reason_required and not reason:
        noun = obj._meta.concrete_model._meta.verbose_name
        raise ValidationError({"reason": f"Say why the {noun} becomes {machine.label(to)}."})
    fields = [machine.field]
    setattr(row, machine.field, to)
    stamp = machine.timestamps.get(to)
    if stamp:
        setattr(row, stamp, at or timezone.now())
        fields.append(stamp)
    for name, value in (changes or {}).items():
        setattr(row, name, value)
        fields.append(name)
    save_fields(row, list(dict.fromkeys(fields)), held=locked is not None)
    if from_state != to:
        audit_record(
            tenant=row.tenant,
            actor=actor,
            action=action or f"{machine.audit_prefix}.{to}",
            obj=row,
            from_state=from_state,
            to_state=to,
            reason=reason,
            data=data,
        )
    if row is not obj:
        for name in fields:
            setattr(obj, name, getattr(row, name))
    return row
