"""Writes for tenants, members, API keys and invitations. Keyword-only, one transaction each."""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone
from django.utils.text import slugify

from referral_platform.db.sql import rows_insert

from . import rls
from .actors import Actor
from .models import ApiKey, ApiKeyScope, AuditEvent, Invitation, Membership, Role, Tenant

API_KEY_PREFIX_LENGTH = 8
INVITATION_LIFETIME = timedelta(days=14)
# last_used_at is advisory; writing it on every request would put a write on every API call.
API_KEY_LAST_USED_RESOLUTION = timedelta(minutes=1)


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def audit_record(**fields) -> AuditEvent:
    """Append one audit row (the keyword arguments of ``audit_row``). Call inside the transaction of the change
    it records. Inside ``audit_rows_deferred`` the row is inserted when that block ends (its ``pk`` is None
    until then)."""
    row = audit_row(**fields)
    deferred = _deferred.get()
    if deferred is not None and deferred.connection.in_atomic_block:
        deferred.add(row)
    else:
        row.save(force_insert=True)
    return row


class _DeferredAuditRows:
    def __init__(self, connection) -> None:
        self.connection = connection
        self.rows: list[tuple[AuditEvent, tuple, rls.RlsState]] = []

    def add(self, row: AuditEvent) -> None:
        self.rows.append((row, tuple(self.connection.savepoint_ids), rls.current()))

    def forget(self, sid) -> None:
        """A rollback to savepoint ``sid``: the rows recorded inside it go with it."""
        self.rows = [entry for entry in self.rows if sid not in entry[1]]

    def flush(self) -> None:
        by_state: dict[rls.RlsState, list[AuditEvent]] = {}
        for row, _savepoints, state in self.rows:
            by_state.setdefault(state, []).append(row)
        self.rows = []
        for state, rows in by_state.items():
            with rls.within(state):
                rows_insert(rows)


_deferred: contextvars.ContextVar[_DeferredAuditRows | None] = contextvars.ContextVar("audit_deferred", default=None)


@contextlib.contextmanager
def audit_rows_deferred():
    """Audit rows recorded in the block are inserted with one statement per row-level-security state when it
    ends, in the same transaction (a batch records one or two rows per item: issue 15). A row recorded inside
    a savepoint that is rolled back is dropped with it, exactly as its INSERT would have been undone; when the
    block raises, the rows left are written if the transaction can still go on. Outside a transaction, and
    inside an enclosing block, it changes nothing."""
    connection = transaction.get_connection()
    if _deferred.get() is not None or not connection.in_atomic_block:
        yield
        return
    deferred = _DeferredAuditRows(connection)
    token = _deferred.set(deferred)
    connection.savepoint_rollback_listeners.append(deferred.forget)
    try:
        yield
    except BaseException:
        if connection.in_atomic_block and not connection.needs_rollback:
            deferred.flush()
        raise
    else:
        deferred.flush()
    finally:
        connection.savepoint_rollback_listeners.remove(deferred.forget)
        _deferred.reset(token)


def audit_rows_pending() -> int:
    """How many audit rows the enclosing ``audit_rows_deferred`` block holds, not written yet (0 outside one)."""
    deferred = _deferred.get()
    return len(deferred.rows) if deferred is not None else 0


def audit_row(
    *,
    tenant: Tenant | int,
    actor: Actor | str,
    action: str,
    obj,
    from_state: str = "",
    to_state: str = "",
    reason: str = "",
    data: dict | None = None,
) -> AuditEvent:
    """The unsaved audit row of ``audit_record`` (bulk writers save many with one ``rows_insert``)."""
    return AuditEvent(
        tenant_id=tenant if isinstance(tenant, int) else tenant.pk,
        actor=actor if isinstance(actor, str) else actor.label,
        action=action,
        object_type=obj._meta.label_lower,
        object_id=str(obj.pk),
        from_state=from_state,
        to_state=to_state,
        reason=reason,
        data=data or {},
    )


def _unique_slug(name: str) -> str:
    base = slugify(name)[:50] or "workspace"
    slug = base
    while Tenant.objects.filter(slug=slug).exists():
        slug = f"{base}-{secrets.token_hex(2)}"
    return slug


@transaction.atomic
def tenant_create_with_owner(*, name: str, owner, default_currency: str = "USD") -> Tenant:
    """Create a workspace with ``owner`` as its first member (role owner)."""
    name = name.strip()
    if not name:
        raise ValidationError({"workspace_name": "Enter a name for your workspace."})
    tenant = Tenant.objects.create(name=name, slug=_unique_slug(name), default_currency=default_currency)
    membership = Membership.objects.create(tenant=tenant, user=owner, role=Role.OWNER)
    audit_record(tenant=tenant, actor=f"user:{owner.pk}:{owner.email}", action="tenant.created", obj=membership)
    return tenant


@dataclass(frozen=True)
class IssuedApiKey:
    api_key: ApiKey
    raw_key: str  # shown to the user once, never stored


