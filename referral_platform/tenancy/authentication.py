"""API-key authentication and the tenant permission (kept apart from views: DRF imports them at start-up)."""

from __future__ import annotations

from rest_framework import exceptions, permissions
from rest_framework.authentication import BaseAuthentication, get_authorization_header

from .actors import ANONYMOUS, Actor, actor_for_api_key
from .models import ApiKey
from .services import api_key_authenticate


class ApiKeyPrincipal:
    """``request.user`` for a request authenticated by an API key (no human behind it)."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_superuser = False
    is_staff = False
    pk = None
    email = ""

    def __init__(self, api_key: ApiKey):
        self.api_key = api_key

    def __str__(self) -> str:
        return f"API key {self.api_key.prefix}"


class ApiKeyAuthentication(BaseAuthentication):
    """``Authorization: Bearer rk_<prefix>_<secret>``."""

    def authenticate(self, request):
        header = get_authorization_header(request).split()
        if not header or header[0].lower() != b"bearer":
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Authorization header must be 'Bearer <api key>'.")
        api_key = api_key_authenticate(raw_key=header[1].decode("latin-1"))
        if api_key is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked API key.")
        actor_for_api_key(api_key)  # binds the request to the key's tenant (row-level security)
        return ApiKeyPrincipal(api_key), api_key

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="api"'


def api_actor(request) -> Actor:
    """The actor of a DRF request: its API key, else the session member."""
    if isinstance(request.auth, ApiKey):
        return actor_for_api_key(request.auth)
    django_request = getattr(request, "_request", request)
    return getattr(django_request, "actor", ANONYMOUS)


# Actors bound to one partner or participant: their session must never read the tenant's API.
PORTAL_ONLY_KINDS = frozenset({"partner_user", "partner", "customer"})


class IsTenantActor(permissions.BasePermission):
    """Acting for a tenant; viewers may only read."""

    def has_permission(self, request, view) -> bool:
        actor = api_actor(request)
        if actor.kind in PORTAL_ONLY_KINDS:
            raise exceptions.PermissionDenied("Partner users work in the partner portal; the API is for the workspace.")
        if actor.tenant is None:
            if not request.user or not request.user.is_authenticated:
                raise exceptions.NotAuthenticated("Send 'Authorization: Bearer <api key>'.")
            raise exceptions.PermissionDenied("You are not a member of any workspace.")
        if request.method in permissions.SAFE_METHODS:
            return True
        return actor.can_write
