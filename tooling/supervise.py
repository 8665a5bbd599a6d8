"""Run Caliber's services under supervisord: a log per service, restart on crash.

The configuration is rendered from the settings into ``<stack_home>/supervisord.conf`` so
every service sees the same CALIBER_* environment as the command that started them.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from shared.settings import Settings

logger = logging.getLogger(__name__)

SERVICES: tuple[str, ...] = (
    "ingest", "policy", "recorder", "aggregator", "drift", "calibrator", "router", "gateway",
)  # fmt: skip
"""Every worker, in start order; only those whose package exists are started."""

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True, slots=True)
class ProgramStatus:
    name: str
    state: str
    detail: str


def available_services() -> list[str]:
    return [s for s in SERVICES if (REPO_ROOT / "services" / s / "__main__.py").exists()]


def _env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.startswith("CALIBER_")}
    env["CALIBER_STACK_HOME"] = str(settings.stack_home)
    env["CALIBER_TOPIC_NAMESPACE"] = settings.topic_namespace
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%") + '"'


def render_config(settings: Settings, services: list[str]) -> str:
    home = settings.stack_home
    logs = settings.logs_dir
    env = ",".join(f"{k}={_quote(v)}" for k, v in sorted(_env(settings).items()))
    lines = [
        "[unix_http_server]",
        f"file={home / 'supervisor.sock'}",
        "",
        "[supervisord]",
        f"logfile={logs / 'supervisord.log'}",
        f"pidfile={home / 'supervisord.pid'}",
        f"directory={REPO_ROOT}",
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "",
        "[supervisorctl]",
        f"serverurl=unix://{home / 'supervisor.sock'}",
        "",
    ]
    for name in services:
        lines += [
            f"[program:{name}]",
            f"command={sys.executable} -m services.{name}",
            f"directory={REPO_ROOT}",
            f"environment={env}",
            "autorestart=true",
            "startsecs=3",
            "startretries=10",
            "stopsignal=TERM",
            "stopwaitsecs=20",
            "stopasgroup=true",
            "killasgroup=true",
            "redirect_stderr=true",
            f"stdout_logfile={logs / (name + '.log')}",
            "stdout_logfile_maxbytes=20MB",
            "stdout_logfile_backups=2",
            "",
        ]
    return "\n".join(lines)


def _conf_path(settings: Settings) -> Path:
    return settings.stack_home / "supervisord.conf"


def _ctl(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["supervisorctl", "-c", str(_conf_path(settings)), *args],
        capture_output=True,
        text=True,
        check=False,
    )


def running(settings: Settings) -> bool:
    if not _conf_path(settings).exists():
        return False
    # supervisorctl exits 4 when it cannot reach supervisord.
    return _ctl(settings, "pid").returncode == 0


def start(settings: Settings, services: list[str] | None = None) -> list[str]:
    """Start (or reuse) supervisord with the given services; returns the services started."""
    chosen = services or available_services()
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    conf = _conf_path(settings)
    conf.write_text(render_config(settings, chosen))
    if running(settings):
        _ctl(settings, "update")
        _ctl(settings, "start", "all")
    else:
        subprocess.run(["supervisord", "-c", str(conf)], check=True)
    return chosen


def status(settings: Settings) -> list[ProgramStatus]:
    if not running(settings):
        return []
    out = []
    for line in _ctl(settings, "status").stdout.splitlines():
        parts = line.split(None, 2)
        if len(parts) >= 2:
            out.append(ProgramStatus(parts[0], parts[1], parts[2] if len(parts) > 2 else ""))
    return out


def wait_running(settings: Settings, timeout: float = 60.0) -> list[ProgramStatus]:
    """Wait until every program is RUNNING; raise naming the ones that are not."""
    deadline = time.monotonic() + timeout
    current: list[ProgramStatus] = []
    while time.monotonic() < deadline:
        current = status(settings)
        if current and all(p.state == "RUNNING" for p in current):
            return current
        time.sleep(0.5)
    bad = [f"{p.name}={p.state}" for p in current if p.state != "RUNNING"]
    raise RuntimeError(
        f"services not running after {timeout:.0f} s: {', '.join(bad) or 'supervisord down'}; "
        f"see the logs in {settings.logs_dir}"
    )


def stop(settings: Settings) -> bool:
    """Stop every service and supervisord itself; False when nothing was running."""
    if not running(settings):
        return False
    _ctl(settings, "stop", "all")
    _ctl(settings, "shutdown")
    deadline = time.monotonic() + 30
    while running(settings) and time.monotonic() < deadline:
        time.sleep(0.2)
    return True
