"""Gateway handlers reach the app's state through ``state_of`` only: ``app.state`` holds one
typed object (services/gateway/state.py), and an attribute read past it is ``Any`` that
mypy cannot check and that fails only when the route is called."""

from __future__ import annotations

import re
from pathlib import Path

GATEWAY = Path(__file__).resolve().parents[2] / "services" / "gateway"
ALLOWED = re.compile(r"\bapp\.state\.gateway\b|getattr\(\w+\.app\.state|app\.state\.gateway =")


def test_no_route_reads_app_state_past_the_typed_object() -> None:
    offenders = []
    for path in sorted(GATEWAY.rglob("*.py")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\bapp\.state\b", line) and not ALLOWED.search(line):
                offenders.append(f"{path.relative_to(GATEWAY)}:{n}: {line.strip()}")
    assert not offenders, "use state_of(request) instead:\n" + "\n".join(offenders)
