"""The client: send predictions and labels, calibrate locally, route.

Kafka when it can be reached, else the gateway's REST API, behind the same calls::

    caliber = Caliber(url="http://127.0.0.1:8000", api_key=KEY, kafka_bootstrap="127.0.0.1:19092")
    event_id = caliber.send("digits", "v1", predicted_label="3", confidence=0.91)
    caliber.label(event_id, "3")
    caliber.flush()   # raises DeliveryError naming whatever was not delivered
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Literal

from caliber_client.batcher import Batcher, ErrorHandler
from caliber_client.calibration import LocalCalibrator
from caliber_client.events import ROUTE_DECISION, Event, LabelEvent, new_event_id, now_ms
from caliber_client.http import Api
from caliber_client.kafka_sink import KafkaSink, kafka_reachable
from caliber_client.rest_sink import RestSink
from caliber_client.router import RouterClient

logger = logging.getLogger(__name__)

Transport = Literal["auto", "kafka", "rest"]


class Caliber:
    """A connection to one Caliber deployment, for one tenant.

    ``transport``: ``kafka`` (``kafka_bootstrap`` required), ``rest`` (the gateway at
    ``url``; needs a key with the producer role, or anonymous access), or ``auto``: Kafka
    when a broker answers within ``probe_seconds``, else REST (logged). Over Kafka the
    events carry ``tenant``; over REST the key's tenant applies.

    A batch goes out at ``max_events`` or after ``linger_ms``, from a sender thread; at most
    ``max_pending`` sealed batches wait for it before :meth:`send` blocks.
    """

    def __init__(
        self,
        url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        *,
        tenant: str = "default",
        kafka_bootstrap: str | None = None,
        topic_namespace: str = "caliber",
        transport: Transport = "auto",
        linger_ms: float = 20.0,
        max_events: int = 500,
        max_pending: int = 100,
        retries: int = 5,
        timeout: float = 10.0,
        probe_seconds: float = 3.0,
        kafka_config: Mapping[str, Any] | None = None,
        on_error: ErrorHandler | None = None,
    ) -> None:
        self.api = Api(url, api_key, timeout=timeout, retries=retries)
        self.tenant = tenant
        self.transport = self._choose(transport, kafka_bootstrap, probe_seconds, kafka_config)
        if self.transport == "kafka":
            assert kafka_bootstrap is not None
            sink: Any = KafkaSink(kafka_bootstrap, tenant, topic_namespace, kafka_config)
        else:
            sink = RestSink(self.api)
        self._batcher = Batcher(sink, linger_ms, max_events, on_error, max_pending)
        self.router = RouterClient(self.api)

    @staticmethod
    def _choose(
        transport: Transport,
        bootstrap: str | None,
        probe_seconds: float,
        config: Mapping[str, Any] | None,
    ) -> Literal["kafka", "rest"]:
        if transport == "kafka" and bootstrap is None:
            raise ValueError("transport='kafka' needs kafka_bootstrap")
        if transport != "auto":
            return transport
        if bootstrap is not None and kafka_reachable(bootstrap, probe_seconds, config):
            return "kafka"
        if bootstrap is not None:
            logger.warning("caliber: Kafka at %s unreachable; sending through the REST API",
                           bootstrap)  # fmt: skip
        return "rest"

    def send(
        self,
        model_name: str,
        model_version: str,
        predicted_label: str,
        confidence: float,
        *,
        probabilities: Mapping[str, float] | None = None,
        features: Mapping[str, float | str] | None = None,
        ground_truth: str | None = None,
        event_id: str | None = None,
        event_time_ms: int | None = None,
        metadata: Mapping[str, str] | None = None,
        decision_id: str | None = None,
    ) -> str:
        """Queue one prediction; returns its event id (the key of its later label).

        ``decision_id``: the routing decision this prediction served; its label becomes
        that decision's outcome.
        """
        meta = dict(metadata or {})
        if decision_id is not None:
            meta[ROUTE_DECISION] = decision_id
        event = Event(
            model_name=model_name,
            model_version=model_version,
            predicted_label=str(predicted_label),
            confidence=float(confidence),
            event_id=event_id or new_event_id(),
            event_time_ms=now_ms() if event_time_ms is None else event_time_ms,
            probabilities=None if probabilities is None else dict(probabilities),
            features=None if features is None else dict(features),
            ground_truth=None if ground_truth is None else str(ground_truth),
            metadata=meta,
        )
        self._batcher.add(event)
        return event.event_id

    def label(
        self,
        event_id: str,
        ground_truth: str,
        *,
        model_name: str | None = None,
        model_version: str | None = None,
    ) -> None:
        """Queue the ground truth of an earlier prediction."""
        self._batcher.add(LabelEvent(event_id, str(ground_truth), model_name, model_version))

    def flush(self, timeout: float = 30.0) -> None:
        """Send everything queued and wait for it; :class:`DeliveryError` names what failed."""
        self._batcher.flush(timeout)

    def calibrator(self, model_version_id: int, refresh_seconds: float = 30.0) -> LocalCalibrator:
        """The active calibrator of a model version, applied in-process and kept current."""
        return LocalCalibrator(self.api, model_version_id, refresh_seconds)

    def model_version_id(self, model_name: str, model_version: str) -> int:
        """The registry id of a model version (``GET /api/models``)."""
        for m in self.api.request("GET", "/api/models"):
            if m["name"] == model_name and m["version"] == model_version:
                return int(m["id"])
        raise LookupError(f"model version {model_name}/{model_version} is not registered")

    def close(self, timeout: float = 30.0) -> None:
        try:
            self._batcher.close(timeout)
        finally:
            self.api.close()

    def __enter__(self) -> Caliber:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
