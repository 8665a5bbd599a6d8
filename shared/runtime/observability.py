"""Logging and the Prometheus endpoint of a worker process."""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, start_http_server

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT, force=True)
    # Client libraries are chatty at INFO; their warnings still come through.
    for noisy in ("aiokafka", "faust", "mode", "kafka", "httpx"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


def serve_metrics(port: int, registry: CollectorRegistry) -> None:
    """Expose ``registry`` on http://127.0.0.1:<port>/metrics (0 = do not serve)."""
    if port:
        start_http_server(port, addr="127.0.0.1", registry=registry)
        logging.getLogger(__name__).info("metrics on http://127.0.0.1:%d/metrics", port)
