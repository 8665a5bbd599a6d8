"""What the ownership fence costs an evaluator round, and what it keeps in Redis.

    python -m bench.ownership [--models 1000] [--rounds 20]

Uses the local stack's Redis under a private prefix (removed afterwards). One replica owns
every partition of a 6-partition topic; each round claims (first round only) and saves
every model version the way the aggregator's evaluator does (one fenced Lua call per
model version, two alert states and, every tenth model version, one alert in the outbox,
then the outbox emptied). Prints saves per second, the latency of one fenced save
(percentiles over every call), the round's time, the Redis memory of the ownership keys
per model version and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import time
import uuid

import numpy as np
from confluent_kafka import TopicPartition

from shared.runtime import redis_client
from shared.runtime.ownership import OwnerFence, Ownership, outbox_key, owner_key
from shared.settings import Settings
from tooling.benchmarking import delete_redis_prefix


async def run(args: argparse.Namespace) -> None:
    settings = Settings()
    prefix = f"bench-own-{uuid.uuid4().hex[:8]}:"
    space = f"{prefix}agg:"
    client = redis_client.async_client(settings.redis_dsn)
    try:
        own = Ownership("d", "bench", OwnerFence(client, space), lambda: 6)
        await own.assigned([TopicPartition("d", p) for p in range(6)])
        models = [f"bench/m{i}/v1" for i in range(args.models)]
        saves: list[float] = []
        rounds: list[float] = []
        claim_round = 0.0
        for r in range(args.rounds):
            started = time.perf_counter()
            async with own.round():
                for i, model in enumerate(models):
                    token = await own.token(model)
                    assert token is not None
                    states = {
                        f"{space}alert:{{{model}}}:{m}": '{"active":false}'
                        for m in ("ece", "brier")
                    }
                    alerts = {f"a{r}-{i}": b"x" * 300} if i % 10 == 0 else {}
                    t0 = time.perf_counter()
                    outbox = await own.fence.save(model, token, states, alerts)
                    saves.append(time.perf_counter() - t0)
                    assert outbox is not None
                    if outbox:
                        await own.fence.delivered(model, list(outbox))
            took = time.perf_counter() - started
            if r == 0:
                claim_round = took
            else:
                rounds.append(took)
        memory = 0
        for model in models:
            memory += int(await client.memory_usage(owner_key(space, model)) or 0)
            memory += int(await client.memory_usage(outbox_key(space, model)) or 0)
        s = np.asarray(saves) * 1000
        print(f"ownership fence, {args.models} model versions, {args.rounds} rounds")
        print(f"  fenced saves     {len(saves) / sum(saves):,.0f} /s (one at a time)")
        print(
            f"  one save         p50 {np.percentile(s, 50):.3f} ms, p99 "
            f"{np.percentile(s, 99):.3f} ms, max {s.max():.3f} ms"
        )
        print(
            f"  round            first (claims) {claim_round * 1000:.0f} ms, then median "
            f"{np.median(rounds) * 1000:.0f} ms"
        )
        print(f"  Redis            {memory / len(models):.0f} bytes per model version")
        print(
            f"  peak RSS         {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB"
        )
    finally:
        await client.aclose()
        delete_redis_prefix(settings.model_copy(update={"redis_prefix": prefix}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=20)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
