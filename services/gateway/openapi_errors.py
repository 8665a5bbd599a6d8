"""Every operation of the OpenAPI document lists the error answers it can give, with their
shape.

Applied to the generated document, so an operation added later is covered without listing
its errors by hand; what an operation can answer follows from what it is:

- it needs a key (it has a security requirement): 401, 403, 429 (``Retry-After``), 503;
- it has a body: 400 (not UTF-8, not JSON), 413 and 422;
- it has parameters: 422;
- it has a path parameter or a required ``model_version_id``: 404;
- any other error it declares itself (409, say) gets the same shape.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from services.gateway.errors import ErrorOut, FieldError

DESCRIPTIONS = {
    400: "the body is not valid UTF-8 or not valid JSON",
    401: "no valid API key in `X-API-Key` or `Authorization: Bearer`",
    403: "the key's roles do not allow this",
    404: "no such resource in this tenant",
    409: "the request conflicts with the current state",
    413: "the body is larger than the route's limit (CALIBER_GATEWAY_MAX_BODY_BYTES, or "
    "CALIBER_GATEWAY_MAX_REFERENCE_BYTES for a drift reference)",
    422: "a field is missing, of the wrong type, out of range or beyond a limit; `detail` "
    "names each one (at most 50, `omitted` counts the rest)",
    429: "this key's request or event rate limit is exhausted; retry after `Retry-After` s",
    503: "a dependency (Kafka, Redis or PostgreSQL) is unavailable; nothing was done",
}
_REF = {"$ref": "#/components/schemas/ErrorOut"}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds to wait before the next attempt",
        "schema": {"type": "integer", "minimum": 1},
    }
}
_METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref", "")
    if ref.startswith("#/components/schemas/"):
        found: dict[str, Any] = spec["components"]["schemas"][ref.rsplit("/", 1)[1]]
        return found
    return schema


def error_codes(spec: dict[str, Any], operation: dict[str, Any]) -> set[int]:
    codes = {int(c) for c in operation.get("responses", {}) if c.isdigit() and int(c) >= 400}
    if operation.get("security"):
        codes |= {401, 403, 429, 503}
    params = operation.get("parameters", [])
    if params:
        codes.add(422)
    required_model = any(p["name"] == "model_version_id" and p.get("required") for p in params)
    body = operation.get("requestBody")
    if body:
        codes |= {400, 413, 422}
        for content in body.get("content", {}).values():
            schema = _resolve(spec, content.get("schema", {}))
            required_model |= "model_version_id" in schema.get("required", [])
    if any(p["in"] == "path" for p in params) or required_model:
        codes.add(404)
    return codes


def with_errors(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` with the error answers of every operation (changed in place)."""
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    defs = ErrorOut.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(defs.pop("$defs", {}))
    schemas["ErrorOut"] = defs
    schemas.setdefault("FieldError", FieldError.model_json_schema())
    for path_item in spec.get("paths", {}).values():
        for method, operation in path_item.items():
            if method not in _METHODS:
                continue
            responses = operation.setdefault("responses", {})
            for code in sorted(error_codes(spec, operation)):
                answer = responses.setdefault(str(code), {})
                answer.setdefault("description", DESCRIPTIONS.get(code, "error"))
                if "content" not in answer or "HTTPValidationError" in str(answer["content"]):
                    answer["content"] = {"application/json": {"schema": _REF}}
                if code == 429:
                    answer.setdefault("headers", _RETRY_AFTER)
    return spec


def document_errors(app: FastAPI) -> None:
    """Make ``app.openapi()`` return the document with every operation's error answers."""
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = with_errors(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
