"""What every component of the local stack reports."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class ComponentStatus:
    name: str
    address: str
    managed: bool
    """False when the settings point at an external server the stack leaves alone."""
    running: bool
    pid: int | None
    log: Path | None
    detail: str = ""
