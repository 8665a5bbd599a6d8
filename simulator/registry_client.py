"""Registering model versions through the gateway, as a user's deployment script would."""

from __future__ import annotations

from typing import Any

import httpx


class RegistryClient:
    """A thin client of the gateway's registry endpoints (``/api/models``)."""

    def __init__(self, base_url: str, api_key: str, timeout: float = 10.0) -> None:
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"), headers={"X-API-Key": api_key}, timeout=timeout
        )

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *_: object) -> None:
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
