"""The REST sink: the same batches through the gateway when Kafka cannot be reached.

Predictions go to ``POST /api/predictions/batch`` (all or none per request), labels to
``POST /api/labels``. Batches are posted from the batcher's thread with the retries of
:class:`~caliber_client.http.Api`; event ids make every retry idempotent.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from caliber_client.batcher import Item
from caliber_client.errors import CaliberError
from caliber_client.events import Event
from caliber_client.http import Api


class RestSink:
    def __init__(self, api: Api) -> None:
        self._api = api

    def deliver(self, items: Sequence[Item], failed: Callable[[list[str], str], None]) -> None:
        bodies = [i.rest_body() for i in items]
        try:
            if isinstance(items[0], Event):
                self._api.request("POST", "/api/predictions/batch", json={"events": bodies})
            else:
                self._api.request("POST", "/api/labels", json={"labels": bodies})
        except CaliberError as exc:
            failed([i.event_id for i in items], str(exc))

    def service(self, timeout: float) -> None:
        time.sleep(timeout)

    def drain(self, timeout: float) -> list[str]:
        return []  # deliver() returns only once its request is answered

    def close(self) -> None:
        return None
