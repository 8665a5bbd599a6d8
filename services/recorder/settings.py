"""Settings of the recorder."""

from __future__ import annotations

from pydantic import Field

from shared.settings import Settings


class RecorderSettings(Settings):
    metrics_port: int = Field(default=9105, ge=0, description="recorder /metrics port")
