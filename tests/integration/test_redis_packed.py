"""Commands packed by hiredis in one call (shared/runtime/redis_client.py) on the real Redis:
the server sees the arguments redis-py would have sent, a script the server does not know is
loaded, and a pooled connection the server closed is replaced."""

from __future__ import annotations

from typing import Any

from shared.runtime import redis_client
from shared.runtime.redis_client import Script, packed
from shared.settings import Settings
from tests.integration.redis_scratch import with_scratch_prefix

_ECHO = "return {KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], #ARGV}"


def test_mget_and_a_script_see_what_redis_py_sends(stack_settings: Settings) -> None:
    async def body(r: Any, p: str) -> None:
        await r.set(f"{p}a", "é|1")
        await r.set(f"{p}b", b"\x00\xff")
        keys = [f"{p}a", f"{p}missing", f"{p}b"]
        assert await packed(r, "MGET", *keys) == [b"\xc3\xa9|1", None, b"\x00\xff"]
        assert await redis_client.mget(r, keys) == await r.mget(keys)
        args = [7, -0.25, "tëxt", b"raw"]
        fast = await Script(r, _ECHO)(keys=[f"{p}k"], args=args)
        slow = await r.register_script(_ECHO)(keys=[f"{p}k"], args=args)
        assert fast == slow == [f"{p}k".encode(), b"7", b"-0.25", "tëxt".encode(), b"raw", 4]

    with_scratch_prefix(stack_settings, "packedtest", body)


def test_a_script_the_server_does_not_know_is_loaded(stack_settings: Settings) -> None:
    async def body(r: Any, p: str) -> None:
        # A text no server has seen (the scratch prefix in a comment): its first call meets
        # NOSCRIPT, as after a Redis restart, without flushing the shared server's scripts.
        script = Script(r, f"-- {p}\nreturn redis.call('INCRBY', KEYS[1], ARGV[1])")
        assert await r.script_exists(script.sha) == [False]
        assert await script(keys=[f"{p}n"], args=[2]) == 2  # loaded, then run once
        assert await r.script_exists(script.sha) == [True]
        assert await script(keys=[f"{p}n"], args=[3]) == 5

    with_scratch_prefix(stack_settings, "packedtest", body)


def test_a_connection_killed_between_calls_is_replaced(
    stack_settings: Settings,
) -> None:
    async def body(r: Any, p: str) -> None:
        await r.set(f"{p}x", "1")
        assert await packed(r, "GET", f"{p}x") == b"1"
        # The pool's one connection is killed from outside, as a Redis restart would.
        conn_id = await packed(r, "CLIENT", "ID")
        admin = redis_client.async_client(stack_settings.redis_dsn)
        try:
            assert await admin.client_kill_filter(_id=conn_id) == 1
        finally:
            await admin.aclose()
        # The pool finds the idle connection closed when it hands it out, and reconnects.
        assert await packed(r, "GET", f"{p}x") == b"1"
        assert await packed(r, "CLIENT", "ID") != conn_id

    with_scratch_prefix(stack_settings, "packedtest", body)
