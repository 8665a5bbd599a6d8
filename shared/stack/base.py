"""What every component of the local stack reports."""

from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path

from shared.stack.process import read_pid, terminate


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


class Server:
    """What the three servers share: a pid file, a log, stop and status."""

    name: str
    pidfile: Path
    log: Path
    stop_signal: int = signal.SIGTERM
    stop_timeout: float = 30.0

    @property
    def managed(self) -> bool:
        raise NotImplementedError

    @property
    def address(self) -> str:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def stop(self) -> bool:
        """Stop the server if the stack started it; False when there was nothing to stop."""
        if not self.managed:
            return False
        pid = read_pid(self.pidfile)
        if pid is None:
            return False
        terminate(pid, timeout=self.stop_timeout, sig=self.stop_signal)
        self.pidfile.unlink(missing_ok=True)
        return True

    def status(self) -> ComponentStatus:
        return ComponentStatus(
            self.name,
            self.address,
            self.managed,
            self.ready(),
            read_pid(self.pidfile) if self.managed else None,
            self.log if self.managed else None,
        )
