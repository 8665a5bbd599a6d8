"""Killing the aggregator twice during a 50,000-event run changes no count."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from shared.settings import Settings
from simulator.generator import ModelSpec, generate
from tests.integration.aggregator_io import send_decisions_and_labels
from tests.integration.conftest import start_service
from tests.integration.test_aggregator import totals, wait_counts


def test_two_kills_leave_exact_counts(isolated_settings: Settings, tmp_path: Path) -> None:
    settings = isolated_settings
    now = int(time.time() * 1000)
    gen = generate(
        ModelSpec(name="kills", version="v1", label_share=0.7),
        50_000,
        seed=8,
        start_ms=now - 30 * 60_000,
        rate_per_s=30,
    )
    send_decisions_and_labels(settings, gen)
    model = gen.predictions.key
    labeled = int(gen.labeled.sum())
    log = tmp_path / "aggregator.log"
    # Small fetches: many Redis applies, so the kills land between and during them.
    env = {"CALIBER_AGGREGATOR_MAX_MESSAGES": "5"}
    for progress in (15_000, 35_000):
        proc = start_service("aggregator", settings, log, **env)
        deadline = time.monotonic() + 90
        while totals(settings, model, "1h").get("n") < progress and time.monotonic() < deadline:
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert totals(settings, model, "1h").get("n") < 50_000, (
            "the kill came too late to test anything"
        )
    proc = start_service("aggregator", settings, log, **env)
    try:
        t = wait_counts(settings, model, "1h", 50_000, labeled, timeout=180)
        time.sleep(2)  # anything counted twice would show up now
        t = totals(settings, model, "1h")
        assert t.get("n") == 50_000
        assert t.get("L") == labeled
        assert sum(t.get(f"c{i}") for i in range(10)) == labeled
    finally:
        proc.terminate()
        proc.wait(30)
