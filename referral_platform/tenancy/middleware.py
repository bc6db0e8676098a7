import contextvars

from django.utils.functional import SimpleLazyObject

from . import rls
from .actors import actor_for_session


class TenantMiddleware:
    """Attaches ``request.actor`` (resolved lazily, once) for session-authenticated pages.

    Lazy so that public pages that never ask pay nothing for it.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.actor = SimpleLazyObject(lambda: actor_for_session(request))
        return self.get_response(request)


class RowLevelSecurityMiddleware:
    """Every request runs in its own copy of the context, starting in the resolving state (issue 14).

    The request may look up which tenant it belongs to (its session's membership, its API key, a link code
    or signed token); the tenancy layer then binds that tenant (``rls.activate``) and every later statement
    runs under the tenant's row-level-security policy. Nothing set here outlives the request: the state lives
    in a copied context, and the database settings are transaction-local (``referral_platform/db``).
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return contextvars.copy_context().run(self._handle, request)

    def _handle(self, request):
        rls.start_resolving(request.path)
        return self.get_response(request)
