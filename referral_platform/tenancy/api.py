"""API plumbing: the tenant-scoped base view and JSON errors."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

import stripe
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DataError
from django.http import Http404
from django.http.request import RawPostDataException
from django.utils import timezone
from rest_framework import exceptions, generics
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from referral_platform.state import IllegalMove

from .actors import Actor
from .api_input import MAX_ID, MAX_LIMIT, JSONParser, LimitOffsetPagination  # noqa: F401 (re-exported)
from .authentication import api_actor
from .models import IdempotencyKey, TenantOwnedModel


class TenantAPIView(generics.GenericAPIView):
    """Base for every tenant API view.

    ``get_queryset`` is final: it starts from ``model.objects.for_tenant(...)`` and re-applies the
    tenant filter after the subclass's ``scope_queryset`` hook, so a subclass can narrow the rows
    but never widen them beyond the tenant. Objects of another tenant answer 404, like missing ones.
    """

    model: type[TenantOwnedModel] | None = None
    # Query parameters a GET understands besides pagination's; any other is refused with 400 (never
    # silently ignored). Each is documented in the OpenAPI schema (referral_platform/tenancy/schema.py).
    query_params_allowed: tuple[str, ...] = ()
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

    def accepted_query_params(self) -> set[str]:
        accepted = set(self.query_params_allowed)
        if self.paginator is not None:
            accepted |= {"limit", "offset"}
        return accepted

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        self._idempotency = None
        key = request.headers.get(IDEMPOTENCY_HEADER)
        if request.method == "POST" and key is not None:
            self._idempotency = idempotency_begin(request, tenant=self.tenant, key=key)
        # Lists only: a filter a list does not support must not silently return everything.
        if request.method in ("GET", "HEAD") and getattr(self, "list", None) is not None:
            repeated = sorted(name for name in request.query_params if len(request.query_params.getlist(name)) > 1)
            if repeated:
                raise exceptions.ValidationError({name: ["Give this query parameter once."] for name in repeated})
            unknown = sorted(set(request.query_params) - self.accepted_query_params())
            if unknown:
                accepted = ", ".join(sorted(self.accepted_query_params())) or "none"
                raise exceptions.ValidationError(
                    {name: [f"Unknown query parameter (this endpoint accepts: {accepted})."] for name in unknown}
                )

    def get_queryset(self):
        if self.model is None:
            raise TypeError(f"{type(self).__name__}.model is not set")
        tenant = self.tenant
        if tenant is None:
            raise exceptions.NotAuthenticated()
        queryset = self.scope_queryset(self.model.objects.for_tenant(tenant))
        return queryset.filter(tenant_id=tenant.pk)

    def handle_exception(self, exc):
        if isinstance(exc, IdempotentReplay):
            return exc.response
        return super().handle_exception(exc)

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        record = getattr(self, "_idempotency", None)
        if record is not None:
            self._idempotency = None
            idempotency_finish(record, response)
        return response

    def get_serializer_context(self):
        context = super().get_serializer_context()
        context["tenant"] = self.tenant if self.request else None
        return context


def int_param(request, name: str) -> int | None:
    """An integer id from the query string (``None`` when absent); 400 naming it when it is not one."""
    value = request.query_params.get(name)
    if value in (None, ""):
        return None
    try:
        number = int(value)
    except ValueError:
        number = None
    if number is None or not 1 <= number <= MAX_ID:
        raise exceptions.ValidationError({name: [f"{name} must be an integer id."]})
    return number


# --- Idempotency-Key on POST (Stripe's scheme) ---------------------------------------------------------

IDEMPOTENCY_HEADER = "Idempotency-Key"
IDEMPOTENCY_TTL = timedelta(hours=24)


class IdempotentReplay(Exception):
    def __init__(self, response: Response):
        super().__init__("idempotent replay")
        self.response = response


def _request_hash(request) -> str:
    try:
        body = request._request.body
    except RawPostDataException:  # the stream was consumed already: the parsed body stands for it
        body = json.dumps(request.data, sort_keys=True, default=str).encode()
    digest = hashlib.sha256()
    digest.update(request.method.encode() + b" " + request.path.encode() + b"\n")
    digest.update(body)
    return digest.hexdigest()


def idempotency_begin(request, *, tenant, key: str) -> IdempotencyKey:
    """Claim ``key`` for this request, or answer as Stripe does: the stored first answer for the same body
    (header ``Idempotent-Replayed: true``), 409 for another body or while the first is still running."""
    if not key or len(key) > 255:
        raise exceptions.ValidationError({IDEMPOTENCY_HEADER: ["Send a key of 1 to 255 characters."]})
    request_hash = _request_hash(request)
    since = timezone.now() - IDEMPOTENCY_TTL
    IdempotencyKey.objects.for_tenant(tenant).filter(key=key, created_at__lt=since).delete()
    record, created = IdempotencyKey.objects.get_or_create(
        tenant=tenant,
        key=key,
        defaults={"method": request.method, "path": request.path[:500], "request_hash": request_hash},
    )
    if created:
        return record
    if record.request_hash != request_hash:
        raise IdempotencyConflict(
            "Idempotency-Key: this key was used with another request (method, path or body); use a new key."
        )
    if record.status_code == 0:
        raise IdempotencyConflict("Idempotency-Key: a request with this key is still being answered; retry later.")
    response = Response(record.response_body, status=record.status_code)
    response["Idempotent-Replayed"] = "true"
    raise IdempotentReplay(response)


def idempotency_finish(record: IdempotencyKey, response) -> None:
    """Keep a successful answer for replays; forget the key after an error, so a corrected retry may use it."""
    if 200 <= response.status_code < 300 and isinstance(getattr(response, "data", None), dict | list):
        IdempotencyKey.objects.filter(pk=record.pk).update(
            status_code=response.status_code, response_body=response.data
        )
    else:
        IdempotencyKey.objects.filter(pk=record.pk, status_code=0).delete()


class IdempotencyConflict(exceptions.APIException):
    status_code = 409
    default_code = "conflict"


def idempotency_keys_expire(*, cutoff, max_attempts: int) -> int:
    """Reconciler sweep: forget keys older than 24 hours."""
    deleted, _ = IdempotencyKey.objects.filter(created_at__lt=timezone.now() - IDEMPOTENCY_TTL).delete()
    return deleted


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
    if isinstance(exc, IllegalMove):
        response = json_error(409, "conflict", "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items()))
        response.data["error"]["fields"] = exc.message_dict
        return response
    if isinstance(exc, DjangoValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        exc = exceptions.ValidationError(detail)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    if isinstance(exc, RequestDataTooBig):
        return json_error(413, "too_large", f"body: larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes.")
    if isinstance(exc, stripe.StripeError) and not isinstance(exc, stripe.CardError):
        message = getattr(exc, "user_message", None) or "Stripe did not answer as expected; try again later."
        return json_error(502, "upstream_error", f"stripe: {message}")
    if isinstance(exc, DataError | OverflowError):
        # A value the database cannot hold that no serializer bound caught: still the client's input.
        return json_error(
            400, "invalid", f"body: a value is out of range or not storable ({str(exc).splitlines()[0]})."
        )
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


def strict_fields(serializer, data, *, hints: dict[str, str] | None = None) -> None:
    """Refuse keys ``serializer`` does not know (a PATCH of a field it cannot change), naming them."""
    if hasattr(data, "keys"):
        unknown = sorted(set(data.keys()) - set(serializer.fields))
        if unknown:
            hints = hints or {}
            raise exceptions.ValidationError(
                {name: [hints.get(name, "This field cannot be changed here.")] for name in unknown}
            )


def strict_char_fields() -> None:
    """A text field takes a JSON string only: DRF would turn ``0`` into ``"0"``, accepting what the schema
    (and an integrator reading it) calls invalid. Installed once at start-up (TenancyConfig.ready)."""
    from rest_framework import fields

    if getattr(fields.CharField, "_strict", False):
        return
    original = fields.CharField.to_internal_value

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return original(self, data)

    fields.CharField.to_internal_value = to_internal_value
    fields.CharField._strict = True

    # A boolean is true or false: DRF would also take 0, 1, "yes", "on".
    original_bool = fields.BooleanField.to_internal_value

    def bool_to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return original_bool(self, data)

    fields.BooleanField.to_internal_value = bool_to_internal_value
