"""Tenants, who may act for them (members, API keys), invitations and the audit trail."""

from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.utils import timezone

from .memo import TenantDescriptor


class Tenant(models.Model):
    """A workspace: one company running its referral programs."""

    slug = models.SlugField(max_length=60, unique=True)
    name = models.CharField(max_length=200)
    default_currency = models.CharField(max_length=3, default="USD")
    allowed_landing_domains = ArrayField(
        models.CharField(max_length=253),
        default=list,
        blank=True,
        help_text="Host names referral links may send visitors to. A leading '.' allows sub-domains.",
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class TenantScopedQuerySet(models.QuerySet):
    def for_tenant(self, tenant: Tenant | int) -> TenantScopedQuerySet:
        """Rows of one tenant; every read of tenant data starts here."""
        tenant_id = tenant if isinstance(tenant, int) else tenant.pk
        return self.filter(tenant_id=tenant_id)


TenantScopedManager = models.Manager.from_queryset(TenantScopedQuerySet)


class TenantForeignKey(models.ForeignKey):
    """The ``tenant`` foreign key of tenant-owned rows: a plain ForeignKey whose ``obj.tenant`` reuses the
    tenant a batch task already read (``referral_platform.tenancy.memo``)."""

    forward_related_accessor_class = TenantDescriptor

    def deconstruct(self):
        name, _path, args, kwargs = super().deconstruct()
        return name, "django.db.models.ForeignKey", args, kwargs  # the schema is a plain ForeignKey's


class TenantOwnedModel(models.Model):
    """Base for every row that belongs to one tenant.

    Composite indexes and unique constraints of subclasses lead with ``tenant`` so the schema can
    later be distributed by tenant.
    """

    tenant = TenantForeignKey(Tenant, on_delete=models.CASCADE, related_name="+", editable=False)

    objects = TenantScopedManager()

    class Meta:
        abstract = True


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    MARKETER = "marketer", "Marketer"
    VIEWER = "viewer", "Viewer"


WRITE_ROLES = frozenset({Role.OWNER, Role.MARKETER})


class Membership(TenantOwnedModel):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=20, choices=Role.choices, default=Role.MARKETER)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "user"], name="membership_unique_user")]
        ordering = ["created_at", "pk"]

    def __str__(self) -> str:
        return f"{self.user} ({self.get_role_display()})"


class ApiKeyScope(models.TextChoices):
    READ_WRITE = "read_write", "Read and write"
    READ_ONLY = "read_only", "Read only (GET)"


class ApiKey(TenantOwnedModel):
    """A per-tenant API credential. Only a hash of the secret is stored; the key is shown once.

    Its scope is chosen at creation. A key created by a member is revoked when that membership is removed
    (``revoked_reason`` says so, and the owner sees it in the key list)."""

    name = models.CharField(max_length=100)
    scope = models.CharField(max_length=20, choices=ApiKeyScope.choices, default=ApiKeyScope.READ_WRITE)
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    secret_hash = models.CharField(max_length=64, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        editable=False,
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_reason = models.CharField(max_length=300, blank=True, editable=False)

    class Meta:
        verbose_name = "API key"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} (rk_{self.prefix}_…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class Invitation(TenantOwnedModel):
    email = models.EmailField()
    role = models.CharField(max_length=20, choices=Role.choices, default=Role.MARKETER)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.email} → {self.get_role_display()}"

    @property
    def is_pending(self) -> bool:
        return self.accepted_at is None and self.expires_at > timezone.now()


class AuditEvent(TenantOwnedModel):
    """Who did what, when, from which state to which, and why. Written by services, never edited."""

    actor = models.CharField(max_length=200)
    action = models.CharField(max_length=100)
    object_type = models.CharField(max_length=100)
    object_id = models.CharField(max_length=64)
    from_state = models.CharField(max_length=40, blank=True)
    to_state = models.CharField(max_length=40, blank=True)
    reason = models.TextField(blank=True)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["tenant", "object_type", "object_id"], name="audit_object_idx")]

    def __str__(self) -> str:
        return f"{self.action} {self.object_type}#{self.object_id}"


class IdempotencyKey(TenantOwnedModel):
    """The first answer to a POST sent with an ``Idempotency-Key`` header (Stripe's scheme): a retry with the
    same key and body gets it again; the same key with another body is a 409. Kept 24 hours.
    ``status_code`` 0 marks a request still being answered."""

    key = models.CharField(max_length=255)
    method = models.CharField(max_length=10)
    path = models.CharField(max_length=500)
    request_hash = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField(default=0)
    response_body = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "key"], name="idempotency_key_unique_per_tenant")]
        indexes = [models.Index(fields=["tenant", "created_at"], name="idempotency_key_created_idx")]

    def __str__(self) -> str:
        return f"{self.method} {self.path} [{self.key}]"
