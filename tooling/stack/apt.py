"""Installs Debian packages the local stack needs, once, when they are missing."""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Callable

from tooling.stack.process import run

logger = logging.getLogger(__name__)

# Components start in parallel and apt allows one run at a time; other apt runs on the
# machine are waited for through dpkg's own lock timeout.
_lock = threading.Lock()
_updated = False
APT_OPTIONS = ["-q", "-o", "DPkg::Lock::Timeout=300"]


def ensure_packages(binary: str, packages: list[str]) -> None:
    """Install ``packages`` with apt-get unless ``binary`` is on the PATH."""
    ensure_installed(lambda: shutil.which(binary) is not None, packages, binary)


def ensure_installed(present: Callable[[], bool], packages: list[str], what: str) -> None:
    """Install ``packages`` with apt-get unless ``present()`` says ``what`` is there."""
    global _updated
    if present():
        return
    with _lock:
        if present():
            return
        logger.info("installing %s (%s is missing)", " ".join(packages), what)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        if not _updated:
            run(["apt-get", *APT_OPTIONS, "update"], "apt-get update", env=env)
            _updated = True
        run(
            ["apt-get", *APT_OPTIONS, "install", "-y", "--no-install-recommends", *packages],
            f"installing {' '.join(packages)}",
            env=env,
        )
