"""Installs Debian packages the local stack needs, once, when they are missing."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from shared.stack.process import run

logger = logging.getLogger(__name__)

_updated = False


def ensure_packages(binary: str, packages: list[str]) -> None:
    """Install ``packages`` with apt-get unless ``binary`` is already on the machine."""
    global _updated
    if shutil.which(binary) or Path(binary).exists():
        return
    logger.info("installing %s (%s is missing)", " ".join(packages), binary)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if not _updated:
        run(["apt-get", "update", "-q"], "apt-get update", env=env)
        _updated = True
    run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
        f"installing {' '.join(packages)}",
        env=env,
    )
