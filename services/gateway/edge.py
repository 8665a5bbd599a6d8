"""The gateway's edge: key, rate, body size and text checks before a route sees a request.

In this order, for every HTTP request, before any of its body is read:

1. the route is matched; a route that needs a key (its dependencies hold
   :func:`~services.gateway.auth.require`) gets 401 without a valid key in ``X-API-Key`` or
   ``Authorization: Bearer`` (never the query string), and the caller's principal is kept
   for the route's role check; in anonymous mode a request without a key is the anonymous
   principal, refused (403) when it comes from a browser page of an origin not allowed
   (``services/gateway/anonymous.py``);
2. the key's request bucket is charged; an empty bucket answers 429 with ``Retry-After``;
3. the body is read into one buffer, never past the route's limit (a declared
   ``Content-Length`` above it is refused before reading; a streamed or chunked body is
   counted as it arrives): 413;
4. a JSON body must be UTF-8 without lone surrogates (no store can hold one): 400 / 422.

The route then reads the buffered body. Per request the gateway holds the body once
(briefly twice while it is joined) plus what parsing makes of it.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.gateway.anonymous import origin_allowed, refusal_detail
from services.gateway.auth import KeyStore, presented_key, unauthorized_detail
from services.gateway.errors import ErrorResponse
from services.gateway.ratelimit import SharedBuckets, TokenBuckets, retry_after
from services.gateway.settings import GatewaySettings
from shared.contracts.errors import ErrorCode

PRINCIPAL = "caliber_principal"
"""Key of the caller's principal in the request state."""
LARGE_BODY = "caliber_large_body"
"""Attribute of an endpoint that takes the larger (reference) body limit."""
_DRAIN_BYTES = 1 << 20
"""How much of an oversized body is read and dropped before 413, so the client, still
sending, gets to read the answer instead of a reset connection."""
_DRAIN_SECONDS = 0.5
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
F = TypeVar("F")


def large_body(endpoint: F) -> F:
    """Mark an endpoint as taking ``gateway_max_reference_bytes`` instead of the usual limit."""
    setattr(endpoint, LARGE_BODY, True)
    return endpoint


def required_roles(dependant: Dependant) -> frozenset[str] | None:
    """The roles a route's key check allows, or None when the route needs no key."""
    for dep in dependant.dependencies:
        roles = getattr(dep.call, "caliber_roles", None)
        if roles is not None:
            return frozenset(roles)
        found = required_roles(dep)
        if found is not None:
            return found
    return None


def flat_routes(routes: Sequence[BaseRoute]) -> Iterator[BaseRoute]:
    """Every route, those of included routers too (FastAPI keeps them nested)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from flat_routes(inner.routes)
        else:
            yield route


def match_route(routes: Sequence[BaseRoute], scope: Scope) -> BaseRoute | None:
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return route
    return None


def lone_surrogate_at(value: Any, path: list[str | int]) -> list[str | int] | None:
    """Where in parsed JSON a string (or key) holds a lone surrogate, or None."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            found = lone_surrogate_at(k, [*path, "(key)"]) or lone_surrogate_at(v, [*path, k])
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found = lone_surrogate_at(v, [*path, i])
            if found is not None:
                return found
    return None


