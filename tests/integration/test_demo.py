"""The demo command as a new user runs it, on a stack of its own, then the stop command.

The demo gets its own stack home and ports (Kafka, Redis, PostgreSQL, the gateway; the
workers serve no metrics port), so it neither sees nor stops the stack the other tests
share, and "nothing left running" can be checked by what that home's servers were.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from shared.settings import Settings
from tests.ports import free_pair
from tooling.stack.postgres import data_root
from tooling.stack.process import port_open

ROOT = Path(__file__).resolve().parents[2]


def _caliber(env: dict[str, str], *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tooling.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _processes_of(home: Path) -> list[str]:
    """Command lines of live processes whose command line or environment names the demo's
    stack home (supervisord, every service, Kafka, Redis, PostgreSQL)."""
    marker = str(home).encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes()
        except OSError:  # gone meanwhile
            continue
        if marker in cmd or marker in environ:
            found.append(cmd.replace(b"\0", b" ").decode(errors="replace"))
    return found


@pytest.mark.integration
@pytest.mark.timeout(900)  # a cold stack of its own, the demo (540 s at most), then the stop
def test_demo_ends_with_a_summary_and_stop_leaves_nothing_running(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ports = {
        "CALIBER_KAFKA_PORT": free_pair(),
        "CALIBER_REDIS_PORT": free_pair(),
        "CALIBER_POSTGRES_PORT": free_pair(),
        "CALIBER_GATEWAY_PORT": free_pair(),
    }
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CALIBER_") or k == "CALIBER_LOG_LEVEL"
    }
    env.update({k: str(v) for k, v in ports.items()})
    env.update(CALIBER_STACK_HOME=str(home), CALIBER_METRICS_PORT="0")
    try:
        demo = _caliber(env, "demo", "run", timeout=540)
        out = demo.stdout
        assert demo.returncode == 0, out + demo.stderr
        assert "admin key: clb_" in out
        rows = [
            line for line in out.splitlines() if re.match(r"^\s+(seed|drift|real-model)\s", line)
        ]
        # seed: 2 versions, drift: 1, real models: 2 data sets × 2 versions.
        assert len(rows) == 7, out
        assert not [r for r in rows if "(differs)" in r], out
        drift = next(r for r in rows if r.split()[0] == "drift")
        assert drift.rstrip().endswith("x1,x2"), drift
        assert "== where to look" in out and "make down" in out
    finally:
        down = _caliber(env, "stack", "down", timeout=120)
    assert down.returncode == 0, down.stdout + down.stderr
    assert "services  stopped" in down.stdout
    assert _processes_of(home) == []
    assert not [name for name, port in ports.items() if port_open(port)]
    shutil.rmtree(
        data_root(Settings(stack_home=home, postgres_port=ports["CALIBER_POSTGRES_PORT"])),
        ignore_errors=True,
    )
