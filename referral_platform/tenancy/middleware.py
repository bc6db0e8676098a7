from django.utils.functional import SimpleLazyObject

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