def text_fault(body: bytes) -> tuple[int, list[dict[str, Any]]] | None:
    """(status, detail) when a JSON body is not UTF-8 or holds a lone surrogate."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return 400, [
            {
                "loc": ["body", exc.start],
                "msg": f"the body is not valid UTF-8 at byte {exc.start}",
                "type": "invalid_utf8",
            }
        ]
    if _SURROGATE_ESCAPE.search(body) is None:
        return None  # the common case: a scan, no parse
    try:
        parsed = json.loads(body)
    except ValueError:
        return None  # the route answers malformed JSON itself
    where = lone_surrogate_at(parsed, ["body"])
    if where is None:
        return None
    return 422, [
        {
            "loc": where,
            "msg": "a string holds a lone surrogate (a \\ud800-\\udfff escape not part of a "
            "pair); no store can hold it, so it is refused",
            "type": ErrorCode.STRING_SURROGATE.value,
        }
    ]


class _TooLarge(Exception):
    pass


class Edge:
    def __init__(self, app: ASGIApp, settings: GatewaySettings) -> None:
        self.app = app
        self.limit = settings.gateway_max_body_bytes
        self.reference_limit = settings.gateway_max_reference_bytes
        self.requests = SharedBuckets(
            TokenBuckets(
                settings.gateway_rate_requests_per_second,
                settings.gateway_rate_requests_per_second * settings.gateway_rate_burst_seconds,
            ),
            settings.redis_prefix,
            "requests",
        )
        self.origins = settings.gateway_cors_origins
        self._roles: dict[int, frozenset[str] | None] = {}
        self._routes: list[BaseRoute] | None = None

    def _roles_of(self, route: BaseRoute | None) -> frozenset[str] | None:
        if not isinstance(route, APIRoute):
            return None
        if id(route) not in self._roles:
            self._roles[id(route)] = required_roles(route.dependant)
        return self._roles[id(route)]

    def limit_of(self, route: BaseRoute | None) -> int:
        endpoint = getattr(route, "endpoint", None)
        return self.reference_limit if getattr(endpoint, LARGE_BODY, False) else self.limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        app: FastAPI = scope["app"]
        if self._routes is None:
            self._routes = list(flat_routes(app.router.routes))
        route = match_route(self._routes, scope)
        if route is not None:
            scope["route"] = route  # so the request metrics name the route of a refusal
        if self._roles_of(route) is not None:
            keys: KeyStore = app.state.gateway.keys
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            principal = await keys.lookup(presented_key(headers))
            if principal is None:
                await ErrorResponse(unauthorized_detail(), 401, {"WWW-Authenticate": "Bearer"})(
                    scope, receive, send
                )
                return
            if principal.anonymous and not origin_allowed(headers, self.origins):
                await ErrorResponse(refusal_detail(headers.get("origin")), 403)(
                    scope, receive, send
                )
                return
            scope.setdefault("state", {})[PRINCIPAL] = principal
            redis = getattr(app.state.gateway, "route_redis", None)  # shared by the replicas
            wait = await self.requests.take(principal.key_id, 1.0, redis)
            if wait:
                await ErrorResponse(
                    "too many requests for this API key "
                    "(CALIBER_GATEWAY_RATE_REQUESTS_PER_SECOND); retry after the given seconds",
                    429,
                    {"Retry-After": retry_after(wait)},
                )(scope, receive, send)
                return
        limit = self.limit_of(route)
        try:
            body = await self._read(scope, receive, limit)
        except _TooLarge:
            await ErrorResponse(
                [
                    {
                        "loc": ["body"],
                        "msg": f"request body is larger than the limit of {limit} bytes "
                        f"({self._setting(limit)}); send fewer events per request",
                        "type": "too_large",
                    }
                ],
                413,
                {"Connection": "close"},
            )(scope, receive, send)
            return
        if body is None:
            return  # the client went away
        if body and _is_json(scope):
            fault = text_fault(body)
            if fault is not None:
                await ErrorResponse(fault[1], fault[0])(scope, receive, send)
                return
        await self.app(scope, _replay(body, receive), send)

    def _setting(self, limit: int) -> str:
        if limit == self.reference_limit and limit != self.limit:
            return "CALIBER_GATEWAY_MAX_REFERENCE_BYTES"
        return "CALIBER_GATEWAY_MAX_BODY_BYTES"

    async def _read(self, scope: Scope, receive: Receive, limit: int) -> bytes | None:
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                raise _TooLarge
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > limit:
                chunks.clear()
                await _drain(receive, message, _DRAIN_BYTES)
                raise _TooLarge
            if chunk:
                chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _is_json(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return b"json" in value.lower()
    return True  # FastAPI parses a body without a content type as JSON


async def _drain(receive: Receive, message: Message, budget: int) -> None:
    """Read and drop what the client is still sending: at most ``budget`` bytes, and only
    while it keeps sending (a stalled client gets its answer after ``_DRAIN_SECONDS``)."""
    while message.get("more_body", False) and budget > 0:
        try:
            message = await asyncio.wait_for(receive(), _DRAIN_SECONDS)
        except TimeoutError:
            return
        if message["type"] != "http.request":
            return
        budget -= len(message.get("body", b""))


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: the disconnect, whenever it comes

    return replay
