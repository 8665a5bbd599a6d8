"""The review console in headless Chromium, against the gateway and workers on the real stack.

Predictions go gateway → ingest → policy → recorder/aggregator; the browser then signs in,
reads both versions' ECE, resolves a withheld prediction and watches the live feed. A
screenshot of the run is saved as reports/console.png.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
import pytest
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from shared.runtime import redis_client
from shared.settings import Settings
from tests.integration.browser import headless_chromium
from tests.integration.conftest import start_service
from tests.integration.gateway_client import make_keys, start_gateway
from tests.integration.polling import poll
from tooling.benchmarking import REPO_ROOT

SCREENSHOT = REPO_ROOT / "reports" / "console.png"
THRESHOLDS = {"v1": 0.6, "v2": 0.8}
EVENTS_PER_VERSION = 300
LABELS = ("cat", "dog", "fox")
WAIT_S = 90
SHIFT_AFTER = 150
"""v1's events from here on have a length 4 standard deviations longer: a drift alert."""
DRIFT_ENV = {
    "CALIBER_DRIFT_REFERENCE_EVENTS": "100",
    "CALIBER_DRIFT_MIN_SAMPLES": "50",
    "CALIBER_DRIFT_EVAL_SECONDS": "1",
}


@dataclass
class Env:
    settings: Settings
    base: str
    keys: dict[str, str]
    models: dict[str, int] = field(default_factory=dict)
    labeled: dict[str, int] = field(default_factory=dict)
    queued: set[str] = field(default_factory=set)

    def client(self, who: str) -> httpx.Client:
        return httpx.Client(base_url=self.base, headers={"X-API-Key": self.keys[who]}, timeout=30)


def _events(
    rng: random.Random, model_id: int, over_confident: bool, shift_after: int | None
) -> list[dict[str, Any]]:
    """Three-class predictions; the over-confident version is right less often than it says.

    Four in five carry their ground truth; the rest wait for a label (or a reviewer)."""
    out = []
    for i in range(EVENTS_PER_VERSION):
        length = rng.gauss(40 if shift_after is None or i < shift_after else 72, 8)
        confidence = round(rng.uniform(0.4, 1.0), 4)
        predicted = rng.choice(LABELS)
        others = [label for label in LABELS if label != predicted]
        # The rest split so that the predicted label stays the most probable.
        split = rng.uniform(max(0.0, 1 - 2 * confidence), min(confidence, 1 - confidence))
        chance = max(confidence - 0.3, 0.05) if over_confident else confidence
        event: dict[str, Any] = {
            "model_version_id": model_id,
            "predicted_label": predicted,
            "confidence": confidence,
            "probabilities": {
                predicted: confidence,
                others[0]: split,
                others[1]: 1 - confidence - split,
            },
            "features": {
                "length_cm": round(length, 2),
                "channel": rng.choice(["web", "app"]),
            },
        }
        if i % 5:
            event["ground_truth"] = predicted if rng.random() < chance else rng.choice(others)
        out.append(event)
    return out


