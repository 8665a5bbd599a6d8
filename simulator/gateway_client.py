"""The gateway's REST API as a user's scripts call it: register versions, read metrics."""

from __future__ import annotations

import time
from typing import Any

import httpx


def wait_ready(base_url: str, timeout: float = 60.0) -> None:
    """Return once the gateway's ``/health`` answers 200 (every dependency up)."""
    url = base_url.rstrip("/") + "/health"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == httpx.codes.OK:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer 200 within {timeout:.0f} s")


class GatewayClient:
    """A thin client of the gateway for one API key (so one tenant)."""

    def __init__(self, base_url: str, api_key: str, timeout: float = 10.0) -> None:
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"), headers={"X-API-Key": api_key}, timeout=timeout
        )

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def tenant(self) -> str:
        """The tenant of the key in use: events for its models must carry it."""
        r = self._http.get("/api/me")
        r.raise_for_status()
        return str(r.json()["tenant"])

    def ensure_version(
        self,
        name: str,
        version: str,
        stage: str = "staging",
        parent_id: int | None = None,
        abstain_threshold: float = 0.7,
    ) -> dict[str, Any]:
        """The registry row of ``name``/``version``, registered first if it is not there.

        An existing version is returned as it is (its stage and threshold unchanged), so
        running a scenario twice registers nothing twice.
        """
        body = {
            "name": name,
            "version": version,
            "stage": stage,
            "parent_id": parent_id,
            "abstain_threshold": abstain_threshold,
        }
        r = self._http.post("/api/models", json=body)
        if r.status_code == httpx.codes.CONFLICT:
            return self.find(name, version)
        r.raise_for_status()
        row: dict[str, Any] = r.json()
        return row

    def find(self, name: str, version: str) -> dict[str, Any]:
        r = self._http.get("/api/models")
        r.raise_for_status()
        for row in r.json():
            if row["name"] == name and row["version"] == version:
                return dict(row)
        raise LookupError(f"model {name!r} version {version!r} is not registered")

    def _get(self, path: str, **params: Any) -> Any:
        r = self._http.get(path, params=params)
        r.raise_for_status()
        return r.json()

    def calibration(self, model_version_id: int, window: str = "all") -> dict[str, Any]:
        return dict(self._get("/api/calibration", model_version_id=model_version_id, window=window))

    def risk_coverage(self, model_version_id: int, window: str = "all") -> dict[str, Any]:
        return dict(
            self._get("/api/risk-coverage", model_version_id=model_version_id, window=window)
        )

    def review_queue_size(self, model_version_id: int) -> int:
        """Withheld predictions of the version still waiting for a reviewer."""
        size, page = 0, 1000
        while True:
            rows = self._get(
                "/api/review-queue", model_version_id=model_version_id, limit=page, offset=size
            )
            size += len(rows)
            if len(rows) < page:
                return size

    def drift_alerts(self, model_version_id: int) -> list[dict[str, Any]]:
        """Drift alerts raised for the version (an empty list where drift is not served)."""
        r = self._http.get("/api/drift-alerts", params={"model_version_id": model_version_id})
        if r.status_code == httpx.codes.NOT_FOUND:
            return []
        r.raise_for_status()
        return list(r.json())
