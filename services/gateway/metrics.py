"""Every Prometheus metric of the gateway.

Label values are bounded: ``route`` is the path template (``/api/review/{event_id}``, never
an id; ``unmatched`` for paths no route serves), ``method`` an HTTP method and ``code`` a
status code. No metric carries a model version or tenant.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "caliber_gateway_requests_total",
            "HTTP requests by route template, method and status code",
            ["route", "method", "code"],
            registry=registry,
        )
        self.latency = Histogram(
            "caliber_gateway_request_seconds",
            "HTTP request latency by route template",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=registry,
        )
        self.events_accepted = Counter(
            "caliber_gateway_events_accepted_total",
            "Inference events accepted over REST and published to inference.raw",
            registry=registry,
        )
        self.route_records_failed = Counter(
            "caliber_gateway_route_records_failed_total",
            "Route decision records Kafka did not take (their outcomes cannot be counted)",
            registry=registry,
        )
        self.ws_clients = Gauge(
            "caliber_gateway_ws_clients", "Connected /ws/live clients", registry=registry
        )
        self.ws_dropped = Counter(
            "caliber_gateway_ws_dropped_total",
            "/ws/live clients closed for falling too far behind (fan-out drops)",
            registry=registry,
        )
        self.review_queue = Gauge(
            "caliber_review_queue_depth",
            "Predictions withheld and awaiting review, all tenants together (counted at each "
            "scrape; any tenant's key reads /metrics, so no tenant's model names are exported)",
            registry=registry,
        )
        self.reviews_resolved = Counter(
            "caliber_gateway_reviews_resolved_total",
            "Withheld predictions resolved by a reviewer",
            registry=registry,
        )
        self.outbox_backlog = Gauge(
            "caliber_gateway_outbox_backlog",
            "Outbox rows not yet published to Kafka",
            registry=registry,
        )
        self.outbox_published = Counter(
            "caliber_gateway_outbox_published_total",
            "Outbox rows published to Kafka by this instance's relay",
            registry=registry,
        )
        self.outbox_errors = Counter(
            "caliber_gateway_outbox_errors_total",
            "Relay rounds that failed (Kafka or PostgreSQL unavailable, delivery refused)",
            registry=registry,
        )

    def set_review_queue(self, depth: int) -> None:
        self.review_queue.set(depth)
