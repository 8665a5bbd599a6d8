"""Real classifiers on data sets that ship inside scikit-learn, streamed through Caliber.

Two versions of one model per data set: ``logreg`` (standardised features into a logistic
regression, whose probabilities are close to calibrated) and ``naive-bayes`` (Gaussian
naive Bayes, which treats correlated pixels or measurements as independent evidence and so
is over-confident). Both are trained on the same half of the data; their outputs on the
other, held-out half (probabilities, predicted label, features and ground truth) become
Caliber's events. Nothing is downloaded: ``load_digits`` and ``load_breast_cancer`` read
files inside the scikit-learn wheel.

What Caliber must measure for a version is computed here from those same outputs with the
pure functions of :mod:`shared.metrics.calibration` (``expected_ece``).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.naive_bayes import GaussianNB
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from shared.contracts.batches import PredictionColumns
from shared.contracts.codec import AvroCodec
from shared.contracts.topics import Topics
from shared.metrics.calibration import ece_from_arrays
from shared.runtime.kafka import make_producer
from shared.settings import Settings
from simulator.gateway_client import GatewayClient
from simulator.generator import Generated, ModelSpec
from simulator.producer import produce

EVENT_NAMESPACE = uuid.UUID("0f3c5e7a-2b1d-4c8e-9a6f-5d4b3c2a1908")
Loader = Callable[[], Any]
DATASETS: dict[str, Loader] = {"digits": load_digits, "breast-cancer": load_breast_cancer}


@dataclass(frozen=True, slots=True)
class RealModel:
    version: str
    stage: str
    """The registry stage the demo gives it: the calibrated one serves, the other is a candidate."""
    build: Callable[[int], ClassifierMixin]


MODELS = (
    RealModel(
        "logreg",
        "production",
        lambda seed: make_pipeline(StandardScaler(), LogisticRegression(max_iter=5_000)),
    ),
    RealModel("naive-bayes", "staging", lambda seed: GaussianNB()),
)


def feature_name(raw: str) -> str:
    """A data set's column name as a feature key: lower case, runs of other characters as
    one underscore (``"mean radius"`` → ``mean_radius``)."""
    return re.sub(r"[^a-z0-9]+", "_", raw.lower()).strip("_")


def held_out_outputs(
    dataset: str,
    tenant: str = "default",
    seed: int = 0,
    test_size: float = 0.5,
    start_ms: int = 0,
    rate_per_s: float = 100.0,
) -> list[Generated]:
    """Train every model of ``MODELS`` on ``dataset`` and return its held-out outputs as
    events of model ``dataset``, version ``RealModel.version``, one every ``1/rate_per_s`` s
    of event time from ``start_ms``. Every event is labeled, on time."""
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {sorted(DATASETS)}, got {dataset!r}")
    data = DATASETS[dataset]()
    x = np.asarray(data.data, dtype=np.float64)
    names = [str(n) for n in data.target_names]
    y = np.asarray([names[i] for i in data.target])
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_size, random_state=seed, stratify=y
    )
    features = [feature_name(str(n)) for n in data.feature_names]
    n = len(y_test)
    times = start_ms + (np.arange(n) * (1000.0 / rate_per_s)).astype(np.int64)
    out: list[Generated] = []
    for model in MODELS:
        clf = model.build(seed)
        clf.fit(x_train, y_train)
        classes = [str(c) for c in clf.classes_]
        probs = np.asarray(clf.predict_proba(x_test), dtype=np.float64)
        top = probs.argmax(axis=1)
        predicted = [classes[i] for i in top]
        confidence = probs[np.arange(n), top]
        correct = np.asarray(predicted) == y_test
        # Ids follow from what the event is, so streaming the same outputs twice sends
        # duplicates that ingest drops rather than a second copy of the traffic.
        ids = [
            str(uuid.uuid5(EVENT_NAMESPACE, f"{tenant}/{dataset}/{model.version}/{seed}/{i}"))
            for i in range(n)
        ]
        cols = PredictionColumns(
            tenant=tenant,
            model_name=dataset,
            model_version=model.version,
            event_ids=ids,
            event_time_ms=times.copy(),
            predicted_labels=predicted,
            confidences=confidence,
            class_labels=classes,
            probabilities=probs,
            numeric_features={f: x_test[:, j].copy() for j, f in enumerate(features)},
        )
        spec = ModelSpec(name=dataset, version=model.version, tenant=tenant, classes=tuple(classes))
        out.append(
            Generated(
                spec=spec,
                predictions=cols,
                ground_truth=y_test.tolist(),
                correct=correct,
                labeled=np.ones(n, dtype=bool),
                late=np.zeros(n, dtype=bool),
                label_time_ms=times.copy(),
                expected_ece=float(ece_from_arrays(confidence, correct) or 0.0),
            )
        )
    return out


@dataclass(slots=True)
class Streamed:
    """One streamed version: its registry id and what Caliber should measure for it."""

    model_version_id: int
    generated: Generated

    @property
    def key(self) -> str:
        return self.generated.predictions.key

    @property
    def events(self) -> int:
        return len(self.generated.predictions)

    @property
    def accuracy(self) -> float:
        return float(self.generated.correct.mean())

    @property
    def expected_ece(self) -> float:
        return self.generated.expected_ece


def register_and_stream(
    settings: Settings,
    registry: GatewayClient,
    datasets: list[str],
    seed: int = 0,
    now_ms: int | None = None,
) -> list[Streamed]:
    """Register both versions of each data set's model (``naive-bayes``'s parent is
    ``logreg``) and send their held-out outputs, as PredictionBatch messages to
    caliber.inference.raw, then their ground truth as LabelBatch messages."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    tenant = registry.tenant()
    generated: list[Generated] = []
    streamed: list[Streamed] = []
    for dataset in datasets:
        parent: int | None = None
        for model, gen in zip(MODELS, held_out_outputs(dataset, tenant, seed=seed), strict=True):
            # Event times end now, so every window (5 min and up) holds all of them.
            shift = now_ms - int(gen.predictions.event_time_ms[-1])
            gen.predictions.event_time_ms = gen.predictions.event_time_ms + shift
            gen.label_time_ms = gen.label_time_ms + shift
            row = registry.ensure_version(dataset, model.version, model.stage, parent)
            parent = parent or int(row["id"])
            generated.append(gen)
            streamed.append(Streamed(int(row["id"]), gen))
    produce(
        make_producer(settings),
        Topics.for_namespace(settings.topic_namespace),
        AvroCodec(),
        generated,
        form="batch",
    )
    return streamed
