"""A librdkafka call that ignores its own timeout ends the worker instead of hanging it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

from shared.runtime.pipeline import EXIT_STUCK


def _run(body: str) -> tuple[subprocess.CompletedProcess[str], float]:
    script = textwrap.dedent(
        """
        import asyncio, logging, threading, time
        from shared.runtime import pipeline
        logging.basicConfig(level=logging.INFO)
        pipeline.STUCK_GRACE_SECONDS = 0.5
        """
    ) + textwrap.dedent(body)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    return done, time.monotonic() - started


def test_a_call_stuck_past_its_timeout_ends_the_process_with_the_stuck_status() -> None:
    # The call blocks in a thread well past its 0.2 s timeout, as librdkafka's
    # send_offsets_to_transaction does when its coordinator request is never retried.
    done, elapsed = _run(
        """
        never = threading.Event()
        def send_offsets_to_transaction(timeout):
            never.wait(600)
        async def last_words():
            await asyncio.sleep(0.1)
            print("crash marks taken back", flush=True)
        asyncio.run(pipeline.bounded(send_offsets_to_transaction, 0.2, last_words))
        print("returned")
        """
    )
    assert done.returncode == EXIT_STUCK, done.stderr
    assert "returned" not in done.stdout
    # The pipeline's last words (taking back its crash marks) ran before the exit.
    assert "crash marks taken back" in done.stdout
    assert "send_offsets_to_transaction has not returned" in done.stderr
    # Ended about 0.7 s after the call began, not after the blocked thread's 600 s (the
    # interpreter's own start-up and imports take the rest).
    assert elapsed < 30


def test_a_call_that_returns_in_time_gives_its_result_and_the_process_goes_on() -> None:
    done, _ = _run(
        """
        def commit_transaction(timeout):
            time.sleep(0.3)
            return timeout * 2
        print("result", asyncio.run(pipeline.bounded(commit_transaction, 0.2)))
        """
    )
    # 0.3 s is past the call's own 0.2 s but within the grace: librdkafka's timeout is
    # its own business (it raises a retriable error), only a call far past it is stuck.
    assert done.returncode == 0, done.stderr
    assert "result 0.4" in done.stdout
