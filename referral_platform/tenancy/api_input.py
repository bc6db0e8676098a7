"""What API input may be, checked before any view runs: bounded pagination, JSON the database can store,
bodies within the size limit. (Separate from api.py: DRF's settings import these while api.py is loading.)"""

from __future__ import annotations

from django.conf import settings
from django.http import JsonResponse
from rest_framework import exceptions, pagination, parsers, serializers

from referral_platform.money import ISO_4217

MAX_LIMIT = 500
MAX_OFFSET = 10**9
MAX_ID = 2**63 - 1


class LimitOffsetPagination(pagination.LimitOffsetPagination):
    """``limit`` (1 to 500, default 50) and ``offset`` (0 to 10**9); anything else is a 400 naming the parameter."""

    max_limit = MAX_LIMIT

    def _bounded(self, request, name: str, low: int, high: int, default: int) -> int:
        raw = request.query_params.get(name)
        if raw in (None, ""):
            return default
        try:
            value = int(raw)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise exceptions.ValidationError({name: [f"{name} must be an integer from {low} to {high}."]})
        return value

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.limit_query_param:
                parameter["schema"].update({"minimum": 1, "maximum": MAX_LIMIT, "default": self.default_limit})
            elif parameter["name"] == self.offset_query_param:
                parameter["schema"].update({"minimum": 0, "maximum": MAX_OFFSET, "default": 0})
        return parameters

    def get_limit(self, request):
        return self._bounded(request, self.limit_query_param, 1, MAX_LIMIT, self.default_limit)

    def get_offset(self, request):
        return self._bounded(request, self.offset_query_param, 0, MAX_OFFSET, 0)


MAX_JSON_DEPTH = 32


def _check_json(value, path: str, depth: int) -> None:
    if depth > MAX_JSON_DEPTH:
        raise exceptions.ValidationError({path or "body": [f"Nested deeper than {MAX_JSON_DEPTH} levels."]})
    if isinstance(value, dict):
        for key, item in value.items():
            inner = f"{path}.{key}" if path else str(key)
            if "\x00" in key:
                raise exceptions.ValidationError({(path or "body"): ["Keys must not contain NUL characters."]})
            _check_json(item, inner, depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_json(item, f"{path}[{index}]" if path else f"[{index}]", depth + 1)
    elif isinstance(value, str) and "\x00" in value:
        raise exceptions.ValidationError({path or "body": ["Must not contain NUL characters."]})


class JSONParser(parsers.JSONParser):
    """JSON bodies the database can store: no NUL character in any string or key, at most 32 levels of
    nesting (a 400 naming the field otherwise)."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ValidationError({"body": [f"Nested deeper than {MAX_JSON_DEPTH} levels."]}) from None
        _check_json(data, "", 0)
        return data


def json_error_response(status: int, code: str, message: str) -> JsonResponse:
    """The API's error shape outside DRF (middleware, Django's error handlers)."""
    return JsonResponse({"error": {"status": status, "code": code, "message": message}}, status=status)


class ApiBodyLimitMiddleware:
    """An API body over DATA_UPLOAD_MAX_MEMORY_SIZE is answered 413 in the JSON error shape before any
    view reads it (Django would answer a text/plain 400)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path.startswith("/api/"):
            limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
            try:
                length = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = 0
            if limit is not None and length > limit:
                return json_error_response(413, "too_large", f"body: larger than {limit} bytes.")
        return self.get_response(request)


# --- fields with the bounds the code can compute with -------------------------------------------------

MAX_AMOUNT_MINOR = 10**15  # within bigint, with room for sums; far beyond any real payment


class BoundedDateTimeField(serializers.DateTimeField):
    """A date-time between 2000-01-01 and 2100-12-31 (timezone arithmetic on year 1 or 9999 overflows)."""

    default_error_messages = {"bounds": "Must be between 2000-01-01 and 2100-12-31."}

    def to_internal_value(self, value):
        parsed = super().to_internal_value(value)
        if not 2000 <= parsed.year <= 2100:
            self.fail("bounds")
        return parsed


class CurrencyField(serializers.CharField):
    """An ISO 4217 currency code in capitals (USD, EUR, JPY)."""

    default_error_messages = {"currency": "Must be an ISO 4217 currency code in capitals, e.g. USD."}

    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", 3)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if value and value not in ISO_4217:
            self.fail("currency")
        return value
