"""Fit time of every calibration method and serve-time cost of every map.

    python -m bench.recalibration [--rows 10000,100000] [--repeat 200]

Binary sets carry the top-label confidence only (top-label fits); 10-class sets carry
probability vectors (temperature, isotonic one-vs-rest and vector scaling fit on them, the
others on the top-label confidence). Serve time: one ``apply`` on a batch of 500 events, as
the policy calls it, in µs per event (median over ``--repeat`` batches).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from shared.recalibration.artifact import artifact_version
from shared.recalibration.data import FitData, Fitted, log_scores
from shared.recalibration.maps import from_registry
from shared.recalibration.methods import METHODS, fit


def binary(n: int, seed: int) -> FitData:
    rng = np.random.default_rng(seed)
    conf = rng.uniform(0.5, 1.0, n)
    return FitData(conf, rng.random(n) < conf - 0.1)


def multiclass(n: int, k: int, seed: int) -> tuple[FitData, np.ndarray]:
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2, (n, k))
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    t = np.exp(z / 2) / np.exp(z / 2).sum(axis=1, keepdims=True)
    y = (t.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    classes = tuple(f"c{i}" for i in range(k))
    return FitData(p.max(axis=1), p.argmax(axis=1) == y, classes, log_scores(p), y), p


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", default="10000,100000")
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    sizes = [int(x) for x in args.rows.split(",")]
    print(f"{'method':<16}{'classes':>8}{'rows':>10}{'fit s':>10}{'serve µs/event':>16}")
    for n in sizes:
        for k in (2, 10):
            if k == 2:
                data, probs = binary(n, 1), None
            else:
                data, probs = multiclass(n, k, 2)
            labels = list(data.classes)
            for method in METHODS:
                if method == "vector_scaling" and k == 2:
                    continue
                started = time.perf_counter()
                res = fit(method, data)
                seconds = time.perf_counter() - started
                if not isinstance(res, Fitted):
                    print(f"{method:<16}{k:>8}{n:>10}  failed: {res.message}")
                    continue
                m = from_registry(artifact_version(res.artifact), res.artifact)
                conf = data.confidences[:500]
                batch = None if probs is None else probs[:500]
                times = []
                for _ in range(args.repeat):
                    t0 = time.perf_counter()
                    m.apply(conf, batch, None, labels)
                    times.append(time.perf_counter() - t0)
                serve = float(np.median(times)) / 500 * 1e6
                print(f"{method:<16}{k:>8}{n:>10}{seconds:>10.3f}{serve:>16.2f}")


if __name__ == "__main__":
    main()
