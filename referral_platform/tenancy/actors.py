"""Who a request acts as. Resolved once per request, then passed explicitly.

A request acts as one of: a tenant member (session), an API key, platform staff, a partner user of
the portal (session; resolved by the partners app through the ``session_actor`` hook) or a customer /
partner holding a signed dashboard link. Each actor carries the
one tenant it may touch; code below the view layer never reads a tenant id from input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from referral_platform.hooks import hooks

from . import rls
from .models import WRITE_ROLES

if TYPE_CHECKING:
    from .models import ApiKey, Membership, Tenant


@dataclass(frozen=True)
class Actor:
    # "anonymous" | "member" | "api_key" | "platform_staff" | "partner_user" | "partner" | "customer" | "system"
    kind: str
    tenant: Tenant | None = None
    user: Any = None
    api_key: ApiKey | None = None
    role: str | None = None
    memberships: tuple[Membership, ...] = field(default=(), compare=False)
    # For partner / customer actors: the participant the actor is (set by later portals).
    participant_id: int | None = None
    # For partner users of the portal: the partner company they act for (never the admin, never the API).
    partner_id: int | None = None

    @property
    def is_platform_staff(self) -> bool:
        return self.kind == "platform_staff"

    @property
    def can_write(self) -> bool:
        if self.kind == "api_key":
            return self.api_key is None or self.api_key.scope != "read_only"
        if self.kind in {"platform_staff", "system"}:
            return True
        return self.kind == "member" and self.role in WRITE_ROLES

    @property
    def label(self) -> str:
        """How the actor appears in audit rows."""
        if self.api_key is not None:
            return f"api_key:{self.api_key.prefix}"
        if self.user is not None:
            return f"user:{self.user.pk}:{self.user.email}"
        return self.kind


ANONYMOUS = Actor(kind="anonymous")
SYSTEM = Actor(kind="system")


def system_actor(tenant: Tenant) -> Actor:
    """The actor for Celery tasks and management commands working on one tenant."""
    return Actor(kind="system", tenant=tenant)


SESSION_TENANT_KEY = "tenant_id"


def actor_bind(actor: Actor) -> Actor:
    """Bind a request or task still resolving its tenant to the actor's (row-level security, issue 14):
    from here on the database shows it that tenant's rows only. Platform staff work across tenants on the
    audited path. A context already bound (or an explicit bypass) is left as it is."""
    if actor.is_platform_staff:
        rls.bind_bypass(f"platform staff user {actor.user.pk}")
    elif actor.tenant is not None:
        rls.bind(actor.tenant.pk)
    return actor


def actor_for_session(request) -> Actor:
    """The member actor of a logged-in user, in the tenant chosen with the switcher."""
    return actor_bind(_actor_for_session(request))


def _actor_for_session(request) -> Actor:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return ANONYMOUS
    # A partner user is that and nothing else (no membership, no staff powers), whatever else the user is.
    partner_actor = hooks.session_actor(user=user)
    if partner_actor is not None:
        return partner_actor
    memberships = tuple(user.memberships.select_related("tenant").order_by("created_at", "pk"))
    chosen_id = request.session.get(SESSION_TENANT_KEY)
    chosen = next((m for m in memberships if m.tenant_id == chosen_id), None)
    if chosen is None and memberships:
        chosen = memberships[0]
    if user.is_superuser:
        return Actor(
            kind="platform_staff",
            tenant=chosen.tenant if chosen else None,
            user=user,
            role=chosen.role if chosen else None,
            memberships=memberships,
        )
    if chosen is None:
        return Actor(kind="anonymous", user=user)
    return Actor(kind="member", tenant=chosen.tenant, user=user, role=chosen.role, memberships=memberships)


def actor_for_api_key(api_key: ApiKey) -> Actor:
    return actor_bind(Actor(kind="api_key", tenant=api_key.tenant, api_key=api_key))


PARTICIPANT_ACTOR_KINDS = {"partner", "reseller"}


def actor_for_participant(participant) -> Actor:
    """The actor of someone holding a participant's signed dashboard link: a "partner" for partner and
    reseller programs, a "customer" otherwise, bound to that participant's tenant and id. It may read
    that participant's own data only (``can_write`` is False)."""
    kind = "partner" if participant.program.kind in PARTICIPANT_ACTOR_KINDS else "customer"
    return actor_bind(Actor(kind=kind, tenant=participant.tenant, participant_id=participant.pk))
