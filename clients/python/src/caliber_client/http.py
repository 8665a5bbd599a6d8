"""The gateway's REST API, with retries that are safe because every write is idempotent.

A retried prediction or label carries the same event id, which Caliber's ingest
deduplicates (per tenant), so a request that reached Caliber but whose answer was lost can
be sent again without counting anything twice. Retried: connection errors, timeouts, 5xx,
and 429 (after its ``Retry-After``). Never retried: other 4xx, which name the faulty field.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import httpx

from caliber_client.errors import CaliberError, RejectedError

logger = logging.getLogger(__name__)

RETRYABLE = frozenset({429, 500, 502, 503, 504})


class Api:
    """A small synchronous client of the gateway (thread-safe: httpx.Client is)."""

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        timeout: float = 10.0,
        retries: int = 5,
        backoff: float = 0.2,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"X-API-Key": api_key} if api_key else {}
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout, transport=transport
        )
        self.retries = retries
        self.backoff = backoff

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        retries: int | None = None,
        timeout: float | None = None,
    ) -> Any:
        """The answer's JSON; :class:`RejectedError` for a 4xx, :class:`CaliberError` when
        every attempt failed."""
        attempts = 1 + (self.retries if retries is None else retries)
        last = "no attempt"
        for attempt in range(attempts):
            wait = min(self.backoff * 2**attempt, 5.0)
            try:
                kwargs: dict[str, Any] = {"json": json, "params": params}
                if timeout is not None:
                    kwargs["timeout"] = timeout
                r = self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if r.status_code < 400:
                    return r.json() if r.content else None
                if r.status_code not in RETRYABLE:
                    raise RejectedError(r.status_code, _detail(r))
                last = f"{r.status_code}: {_detail(r)}"
                if r.status_code == 429:
                    wait = max(wait, float(r.headers.get("retry-after", "1")))
            if attempt + 1 < attempts:
                logger.info("caliber: %s %s failed (%s); retrying in %.1f s", method, path,
                            last, wait)  # fmt: skip
                time.sleep(wait)
        raise CaliberError(f"{method} {path} failed after {attempts} attempts: {last}")

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _detail(r: httpx.Response) -> Any:
    try:
        return r.json().get("detail")
    except (ValueError, AttributeError):
        return r.text[:300]
