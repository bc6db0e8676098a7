"""API plumbing: the tenant-scoped base view and JSON errors."""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, generics
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from .actors import Actor
from .authentication import api_actor
from .models import TenantOwnedModel


class TenantAPIView(generics.GenericAPIView):
    """Base for every tenant API view.

    ``get_queryset`` is final: it starts from ``model.objects.for_tenant(...)`` and re-applies the
    tenant filter after the subclass's ``scope_queryset`` hook, so a subclass can narrow the rows
    but never widen them beyond the tenant. Objects of another tenant answer 404, like missing ones.
    """

    model: type[TenantOwnedModel] | None = None
    _final = ("get_queryset", "queryset", "get_object")

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name in cls._final:
            if name in cls.__dict__:
                raise TypeError(
                    f"{cls.__name__} must not define {name}: tenant scoping lives in TenantAPIView; "
                    "narrow rows in scope_queryset() instead."
                )

    @property
    def actor(self) -> Actor:
        return api_actor(self.request)

    @property
    def tenant(self):
        return self.actor.tenant

    def scope_queryset(self, queryset):
        return queryset

    def get_queryset(self):
        if self.model is None:
            raise TypeError(f"{type(self).__name__}.model is not set")
        tenant = self.tenant
        if tenant is None:
            raise exceptions.NotAuthenticated()
        queryset = self.scope_queryset(self.model.objects.for_tenant(tenant))
        return queryset.filter(tenant_id=tenant.pk)

    def get_serializer_context(self):
        context = super().get_serializer_context()
        context["tenant"] = self.tenant if self.request else None
        return context


def _first_message(detail) -> str:
    if isinstance(detail, dict):
        for field, value in detail.items():
            inner = _first_message(value)
            return inner if field == "non_field_errors" else f"{field}: {inner}"
    if isinstance(detail, list) and detail:
        return _first_message(detail[0])
    return str(detail)


def exception_handler(exc, context):
    """Every API error is ``{"error": {"status", "code", "message", "fields"?}}``; ``message`` names the field."""
    if isinstance(exc, DjangoValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        exc = exceptions.ValidationError(detail)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    detail = response.data
    error = {
        "status": response.status_code,
        "code": getattr(exc, "default_code", "error"),
        "message": _first_message(detail)
        if not isinstance(detail, dict) or "detail" not in detail
        else str(detail["detail"]),
    }
    if isinstance(exc, exceptions.ValidationError):
        error["code"] = "invalid"
        error["fields"] = detail if isinstance(detail, dict) else {"non_field_errors": detail}
    response.data = {"error": error}
    return response


def json_error(status: int, code: str, message: str) -> Response:
    return Response({"error": {"status": status, "code": code, "message": message}}, status=status)
