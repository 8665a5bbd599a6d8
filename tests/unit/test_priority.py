"""Niceness of every thread of a process: the workers off the decision path lower theirs,
the stack raises its Redis."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from shared.runtime.priority import renice_threads, thread_ids

# A process with three threads, started before anything renices it.
THREADED = """
import threading, time
for _ in range(2):
    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
print("ready", flush=True)
time.sleep(60)
"""


@pytest.fixture
def threaded() -> Iterator[subprocess.Popen[str]]:
    with subprocess.Popen(
        [sys.executable, "-c", THREADED], stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        try:
            yield proc
        finally:
            proc.kill()


def nice_of(pid: int) -> list[int]:
    return [os.getpriority(os.PRIO_PROCESS, tid) for tid in thread_ids(pid)]


def test_every_thread_of_another_process_is_reniced(threaded: subprocess.Popen[str]) -> None:
    assert len(thread_ids(threaded.pid)) == 3
    assert renice_threads(threaded.pid, lambda now: now + 7)
    assert nice_of(threaded.pid) == [7, 7, 7]


@pytest.mark.skipif(os.geteuid() != 0, reason="a niceness below 0 needs root")
def test_root_raises_every_thread_above_the_default(threaded: subprocess.Popen[str]) -> None:
    assert renice_threads(threaded.pid, lambda _: -10)
    assert nice_of(threaded.pid) == [-10, -10, -10]


def test_a_refused_renice_is_reported_not_raised(threaded: subprocess.Popen[str]) -> None:
    """Lowering a niceness needs privilege: as another user than root the call says False."""
    assert renice_threads(threaded.pid, lambda _: 5)
    demoted = subprocess.run(
        [sys.executable, "-c", f"""
import os
from shared.runtime.priority import renice_threads
if os.geteuid() == 0:
    os.setuid(65534)  # nobody: may not touch another user's process at all
print(renice_threads({threaded.pid}, lambda _: 0))
"""],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert demoted.stdout.strip() == "False"
    assert nice_of(threaded.pid) == [5, 5, 5]


def test_lower_priority_adds_to_every_thread_of_the_worker_and_caps_at_19() -> None:
    code = """
import os, threading, time
from shared.runtime.priority import thread_ids
from shared.runtime.worker import lower_priority
threading.Thread(target=time.sleep, args=(5,), daemon=True).start()
os.setpriority(os.PRIO_PROCESS, 0, 3)  # the main thread only
def nice():
    main = os.getpriority(os.PRIO_PROCESS, os.getpid())
    others = {os.getpriority(os.PRIO_PROCESS, t) for t in thread_ids() if t != os.getpid()}
    return main, sorted(others)
lower_priority(10)
first = nice()
lower_priority(10)
print(first, nice())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "(13, [10]) (19, [19])", out.stderr