@transaction.atomic
def api_key_create(*, tenant: Tenant, name: str, actor: Actor, scope: str = ApiKeyScope.READ_WRITE) -> IssuedApiKey:
    """Issue a key ``rk_<prefix>_<secret>`` with its scope (read-only or read-write); only sha256(secret)
    is stored."""
    name = name.strip()
    if not name:
        raise ValidationError({"name": "Give the key a name."})
    if scope not in ApiKeyScope.values:
        raise ValidationError({"scope": f"Use one of {', '.join(ApiKeyScope.values)}."})
    secret = secrets.token_urlsafe(32)
    for _ in range(5):
        prefix = secrets.token_hex(API_KEY_PREFIX_LENGTH // 2)
        try:
            with transaction.atomic():
                api_key = ApiKey.objects.create(
                    tenant=tenant,
                    name=name,
                    prefix=prefix,
                    secret_hash=_sha256(secret),
                    scope=scope,
                    created_by=actor.user,
                )
            break
        except IntegrityError:
            continue
    else:  # pragma: no cover - 2**32 prefixes
        raise RuntimeError("could not allocate an API key prefix")
    audit_record(tenant=tenant, actor=actor, action="api_key.created", obj=api_key)
    return IssuedApiKey(api_key=api_key, raw_key=f"rk_{prefix}_{secret}")


@transaction.atomic
def api_key_revoke(*, api_key: ApiKey, actor: Actor, reason: str = "") -> ApiKey:
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.revoked_reason = reason[:300]
        api_key.save(update_fields=["revoked_at", "revoked_reason"])
        audit_record(tenant=api_key.tenant, actor=actor, action="api_key.revoked", obj=api_key, reason=reason)
    return api_key


@transaction.atomic
def membership_remove(*, membership: Membership, actor: Actor) -> list[ApiKey]:
    """Remove a member from the workspace and revoke every API key they created in it (a departed member's
    key must stop working). Returns the keys revoked, for the owner to see."""
    tenant, user = membership.tenant, membership.user
    keys = list(ApiKey.objects.for_tenant(tenant).select_for_update().filter(created_by=user, revoked_at__isnull=True))
    reason = f"Its creator {user.email} was removed from the workspace."
    for api_key in keys:
        api_key_revoke(api_key=api_key, actor=actor, reason=reason)
    audit_record(
        tenant=tenant,
        actor=actor,
        action="membership.removed",
        obj=membership,
        reason=f"{user.email} removed",
        data={"api_keys_revoked": [key.prefix for key in keys]},
    )
    membership.delete()
    return keys


def api_key_authenticate(*, raw_key: str) -> ApiKey | None:
    """The active key matching ``raw_key``, or None. Compares hashes in constant time."""
    parts = raw_key.split("_", 2)
    if len(parts) != 3 or parts[0] != "rk" or not parts[1] or not parts[2]:
        return None
    api_key = ApiKey.objects.select_related("tenant").filter(prefix=parts[1], revoked_at__isnull=True).first()
    if api_key is None or not secrets.compare_digest(api_key.secret_hash, _sha256(parts[2])):
        return None
    now = timezone.now()
    if api_key.last_used_at is None or now - api_key.last_used_at > API_KEY_LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        api_key.last_used_at = now
    return api_key


@transaction.atomic
def invitation_create(*, tenant: Tenant, email: str, role: str, actor: Actor) -> Invitation:
    """Invite someone by e-mail; the mail carries a one-time link (only its hash is stored)."""
    email = email.strip().lower()
    if role not in Role.values:
        raise ValidationError({"role": f"Unknown role {role!r}."})
    if Membership.objects.for_tenant(tenant).filter(user__email__iexact=email).exists():
        raise ValidationError({"email": f"{email} is already a member of this workspace."})
    token = secrets.token_urlsafe(32)
    invitation = Invitation.objects.create(
        tenant=tenant,
        email=email,
        role=role,
        token_hash=_sha256(token),
        invited_by=actor.user,
        expires_at=timezone.now() + INVITATION_LIFETIME,
    )
    audit_record(tenant=tenant, actor=actor, action="invitation.created", obj=invitation, to_state=role)
    link = settings.SITE_URL + reverse("invitation_accept", kwargs={"token": token})
    transaction.on_commit(
        lambda: send_mail(
            subject=f"You are invited to {tenant.name} on Referral Platform",
            message=(
                f"{actor.user.email if actor.user else 'A colleague'} invited you to join {tenant.name} "
                f"as {invitation.get_role_display().lower()}.\n\nAccept: {link}\n\n"
                f"The link works once and expires on {invitation.expires_at:%Y-%m-%d}."
            ),
            from_email=None,
            recipient_list=[email],
        )
    )
    return invitation


def invitation_for_token(*, token: str) -> Invitation | None:
    return Invitation.objects.select_related("tenant").filter(token_hash=_sha256(token)).first()


@transaction.atomic
def invitation_accept(*, token: str, user) -> Membership:
    """Join the invited tenant. The invitation works once, before it expires, for its e-mail only."""
    invitation = Invitation.objects.select_for_update().filter(token_hash=_sha256(token)).first()
    if invitation is None or not invitation.is_pending:
        raise ValidationError({"token": "This invitation is invalid, expired or already used."})
    if invitation.email.lower() != (user.email or "").lower():
        raise ValidationError({"email": f"This invitation is for {invitation.email}; log in with that address."})
    membership, _ = Membership.objects.get_or_create(
        tenant=invitation.tenant, user=user, defaults={"role": invitation.role}
    )
    invitation.accepted_at = timezone.now()
    invitation.save(update_fields=["accepted_at"])
    audit_record(
        tenant=invitation.tenant,
        actor=f"user:{user.pk}:{user.email}",
        action="invitation.accepted",
        obj=invitation,
        to_state=membership.role,
    )
    return membership
