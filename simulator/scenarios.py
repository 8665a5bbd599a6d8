"""Named, seeded scenarios: what a new user sends first, and what Caliber must say about it.

Every scenario registers its model versions through the gateway, sends their events and
labels to Kafka as a model server and a label feed would, and knows from its own generated
arrays what Caliber should then report (``Expected``): the same seed gives the same events
(event ids included), so running a scenario twice sends duplicates that ingest drops, and
the figures stay those of one run.

- ``seed``: two versions of one model: a production version whose accuracy tracks its
  confidence (ECE about 0.04) and an over-confident candidate (ECE about 0.17) whose parent
  is the production version; ground truth on most events, and a review backlog (withheld
  predictions that no label has resolved).
- ``drift``: a covariate shift of one standard deviation in two numeric features from the
  middle of the run on.
- ``label-delay``: labels that arrive minutes to hours (event time) after their predictions.
- ``tenants``: one model in each of two tenants; neither tenant can see the other's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from shared.metrics.calibration import ece_from_arrays
from shared.metrics.selective import risk_coverage
from simulator.generator import Generated, ModelSpec, generate

GRID = 0.001
"""Confidences are generated on this grid, where Caliber's 1,000-cell confidence
histogram answers risk–coverage exactly, so expected and measured AURC agree to the digit."""


@dataclass(frozen=True, slots=True)
class VersionPlan:
    spec: ModelSpec
    stage: str = "staging"
    threshold: float = 0.7
    parent: int | None = None
    """Index, in the scenario's ``versions``, of the version this one descends from."""


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    summary: str
    versions: tuple[VersionPlan, ...]
    events: int
    """Events per version."""
    seed: int
    span_s: float = 1_800.0
    """Event time the events cover, ending ``end_offset_s`` before now."""
    end_offset_s: float = 0.0
    drifted: tuple[str, ...] = ()
    """Features whose distribution the scenario shifts (a drift alert is expected for
    each); every other feature is stationary."""

    @property
    def tenants(self) -> list[str]:
        return sorted({v.spec.tenant for v in self.versions})


@dataclass(frozen=True, slots=True)
class Expected:
    """What Caliber must report for one version, from the generated arrays alone."""

    events: int
    labeled: int
    ece: float | None
    aurc: float | None
    review: int
    """Predictions below the version's threshold (the policy's calibration is identity)."""
    backlog: int
    """Withheld predictions no label resolves: the review queue once everything is in."""


@dataclass(slots=True)
class Planned:
    plan: VersionPlan
    generated: Generated
    expected: Expected = field(init=False)

    def __post_init__(self) -> None:
        self.expected = expected_of(self.generated, self.plan.threshold)


def expected_of(gen: Generated, threshold: float) -> Expected:
    conf = gen.predictions.confidences
    labeled = gen.labeled
    withheld = conf < threshold
    rc = risk_coverage(conf[labeled], gen.correct[labeled]) if labeled.any() else None
    return Expected(
        events=len(conf),
        labeled=int(labeled.sum()),
        ece=ece_from_arrays(conf[labeled], gen.correct[labeled]),
        aurc=None if rc is None else rc.aurc,
        review=int(withheld.sum()),
        backlog=int((withheld & ~labeled).sum()),
    )


def _seed() -> Scenario:
    def version(name: str, overconfidence: float) -> ModelSpec:
        return ModelSpec(
            name="triage",
            version=name,
            overconfidence=overconfidence,
            label_share=0.9,
            numeric_features=4,
            categorical_features=1,
        )

    return Scenario(
        "seed",
        "a calibrated production model beside an over-confident candidate, with a review backlog",
        (
            VersionPlan(
                version("v1", 0.04),
                stage="production",
                threshold=0.7,
            ),
            VersionPlan(
                version("v2", 0.17),
                threshold=0.7,
                parent=0,
            ),
        ),
        events=6_000,
        seed=11,
    )


def _drift() -> Scenario:
    n = 12_000
    return Scenario(
        "drift",
        "x1 and x2 shift by one standard deviation from the middle of the run on",
        (
            VersionPlan(
                ModelSpec(
                    name="fraud",
                    version="v1",
                    numeric_features=4,
                    categorical_features=1,
                    label_share=0.5,
                    feature_shift={"x1": 1.0, "x2": 1.0},
                    shift_at=n // 2,
                ),
                stage="production",
            ),
        ),
        events=n,
        seed=23,
        drifted=("x1", "x2"),
    )


def _label_delay() -> Scenario:
    return Scenario(
        "label-delay",
        "labels arrive 2 minutes to 6 hours (event time) after their predictions",
        (
            VersionPlan(
                ModelSpec(
                    name="eta",
                    version="v1",
                    overconfidence=0.05,
                    late_label_share=0.8,
                    label_delay_s=(120.0, 6 * 3_600.0),
                    numeric_features=2,
                ),
                stage="production",
            ),
        ),
        events=4_000,
        seed=37,
        span_s=2 * 3_600.0,
        end_offset_s=6 * 3_600.0,
    )


def _tenants() -> Scenario:
    return Scenario(
        "tenants",
        "one model in each of two tenants, whose data never mixes",
        (
            VersionPlan(
                ModelSpec(name="churn", version="v1", tenant="acme", overconfidence=0.02),
                stage="production",
            ),
            VersionPlan(
                ModelSpec(name="churn", version="v1", tenant="globex", overconfidence=0.12),
                stage="production",
            ),
        ),
        events=3_000,
        seed=41,
    )


SCENARIOS: dict[str, Callable[[], Scenario]] = {
    "seed": _seed,
    "drift": _drift,
    "label-delay": _label_delay,
    "tenants": _tenants,
}


def scenario(name: str) -> Scenario:
    if name not in SCENARIOS:
        raise ValueError(f"scenario must be one of {', '.join(SCENARIOS)}; got {name!r}")
    return SCENARIOS[name]()


def plan(s: Scenario, now_ms: int) -> list[Planned]:
    """The scenario's events, version by version, with their expected figures."""
    start_ms = now_ms - int((s.span_s + s.end_offset_s) * 1000)
    rate = s.events / s.span_s
    return [
        Planned(v, generate(v.spec, s.events, s.seed + i, start_ms, rate_per_s=rate, grid=GRID))
        for i, v in enumerate(s.versions)
    ]