@pytest.fixture(scope="module")
def env(isolated_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    logs = tmp_path_factory.mktemp("console")
    keys = make_keys(
        isolated_settings,
        {
            "admin": ("acme", ["admin"]),
            "reviewer": ("acme", ["reviewer"]),
            "viewer": ("acme", ["viewer"]),
            "producer": ("acme", ["producer"]),
        },
    )
    base, gateway = start_gateway(isolated_settings, logs)
    e = Env(isolated_settings, base, keys)
    workers = []
    try:
        with e.client("admin") as c:
            parent = None
            for version, threshold in THRESHOLDS.items():
                r = c.post(
                    "/api/models",
                    json={
                        "name": "triage",
                        "version": version,
                        "stage": "production" if parent is None else "staging",
                        "parent_id": parent,
                        "abstain_threshold": threshold,
                    },
                )
                assert r.status_code == 201, r.text
                parent = e.models[version] = r.json()["id"]
        with psycopg.connect(isolated_settings.postgres_url) as conn:
            # The registry reaches model-updates (via the outbox) before the policy starts.
            poll(
                lambda: conn.execute(
                    "SELECT count(*) = 0 FROM outbox WHERE published_at IS NULL"
                ).fetchone()[0],  # type: ignore[index]
                30,
                "the outbox to be published",
            )
        workers = [
            start_service(n, isolated_settings, logs / f"{n}.log")
            for n in ("ingest", "policy", "recorder", "aggregator")
        ]
        workers.append(start_service("drift", isolated_settings, logs / "drift.log", **DRIFT_ENV))
        rng = random.Random(6)
        with e.client("producer") as c:
            for version, model_id in e.models.items():
                events = _events(
                    rng,
                    model_id,
                    over_confident=version == "v2",
                    shift_after=SHIFT_AFTER if version == "v1" else None,
                )
                r = c.post("/api/predictions/batch", json={"events": events})
                assert r.status_code == 202, r.text
                e.labeled[version] = sum("ground_truth" in ev for ev in events)
                e.queued |= {
                    p["event_id"]
                    for p, ev in zip(r.json()["predictions"], events, strict=True)
                    if p["status"] == "review" and "ground_truth" not in ev
                }
        with e.client("viewer") as c:
            for version, model_id in e.models.items():
                poll(
                    lambda m=model_id, v=version: (
                        c.get("/api/calibration", params={"model_version_id": m}).json()[
                            "n_labeled"
                        ]
                        == e.labeled[v]
                    ),
                    WAIT_S,
                    f"{version}'s labels in the aggregator's windows",
                )
            poll(
                lambda: (
                    {
                        p["event_id"]
                        for p in c.get("/api/review-queue", params={"limit": 1000}).json()
                    }
                    == e.queued
                ),
                WAIT_S,
                "the review queue to hold the unlabeled withheld predictions",
            )
            poll(
                lambda: any(
                    a["feature"] == "length_cm" and a["severity"] != "resolved"
                    for a in c.get(
                        "/api/drift-alerts", params={"model_version_id": e.models["v1"]}
                    ).json()
                ),
                WAIT_S,
                "v1's drift alert on length_cm",
            )
        yield e
    finally:
        for p in [*workers, gateway]:
            p.terminate()  # type: ignore[attr-defined]
        for p in [*workers, gateway]:
            p.wait(30)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    with headless_chromium("--window-size=1440,1000", "--lang=en-GB", console_log=True) as d:
        yield d


def _until(driver: WebDriver, condition: Callable[[WebDriver], Any], what: str) -> Any:
    def guarded(d: WebDriver) -> Any:
        try:
            return condition(d)
        except StaleElementReferenceException:
            return False  # the console re-rendered meanwhile; look again

    try:
        return WebDriverWait(driver, WAIT_S, poll_frequency=0.2).until(guarded)
    except TimeoutException:
        raise AssertionError(f"the console never showed {what}") from None


def _text(driver: WebDriver, css: str) -> str:
    found = driver.find_elements(By.CSS_SELECTOR, css)
    return found[0].text.strip() if found else ""


def _visible(driver: WebDriver, css: str) -> WebElement | None:
    found = [el for el in driver.find_elements(By.CSS_SELECTOR, css) if el.is_displayed()]
    return found[0] if found else None


def _sign_in(driver: WebDriver, base: str, key: str) -> None:
    # Forget the last key on a page of the same origin that is not the console: opening the
    # console with a key still stored would start its requests under the old session.
    driver.get(base + "/health")
    driver.execute_script("sessionStorage.clear()")
    driver.get_log("browser")  # what the last session logged (a bad key's 401) is not this one's
    driver.get(base + "/console")
    field_ = _until(driver, lambda d: _visible(d, "#api-key"), "the sign-in form")
    field_.send_keys(key)
    driver.find_element(By.ID, "login-button").click()


def _queue_rows(driver: WebDriver) -> list[str]:
    return [
        str(r.get_attribute("data-event-id"))
        for r in driver.find_elements(By.CSS_SELECTOR, "#queue tr.queue-row")
    ]


def test_the_page_needs_no_key_and_loads_nothing_from_elsewhere(env: Env) -> None:
    with httpx.Client(base_url=env.base) as c:
        moved = c.get("/console")
        assert moved.status_code in (307, 308) and moved.headers["location"] == "/console/"
        page = c.get("/console/")
        assert page.status_code == 200 and "<title>Caliber" in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert "javascript" in c.get("/console/app.js").headers["content-type"]
        assert c.get("/api/models").status_code == 401, "the data still needs a key"
    for f in (REPO_ROOT / "services/gateway/console").iterdir():
        # The one absolute URL allowed is SVG's namespace name, which is never fetched.
        text = f.read_text().replace("http://www.w3.org/2000/svg", "")
        assert "http://" not in text and "https://" not in text, f.name


def test_a_bad_key_and_a_producer_key_are_turned_away(env: Env, browser: WebDriver) -> None:
    _sign_in(browser, env.base, "clb_not-a-key")
    error = _until(browser, lambda d: _visible(d, "#login-error"), "the sign-in error")
    assert "not valid" in error.text
    _sign_in(browser, env.base, env.keys["producer"])
    notice = _until(browser, lambda d: _visible(d, "#no-read"), "the cannot-read notice")
    assert "cannot read" in notice.text and "producer" in notice.text
    assert _text(browser, "#tenant") == "acme"
    assert not browser.find_element(By.ID, "dashboard").is_displayed()


def test_a_viewer_sees_the_queue_without_resolve_buttons(env: Env, browser: WebDriver) -> None:
    _sign_in(browser, env.base, env.keys["viewer"])
    _until(browser, lambda d: len(_queue_rows(d)) == len(env.queued), "the viewer's queue")
    assert _visible(browser, "#queue-readonly") is not None
    browser.find_element(By.CSS_SELECTOR, "#queue tr.queue-row").click()
    detail = _until(browser, lambda d: _visible(d, "#review-detail"), "the prediction's detail")
    assert "Resolving needs a reviewer" in detail.text
    assert browser.find_elements(By.ID, "resolve") == []
    assert {b.text for b in browser.find_elements(By.CSS_SELECTOR, ".review-button")} == {"View"}


def test_a_reviewer_reads_the_ece_resolves_one_and_the_feed_moves(
    env: Env, browser: WebDriver
) -> None:
    with env.client("viewer") as c:
        ece = {
            v: c.get("/api/calibration", params={"model_version_id": m}).json()["ece"]
            for v, m in env.models.items()
        }
    assert ece["v2"] > ece["v1"] + 0.1, f"the over-confident version shows it: {ece}"

    _sign_in(browser, env.base, env.keys["reviewer"])
    _until(browser, lambda d: _text(d, "#tenant") == "acme", "the tenant")
    assert _text(browser, "#roles") == "reviewer"
    for version, model_id in env.models.items():
        shown = f"{ece[version]:.3f}"
        _until(
            browser,
            lambda d, m=model_id, s=shown: (
                _text(d, f'#overview tr[data-model-id="{m}"] td.ece') == s
            ),
            f"{version}'s ECE {shown}",
        )
    # The selected version (the production one) has the same ECE on its reliability card.
    _until(
        browser, lambda d: _text(d, "#reliability-stats .ece") == f"{ece['v1']:.3f}", "v1's card"
    )
    assert browser.find_elements(By.CSS_SELECTOR, "#reliability-chart svg .acc-bar")
    assert browser.find_elements(By.CSS_SELECTOR, "#risk-chart svg path.area")
    _until(browser, lambda d: "length_cm" in _text(d, "#alerts-table"), "v1's drift alert")
    assert "length_cm" in _text(browser, "#drift-scores"), "the drifted feature's score"
    # The rollout card: the active calibrator, and no candidate yet.
    _until(browser, lambda d: "active identity" in _text(d, "#rollout-note"), "the rollout card")
    assert "no rollout yet" in _text(browser, "#rollout-metrics-box")
    assert "no transitions yet" in _text(browser, "#rollout-log-box")

    before = len(env.queued)
    _until(browser, lambda d: _text(d, "#queue-count") == str(before), f"{before} queued")
    assert sorted(_queue_rows(browser)) == sorted(env.queued)
    _until(browser, lambda d: _text(d, "#feed-status") == "live", "the live feed connected")
    feed_before = len(browser.find_elements(By.CSS_SELECTOR, "#feed li"))

    target = _queue_rows(browser)[0]
    browser.find_element(By.CSS_SELECTOR, f'#queue tr[data-event-id="{target}"]').click()
    _until(browser, lambda d: _visible(d, "#review-detail #resolve"), "the resolve form")
    choice = browser.find_element(By.CSS_SELECTOR, "#review-detail .label-choice")
    truth = str(choice.get_attribute("data-label"))
    choice.click()
    browser.find_element(By.ID, "resolve").click()

    _until(browser, lambda d: _text(d, "#queue-count") == str(before - 1), "the queue one shorter")
    assert target not in _queue_rows(browser)
    assert len(_queue_rows(browser)) == before - 1
    _until(browser, lambda d: _visible(d, "#review-detail #resolve"), "the next one opened")
    opened = browser.find_element(By.ID, "review-detail").get_attribute("data-event-id")
    assert opened in env.queued - {target}, "the reviewer moves on to another withheld one"
    with env.client("viewer") as c:
        remaining = {
            p["event_id"] for p in c.get("/api/review-queue", params={"limit": 1000}).json()
        }
    assert remaining == env.queued - {target}
    review = _until(
        browser, lambda d: _visible(d, '#feed li[data-type="review"]'), "the resolution in the feed"
    )
    assert truth in review.text

    # New confident predictions (decided auto, so the queue stays as it is) move the feed on.
    with env.client("producer") as c:
        fresh = [
            {"model_version_id": env.models["v1"], "predicted_label": "cat", "confidence": 0.99}
            for _ in range(5)
        ]
        assert c.post("/api/predictions/batch", json={"events": fresh}).status_code == 202
    _until(
        browser,
        lambda d: len(d.find_elements(By.CSS_SELECTOR, '#feed li[data-type="decision"]')) >= 5,
        "the new decisions in the feed",
    )
    assert len(browser.find_elements(By.CSS_SELECTOR, "#feed li")) >= feed_before + 6
    assert _text(browser, "#queue-count") == str(before - 1)

    errors = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == [], "the page logged errors (scripts, CSP, failed requests)"

    # For the screenshot: the next withheld prediction still open, the whole page in view.
    for _ in range(2):  # the second pass measures the page laid out at its new size
        height = browser.execute_script(
            "return document.documentElement.scrollHeight + window.outerHeight - window.innerHeight"
        )
        browser.set_window_size(1440, max(1000, int(height) + 8))
    browser.execute_script("window.scrollTo(0, 0)")
    _until(browser, lambda d: not d.find_element(By.ID, "toast").is_displayed(), "the toast gone")
    SCREENSHOT.parent.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(SCREENSHOT))


