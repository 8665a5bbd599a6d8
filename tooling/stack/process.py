"""Small process utilities of the local stack: pid files, ports, readiness waits."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path


class StackError(RuntimeError):
    """A component of the local stack could not be installed, started or reached."""


_SPAWNED: list[subprocess.Popen[bytes]] = []
"""The servers this process started. They outlive it by design; holding their handles keeps
Python from warning, when a handle is collected, that its child still runs."""


def read_pid(pidfile: Path, expect: str | None = None) -> int | None:
    """The pid in ``pidfile`` when that process still runs; stale files are removed.

    With ``expect``, the process's command line must contain that text too: after a reboot
    the recorded pid may belong to an unrelated process, which must not count as ours.
    """
    try:
        pid = int(pidfile.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    own = next((p for p in _SPAWNED if p.pid == pid), None)
    if own is not None:
        # Started by this process: its handle is the truth. The command line is not: read
        # while the child is still becoming the server, it need not hold ``expect`` yet.
        if own.poll() is None:
            return pid
        pidfile.unlink(missing_ok=True)
        return None
    if pid_alive(pid) and (expect is None or expect in command_line(pid)):
        return pid
    pidfile.unlink(missing_ok=True)
    return None


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); treat it as gone.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def command_line(pid: int) -> str:
    """The command line of ``pid``, arguments joined by spaces ('' when unknown)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(
    check: Callable[[], bool],
    timeout: float,
    what: str,
    log: Path | None = None,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Poll ``check`` until it is true; raise naming ``log`` on timeout.

    ``alive`` tells whether the process being waited for still runs, so a server that
    exits during start-up fails at once instead of after the whole timeout.
    """
    hint = f"; read {log}" if log else ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if alive is not None and not alive():
            raise StackError(f"{what} exited during start-up{hint}")
        time.sleep(0.2)
    raise StackError(f"{what} was not ready after {timeout:.0f} s{hint}")


def spawn(
    cmd: Sequence[str],
    log: Path,
    pidfile: Path,
    env: dict[str, str] | None = None,
    user: str | None = None,
) -> int:
    """Start ``cmd`` detached from this process (own session), output appended to ``log``.

    The log is opened here, so a process run as another ``user`` can write to it even when
    it could not open that path itself.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            list(cmd),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
            user=user,
            group=user,
            extra_groups=[] if user else None,  # drop root's supplementary groups
        )
    _SPAWNED.append(proc)
    pidfile.write_text(str(proc.pid))
    return proc.pid


def terminate(pid: int, timeout: float = 30.0, sig: int = signal.SIGTERM) -> None:
    """Send ``sig``, then SIGKILL when the process has not ended within ``timeout``."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.2)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return


def run(
    cmd: Sequence[str], what: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a set-up command; a failure raises with its output, never silently."""
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, check=False, env=env)
    except FileNotFoundError as exc:
        raise StackError(f"{what} failed: {cmd[0]!r} is not installed") from exc
    if proc.returncode != 0:
        raise StackError(
            f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n"
            f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        )
    return proc
