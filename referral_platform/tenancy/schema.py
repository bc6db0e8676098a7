import inspect

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema as _SpectacularAutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "referral_platform.tenancy.authentication.ApiKeyAuthentication"
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A workspace API key: `Authorization: Bearer rk_<prefix>_<secret>`.",
        }


# --- the schema every operation gets (settings: DEFAULT_SCHEMA_CLASS, POSTPROCESSING_HOOKS) -------------

# Query parameters that name a row by id (the rest are strings, or enums a view declares).
ID_QUERY_PARAMS = frozenset({"conversion", "participant", "referral", "program", "partner", "endpoint"})


class AutoSchema(_SpectacularAutoSchema):
    """drf-spectacular's schema, plus: every query parameter a view accepts (``query_params_allowed``,
    with ``query_param_choices`` for enums) and ``limit``/``offset`` bounds; descriptions only from the
    view's own docstring (never a base class's, which describes internals, not the API)."""

    def get_description(self):
        view = self.view
        method = getattr(view, getattr(view, "action", None) or self.method.lower(), None)
        own = (method.__doc__ if method is not None and method.__doc__ else None) or type(view).__dict__.get("__doc__")
        return inspect.cleandoc(own) if own else ""

    def get_override_parameters(self):
        parameters = list(super().get_override_parameters())
        declared = {p.name for p in parameters if isinstance(p, OpenApiParameter)}
        choices = getattr(self.view, "query_param_choices", {})
        if self.method != "GET":
            return parameters
        for name in getattr(self.view, "query_params_allowed", ()):
            if name in declared:
                continue
            if name in ID_QUERY_PARAMS:
                parameters.append(
                    OpenApiParameter(name, OpenApiTypes.INT, description=f"Only rows of this {name} (its id).")
                )
            elif name in choices:
                parameters.append(
                    OpenApiParameter(name, str, enum=list(choices[name]), description=f"Only rows with this {name}.")
                )
            else:
                parameters.append(OpenApiParameter(name, str, description=f"Only rows with this {name}."))
        return parameters


ERROR_SCHEMA = {
    "type": "object",
    "description": "Every error answer has this shape.",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "status": {"type": "integer", "description": "The HTTP status, repeated."},
                "code": {
                    "type": "string",
                    "description": "Stable machine-readable code: invalid, not_authenticated, permission_denied, "
                    "not_found, conflict, too_large, throttled, upstream_error …",
                },
                "message": {"type": "string", "description": "What went wrong, naming the field at fault."},
                "fields": {
                    "type": "object",
                    "additionalProperties": {},
                    "description": "For 400: each invalid field (or query parameter) and what is wrong with it "
                    "(a list of messages; nested for nested fields).",
                },
            },
            "required": ["status", "code", "message"],
        }
    },
    "required": ["error"],
}

ERROR_DESCRIPTIONS = {
    "400": "Invalid input: a field, query parameter or the body itself; `fields` names each one. Nothing was written.",
    "401": "No credentials, or an unknown or revoked API key.",
    "403": "The key may not do this (a read-only key writing, or a caller that is not a workspace member).",
    "404": "No such object in your workspace (another workspace's objects answer the same).",
    "409": "Conflicts with what exists: the same external id (or Idempotency-Key) was used with a different "
    "body, or the object's status does not allow this move.",
    "413": "The body is larger than the server accepts.",
    "429": "Too many requests; retry after the number of seconds in `Retry-After`.",
    "502": "Stripe did not answer or refused; nothing was changed here. Retry later.",
}


MAX_ID = 2**63 - 1


def _tighten(schema: dict) -> None:
    """What the serializers enforce and drf-spectacular does not say: a required text is not only
    whitespace (DRF trims it), an integer id fits in a bigint."""
    if not isinstance(schema, dict):
        return
    if (
        schema.get("type") == "string"
        and schema.get("minLength", 0) >= 1
        and not ({"pattern", "format", "enum"} & set(schema))
    ):
        schema["pattern"] = r"\S"
    for inner in schema.get("properties", {}).values():
        _tighten(inner)
    if isinstance(schema.get("items"), dict):
        _tighten(schema["items"])


def error_responses(result, generator, request, public):
    """Postprocessing hook: document the error answers of every operation (the shared Error schema), and
    tighten the schemas to what the server enforces."""
    for component in result.get("components", {}).get("schemas", {}).values():
        _tighten(component)
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []) if isinstance(operation, dict) else []:
                schema = parameter.get("schema", {})
                if parameter.get("in") == "query" and parameter["name"] in ID_QUERY_PARAMS:
                    schema.update({"minimum": 1, "maximum": MAX_ID})
                if parameter.get("in") == "path" and schema.get("type") == "integer":
                    schema.update({"minimum": 1, "maximum": MAX_ID})
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    ref = {"$ref": "#/components/schemas/Error"}
    for operations in result.get("paths", {}).values():
        post = operations.get("post")
        # A POST that creates answers 201 Created with the body its 200 documents.
        if isinstance(post, dict) and "200" in post.get("responses", {}) and "201" not in post["responses"]:
            post["responses"]["201"] = {**post["responses"]["200"], "description": "Created."}
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            codes = ["400", "401", "403", "429"]
            if "{" in path:
                codes.append("404")
            if method in ("post", "put", "patch"):
                codes += ["409", "413"]
            if "stripe" in path:
                codes.append("502")
            for code in codes:
                operation["responses"].setdefault(
                    code, {"description": ERROR_DESCRIPTIONS[code], "content": {"application/json": {"schema": ref}}}
                )
    return result
