"""Logging and the Prometheus endpoint of a worker process."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Hashable

from prometheus_client import CollectorRegistry, Gauge, start_http_server

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT, force=True)
    # Client libraries are chatty at INFO; their warnings still come through.
    for noisy in ("aiokafka", "faust", "mode", "kafka", "httpx"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


def serve_metrics(port: int, registry: CollectorRegistry, host: str = "127.0.0.1") -> None:
    """Expose ``registry`` on http://<host>:<port>/metrics (0 = do not serve)."""
    if port:
        start_http_server(port, addr=host, registry=registry)
        logging.getLogger(__name__).info("metrics on http://%s:%d/metrics", host, port)


Series = tuple[Gauge, tuple[str, ...]]


class RoundSeries:
    """Gauge series set in rounds, per group (one model version, or all of them): ending a
    group's round removes the series its previous round set and this one did not, so a
    value that is no longer exported or no longer defined disappears instead of staying
    at its last value."""

    def __init__(self) -> None:
        self._previous: dict[Hashable, set[Series]] = {}
        self._current: dict[Hashable, set[Series]] = {}

    def begin(self, group: Hashable = None) -> None:
        self._current[group] = set()

    def set(
        self, gauge: Gauge, labels: tuple[str, ...], value: float, group: Hashable = None
    ) -> None:
        gauge.labels(*labels).set(value)
        self._current.setdefault(group, set()).add((gauge, labels))

    def end(self, group: Hashable = None) -> None:
        current = self._current.pop(group, set())
        for gauge, labels in self._previous.get(group, set()) - current:
            with contextlib.suppress(KeyError):
                gauge.remove(*labels)
        if current:
            self._previous[group] = current
        else:
            self._previous.pop(group, None)

    def exported(self, group: Hashable = None) -> bool:
        """Whether the group's last round set any series."""
        return group in self._previous
