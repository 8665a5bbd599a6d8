"""What every component of the local stack shares and reports."""

from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tooling.stack.process import read_pid, terminate

StartAction = Literal["started", "reused", "external"]
StopAction = Literal["stopped", "not running", "external"]


@dataclass(frozen=True, slots=True)
class ComponentStatus:
    name: str
    address: str
    managed: bool
    """False when the settings point at an external server the stack leaves alone."""
    running: bool
    pid: int | None
    log: Path | None
    port: int | None = None
    """The loopback port of a managed server (None for an external one)."""
    detail: str = ""


class Server:
    """What the three servers share: a pid file, a log, stop and status."""

    name: str
    pidfile: Path
    log: Path
    port: int
    process_marker: str
    """Text the server's command line contains, so a recycled pid is not taken for it."""
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

    def start(self) -> StartAction:
        raise NotImplementedError

    def pid(self) -> int | None:
        """The pid of the server the stack started, when it still runs."""
        return read_pid(self.pidfile, self.process_marker) if self.managed else None

    def alive(self) -> bool:
        return self.pid() is not None

    def stop(self) -> StopAction:
        """Stop the server if the stack started it and it runs; external ones stay."""
        if not self.managed:
            return "external"
        pid = self.pid()
        if pid is None:
            return "not running"
        terminate(pid, timeout=self.stop_timeout, sig=self.stop_signal)
        self.pidfile.unlink(missing_ok=True)
        return "stopped"

    def status(self) -> ComponentStatus:
        return ComponentStatus(
            name=self.name,
            address=self.address,
            managed=self.managed,
            running=self.ready(),
            pid=self.pid(),
            log=self.log if self.managed else None,
            port=self.port if self.managed else None,
        )
