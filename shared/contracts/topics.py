"""Topic names (docs/architecture.md, "Topics"), derived from one namespace so tests can run
side by side."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True, slots=True)
class Topics:
    """Every Caliber topic, named ``<namespace>.<suffix>``.

    ``model_updates`` is log-compacted (latest registry state per model version key), and so
    is ``stack`` (the stack identity); every other topic is a plain retained log, kept for
    ``Settings.topic_retention_seconds``. ``routing`` carries route decisions and outcomes
    (the log the router's counts are rebuilt from).
    """

    inference_raw: str
    labels_raw: str
    predictions: str
    labels: str
    decisions: str
    alerts: str
    metrics: str
    deadletter: str
    model_updates: str
    routing: str
    stack: str
    """The stack identity (:mod:`shared.runtime.identity`): compacted, one partition."""
    segment_maps: str
    """Per-segment calibration maps (``SegmentMap``), compacted, keyed by model version and
    segment: the aggregator's refit loop writes them, the policy follows them."""

    @classmethod
    def for_namespace(cls, namespace: str = "caliber") -> Topics:
        if not namespace or any(c in namespace for c in " /\\"):
            raise ValueError(
                f"topic namespace {namespace!r} is not usable: expected a non-empty name "
                "without spaces or slashes"
            )
        return cls(
            inference_raw=f"{namespace}.inference.raw",
            labels_raw=f"{namespace}.labels.raw",
            predictions=f"{namespace}.predictions",
            labels=f"{namespace}.labels",
            decisions=f"{namespace}.decisions",
            alerts=f"{namespace}.alerts",
            metrics=f"{namespace}.metrics",
            deadletter=f"{namespace}.deadletter",
            model_updates=f"{namespace}.model-updates",
            routing=f"{namespace}.routing",
            stack=f"{namespace}.stack",
            segment_maps=f"{namespace}.segment-maps",
        )

    def all(self) -> list[str]:
        return [getattr(self, f.name) for f in fields(self)]

    @property
    def compacted(self) -> frozenset[str]:
        return frozenset({self.model_updates, self.stack, self.segment_maps})


def worker_app_id(namespace: str, worker: str) -> str:
    """The id of a worker's Faust app: the group Faust joins for itself and the prefix of the
    internal topics it declares (``<namespace>-<worker>-worker-…``)."""
    return f"{namespace}-{worker}-worker"


def is_worker_app_topic(topic: str, namespace: str) -> bool:
    """Whether ``topic`` is an internal topic of a worker's Faust app in ``namespace``."""
    rest = topic.removeprefix(f"{namespace}-")
    return rest != topic and "-worker-" in rest
