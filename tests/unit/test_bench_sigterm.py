"""A benchmark ended by SIGTERM still runs its clean-up (``with`` blocks and ``atexit``)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

SCRIPT = """
import atexit, sys, time
from pathlib import Path
from tooling.benchmarking import exit_on_sigterm

out = Path(sys.argv[1])
atexit.register(lambda: (out / "atexit").write_text("ran"))
exit_on_sigterm()
try:
    (out / "started").write_text("yes")
    time.sleep(60)
finally:
    (out / "finally").write_text("ran")
"""


def test_sigterm_ends_a_benchmark_through_its_clean_up(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path)])
    deadline = time.monotonic() + 30
    while not (tmp_path / "started").exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 128 + signal.SIGTERM
    assert (tmp_path / "finally").read_text() == "ran"
    assert (tmp_path / "atexit").read_text() == "ran"


def test_a_handler_already_installed_is_kept() -> None:
    from tooling.benchmarking import exit_on_sigterm

    def mine(signum: int, frame: object) -> None:
        return None

    before = signal.signal(signal.SIGTERM, mine)
    try:
        exit_on_sigterm()
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, before)
