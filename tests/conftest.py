from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.support.procs import started
from tests.support.redis import RedisServer
from tests.support.relay import RelayServer, running_relay


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with started(RedisServer()) as (server,):
        yield server


@pytest.fixture
async def relay() -> AsyncIterator[RelayServer]:
    """The relay on the embedded default (in-memory), under uvicorn on a free port."""
    async with running_relay() as server:
        yield server
