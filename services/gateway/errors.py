"""Error answers of the gateway: one JSON shape, bounded in size, never echoing the input.

Every 4xx/5xx body is ``{"detail": <message or list of field errors>}``; a list holds at
most :data:`MAX_FIELD_ERRORS` entries (``omitted`` counts the rest), a message at most
:data:`MAX_MESSAGE` characters, and an offending value is shown only as an excerpt of
:data:`MAX_EXCERPT` characters. Lone surrogates in any of it are replaced, so the body is
always valid UTF-8 JSON. The whole body stays under :data:`MAX_ERROR_BYTES`.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

logger = logging.getLogger(__name__)

MAX_FIELD_ERRORS = 50
MAX_MESSAGE = 300
MAX_EXCERPT = 40
MAX_LOC = 8
MAX_ERROR_BYTES = 64 * 1024
_SURROGATE = re.compile("[\ud800-\udfff]")


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="where: 'body', 'query' or 'path', then the field")
    msg: str = Field(description="what is wrong and what was expected")
    type: str = Field(description="a stable code of the kind of fault")
    input: str | None = Field(
        default=None, description=f"an excerpt (at most {MAX_EXCERPT} characters) of the value"
    )


class ErrorOut(BaseModel):
    """Every error answer of the API."""

    detail: str | list[FieldError]
    omitted: int | None = Field(
        default=None, description="field errors left out of `detail` to keep the answer short"
    )


def clean(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, lone surrogates replaced by U+FFFD."""
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = _SURROGATE.sub("\ufffd", text)
    return text


def excerpt(value: Any) -> str | None:
    if value is None or (isinstance(value, dict | list) and not value):
        return None
    if isinstance(value, str):
        return clean(value, MAX_EXCERPT)
    try:
        text = json.dumps(value, default=str)[: MAX_EXCERPT * 4]
    except (TypeError, ValueError):
        text = type(value).__name__
    return clean(text, MAX_EXCERPT)


def _field_error(entry: Any) -> dict[str, Any]:
    if not isinstance(entry, dict):
        return {"loc": ["body"], "msg": clean(str(entry), MAX_MESSAGE), "type": "value"}
    loc = [
        p if isinstance(p, int) and not isinstance(p, bool) else clean(str(p), MAX_EXCERPT)
        for p in list(entry.get("loc") or ["body"])[:MAX_LOC]
    ]
    out: dict[str, Any] = {
        "loc": loc,
        "msg": clean(str(entry.get("msg", "")), MAX_MESSAGE),
        "type": clean(str(entry.get("type", "value")), MAX_EXCERPT),
    }
    shown = excerpt(entry.get("input"))
    if shown is not None:
        out["input"] = shown
    return out


def error_body(detail: Any) -> dict[str, Any]:
    """The bounded ``{"detail": ...}`` body for any detail an exception carries."""
    if isinstance(detail, list | tuple):
        entries = [_field_error(e) for e in detail[:MAX_FIELD_ERRORS]]
        body: dict[str, Any] = {"detail": entries}
        if len(detail) > len(entries):
            body["omitted"] = len(detail) - len(entries)
        return body
    return {"detail": clean(str(detail), MAX_MESSAGE)}


class ErrorResponse(Response):
    media_type = "application/json"

    def __init__(
        self, detail: Any, status_code: int, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(error_body(detail), status_code, headers)

    def render(self, content: Any) -> bytes:
        data = json.dumps(content, ensure_ascii=False, allow_nan=False).encode()
        while len(data) > MAX_ERROR_BYTES and isinstance(content["detail"], list):
            keep = len(content["detail"]) // 2
            content["omitted"] = content.get("omitted", 0) + len(content["detail"]) - keep
            content["detail"] = content["detail"][:keep]
            data = json.dumps(content, ensure_ascii=False, allow_nan=False).encode()
        return data


def install(app: FastAPI) -> None:
    """Answer every error of ``app`` with :class:`ErrorResponse`."""

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        return ErrorResponse(list(exc.errors()), 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code in (204, 304):
            return Response(status_code=exc.status_code, headers=exc.headers)
        return ErrorResponse(exc.detail, exc.status_code, dict(exc.headers or {}))

    @app.exception_handler(OverflowError)
    @app.exception_handler(asyncpg.DataError)
    async def out_of_range(request: Request, exc: Exception) -> Response:
        # A value the request models let through but PostgreSQL cannot hold, a NUL in a
        # name say (a safety net: the models bound integers to int64).
        logger.warning("%s %s: %s", request.method, request.url.path, type(exc).__name__)
        return ErrorResponse(
            [{"loc": ["body"], "msg": f"a value cannot be stored: {exc}", "type": "out_of_range"}],
            422,
        )

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> Response:
        logger.exception("%s %s failed", request.method, request.url.path)
        return ErrorResponse(
            f"internal error ({type(exc).__name__}); the request was not done", 500
        )
