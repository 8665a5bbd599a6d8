"""What the policy knows of each model version: its threshold and calibration map.

The registry itself is followed from the compacted model-updates topic by
:class:`shared.registry.view.RegistryView` in the background; this module turns a registry
entry into the rule the decision needs, builds each calibration map once, and waits at start
until the view has read the whole topic so a restart never decides with stale defaults.
Nothing here touches PostgreSQL.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from shared.recalibration.maps import IDENTITY, CalibrationMap, CalibratorError, from_registry
from shared.recalibration.serving import Candidate, candidate_of
from shared.registry.view import RegisteredVersion, RegistryView

logger = logging.getLogger(__name__)

UNREGISTERED = "unregistered"
"""The ``model`` label value shared by every model version missing from the registry."""


@dataclass(frozen=True, slots=True)
class Rule:
    """How one model version's predictions are decided."""

    threshold: float
    calibration: CalibrationMap
    threshold_source: str
    """``registry`` or ``default`` (the model version is not registered)."""
    model_label: str
    """Metric label value: the registered model name, or ``unregistered``."""
    model_version_id: int | None = None
    segment_key: str | None = None
    """Feature or metadata key whose values are calibrated by segment maps, if any."""
    candidate: Candidate | None = None
    """A calibrator under rollout beside the active map (shadow or canary)."""


class RegistryState:
    """Rules by model version key, from a registry lookup (``RegistryView.get``)."""

    def __init__(
        self,
        lookup: Callable[[str], RegisteredVersion | None],
        default_threshold: float,
    ) -> None:
        if not 0.0 <= default_threshold <= 1.0:
            raise ValueError(f"default_threshold must be in [0, 1], got {default_threshold}")
        self._lookup = lookup
        self.default = Rule(default_threshold, IDENTITY, "default", UNREGISTERED)
        self._rules: dict[str, tuple[RegisteredVersion, Rule]] = {}
        self._maps: dict[tuple[str, str | None], CalibrationMap] = {}

    def rule(self, key: str) -> Rule:
        """The rule of model version ``key``; the default rule when it is not registered."""
        entry = self._lookup(key)
        if entry is None:
            self._rules.pop(key, None)
            return self.default
        cached = self._rules.get(key)
        # The view replaces an entry's object on every update, so identity means unchanged.
        if cached is not None and cached[0] is entry:
            return cached[1]
        rule = Rule(
            threshold=entry.abstain_threshold,
            calibration=self._calibration(entry),
            threshold_source="registry",
            model_label=entry.name,
            model_version_id=entry.id,
            segment_key=entry.segment_key,
            candidate=self._candidate(entry),
        )
        self._rules[key] = (entry, rule)
        return rule

    def _candidate(self, entry: RegisteredVersion) -> Candidate | None:
        return candidate_of(entry)

    def _calibration(self, entry: RegisteredVersion) -> CalibrationMap:
        spec = (entry.calibrator_version, entry.calibrator)
        found = self._maps.get(spec)
        if found is None:
            try:
                found = from_registry(*spec)
            except CalibratorError as exc:
                # The gateway makes the same choice, so its predicted decision stays right;
                # decisions then record "identity", which is what ran.
                logger.error(
                    "%s (model version %s); deciding with the identity map", exc, entry.key
                )
                found = IDENTITY
            self._maps[spec] = found
        return found


async def wait_for_registry(
    view: RegistryView, follower: asyncio.Task[None], seconds: float, what: str = "registry"
) -> bool:
    """Wait until ``view`` has read the whole registry topic, at most ``seconds``.

    True when caught up, False on timeout (the policy then goes on with what it knows) or
    when the follower stopped because the worker is stopping; raises at once when the
    ``follower`` task running ``view.run`` fails.
    """
    started = time.monotonic()
    caught_up = asyncio.ensure_future(view.caught_up.wait())
    try:
        await asyncio.wait({caught_up, follower}, timeout=seconds, return_when="FIRST_COMPLETED")
    finally:
        caught_up.cancel()
    if follower.done():
        follower.result()  # raises the follower's error; else it was asked to stop
        return view.caught_up.is_set()
    if view.caught_up.is_set():
        logger.info(
            "%s read in %.2f s: %s",
            what,
            time.monotonic() - started,
            view.described,
        )
        return True
    logger.warning(
        "%s not read within %.0f s; deciding with the %s known so far",
        what,
        seconds,
        view.described,
    )
    return False
