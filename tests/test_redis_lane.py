"""The lean Redis connections of the hot paths (relay/state/redis_lane.py), on a real
redis-server that the tests stop, kill and restart."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from relay.state.redis_lane import Lane, Subscriber
from tests.support.redis import RedisServer


@pytest.fixture
def client(redis_server: RedisServer) -> aioredis.Redis:
    return aioredis.Redis.from_url(redis_server.url, decode_responses=True, socket_connect_timeout=2)


async def test_many_commands_in_flight_answer_in_order(client: aioredis.Redis) -> None:
    lane = Lane(client.connection_pool.make_connection, timeout=1.5)
    try:
        answers = await asyncio.gather(*(lane.call("ECHO", f"n{i}" * (i % 50)) for i in range(500)))
        assert answers == [f"n{i}" * (i % 50) for i in range(500)]
        with pytest.raises(ResponseError, match="unknown command"):
            await lane.call("NO-SUCH-COMMAND")
        assert await lane.call("SET", "k", "ünïcode ✓") == "OK"  # the lane goes on after an error
        assert await client.get("k") == "ünïcode ✓"
    finally:
        await lane.close()
        await client.aclose()


async def test_a_hung_redis_fails_the_lane_within_its_timeout(client: aioredis.Redis,
                                                              redis_server: RedisServer) -> None:
    lane = Lane(client.connection_pool.make_connection, timeout=0.5)
    try:
        assert await lane.call("PING") == "PONG"
        redis_server.pause()
        try:
            calls = [asyncio.ensure_future(lane.call("PING")) for _ in range(3)]
            results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 10)
            assert all(isinstance(r, RedisError) and "no answer" in str(r) for r in results)
        finally:
            redis_server.resume()
        assert await lane.call("PING") == "PONG"  # a new connection
        redis_server.kill()
        with pytest.raises(RedisConnectionError):
            await lane.call("PING")
        redis_server.start()
        assert await lane.call("PING") == "PONG"
    finally:
        await lane.close()
        await client.aclose()


async def test_subscriber_reads_batches_then_tells_the_loss(client: aioredis.Redis,
                                                            redis_server: RedisServer) -> None:
    subscriber = Subscriber()
    await subscriber.open(client.connection_pool.make_connection())
    subscriber.send("SUBSCRIBE", "ch")
    assert await subscriber.batch(5) == [["subscribe", "ch", 1]]
    for i in range(100):
        await client.publish("ch", f"m{i}")
    got: list[str] = []
    while len(got) < 100:
        got += [reply[2] for reply in await subscriber.batch(5)]
    assert got == [f"m{i}" for i in range(100)]
    assert await subscriber.batch(0.05) == []  # nothing new: an empty batch after the timeout
    subscriber.send("PING")
    assert await subscriber.batch(5) in (["PONG"], [["pong", ""]])  # RESP3 (redis-py 8's default), RESP2
    await client.publish("ch", "last")
    await asyncio.sleep(0.2)
    redis_server.kill()
    assert await subscriber.batch(5) == [["message", "ch", "last"]]  # what came first, first
    with pytest.raises(RedisConnectionError):
        await subscriber.batch(5)
    await subscriber.close()
    await client.aclose()
