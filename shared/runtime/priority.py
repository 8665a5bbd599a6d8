"""CPU-scheduler niceness of every thread of a process.

Linux keeps a nice value per thread, and a new thread takes its creator's: setting only a
process's main thread leaves the threads it already started (librdkafka's, Redis's I/O
threads) where they were.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def thread_ids(pid: int | None = None) -> list[int]:
    """The thread ids of process ``pid`` (this process when None)."""
    tasks = Path(f"/proc/{pid if pid is not None else 'self'}/task")
    if not tasks.is_dir():
        return [pid or 0]
    return [int(t) for t in os.listdir(tasks)]


def renice_threads(pid: int | None, niceness: Callable[[int], int]) -> bool:
    """Give every thread of ``pid`` (this process when None) the niceness ``niceness(its
    current one)``. False when the system refused one (a lower value than now needs root or
    CAP_SYS_NICE); a thread that ends meanwhile is skipped."""
    permitted = True
    for tid in thread_ids(pid):
        try:
            now = os.getpriority(os.PRIO_PROCESS, tid)
            target = niceness(now)
            if target != now:
                os.setpriority(os.PRIO_PROCESS, tid, target)
        except ProcessLookupError:
            continue
        except PermissionError:
            permitted = False
    return permitted