def _seed_rollout(env: Env, model_id: int) -> str:
    """A canary of v1 as the calibrator and the aggregator leave it: an artifact, the rollout
    and its two transitions in PostgreSQL, the paired statistics in Redis."""
    import hashlib

    import numpy as np

    from shared.recalibration.artifact import artifact_version, canonical, make_artifact
    from shared.windows.rollout import decision_fields, label_fields, rollout_key

    art = make_artifact("temperature", "confidence", {"beta": 0.5, "temperature": 2.0})
    version = artifact_version(art)
    set_hash = hashlib.sha256(version.encode()).hexdigest()
    registry = (
        '{"candidate_version": "%s", "candidate_calibrator": %s, "rollout_stage": "%s", '
        '"canary_share": %s}'
    )
    with psycopg.connect(env.settings.postgres_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO calibration_sets (hash, tenant_id, model_version_id, manifest, "
            "rows_blob) VALUES (%s, 'acme', %s, '{}'::jsonb, ''::bytea)",
            (set_hash, model_id),
        )
        conn.execute(
            "INSERT INTO calibration_artifacts (tenant_id, version, model_version_id, kind, "
            "artifact, set_hash) VALUES ('acme', %s, %s, 'temperature', %s, %s)",
            (version, model_id, canonical(art).decode(), set_hash),
        )
        rid = conn.execute(
            "INSERT INTO calibrator_rollouts (tenant_id, model_version_id, candidate_version, "
            "previous_version, stage, canary_share) VALUES ('acme', %s, %s, 'identity', "
            "'canary', 0.1) RETURNING id",
            (model_id, version),
        ).fetchone()[0]  # type: ignore[index]
        quoted = '"' + canonical(art).decode().replace('"', '\\"') + '"'
        for frm, to, share in (("staged", "shadow", 0.0), ("shadow", "canary", 0.1)):
            conn.execute(
                "INSERT INTO rollout_transitions (rollout_id, tenant_id, model_version_id, "
                "candidate_version, from_stage, to_stage, trigger, reason, numbers, registry) "
                "VALUES (%s, 'acme', %s, %s, %s, %s, 'auto', 'seeded', %s, %s)",
                (rid, model_id, version, frm, to, '{"labeled": 400}',
                 registry % (version, quoted, to, share)),
            )  # fmt: skip
    rng = np.random.default_rng(3)
    n = 400
    active = rng.uniform(0.55, 0.99, n)
    candidate = 1 / (1 + np.exp(-0.5 * (np.log(active) - np.log1p(-active))))
    correct = rng.random(n) < candidate
    canary = rng.random(n) < 0.3
    fields = label_fields(active, candidate, correct, canary)
    fields.update(decision_fields(active < 0.6, candidate < 0.6, canary, active < 0.6))
    client = redis_client.sync_client(env.settings.redis_dsn)
    try:
        key = rollout_key(env.settings.redis_prefix, "acme/triage/v1", version)
        client.hset(key, mapping=fields)  # type: ignore[arg-type]
    finally:
        client.close()
    return version


def test_the_rollout_card_shows_both_maps_each_arm_and_the_log(
    env: Env, browser: WebDriver
) -> None:
    version = _seed_rollout(env, env.models["v1"])
    _sign_in(browser, env.base, env.keys["viewer"])
    _until(
        browser,
        lambda d: f"candidate {version} (canary at 10.0" in _text(d, "#rollout-note"),
        "the canary on the rollout card (applied to the registry by the gateway)",
    )
    with env.client("viewer") as c:
        paired = c.get(f"/api/models/{env.models['v1']}/rollout").json()["paired"]
    _until(browser, lambda d: "candidate" in _text(d, "#rollout-metrics"), "the metrics table")
    table = _text(browser, "#rollout-metrics")
    assert f"{paired['active']['ece']:.3f}" in table
    assert f"{paired['candidate']['ece']:.3f}" in table
    assert paired["candidate"]["ece"] < paired["active"]["ece"]
    arms = browser.find_elements(By.CSS_SELECTOR, "#rollout-arms svg")
    assert len(arms) == 2, "a reliability diagram per arm"
    log = _text(browser, "#rollout-log")
    assert "shadow → canary" in log and "staged → shadow" in log
