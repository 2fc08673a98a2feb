"""For the tests that kill Redis masters under running relays: a gateway that retries like
Evolution does, and what each viewer shows."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from .clients import SioViewer, post
from .fixtures import evolution_event
from .procs import http_status

T0 = datetime(2025, 10, 21, 11, 40, tzinfo=UTC)


def code(instance: str, n: int) -> str:
    return f"2@{instance}-{n},a,b,c"


def qr_event(instance: str, n: int) -> dict[str, Any]:
    """The n-th QR of an instance, n seconds after T0 by the gateway's clock."""
    stamp = (T0 + timedelta(seconds=n)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return evolution_event("webhook-qrcode-updated", instance=instance, code=code(instance, n),
                           date_time=stamp)


class Gateway:
    """Posts each event to the workers in turn until one answers 200, as Evolution retries a
    5xx; ``accepted`` holds, per instance, the newest QR code a worker accepted."""

    def __init__(self, urls: list[str]):
        self._urls = itertools.cycle(urls)
        self.accepted: dict[str, str] = {}
        self.refused = 0  # 503s and failed connections seen (retried)

    async def send(self, instance: str, n: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                status, _ = await post(f"{next(self._urls)}/webhooks/evolution", qr_event(instance, n))
            except aiohttp.ClientError:
                status = 0
            if status == 200:
                self.accepted[instance] = code(instance, n)
                return
            self.refused += 1
            if time.monotonic() > deadline:
                raise AssertionError(f"no worker accepted QR #{n} of {instance} in {timeout:g} s")
            await asyncio.sleep(0.1)  # the gateway's retry pace

    async def round(self, instances: list[str], n: int) -> None:
        await asyncio.gather(*(self.send(i, n) for i in instances))


class Shown:
    """What one viewer shows: the newest snapshot per instance (older seqs are dropped, as the
    page does), and whether it was ever told that updates are paused."""

    def __init__(self, viewer: SioViewer):
        self.viewer = viewer
        self.state: dict[str, dict[str, Any]] = {}
        self.paused = False

    def code(self, instance: str) -> str | None:
        snap = self.state.get(instance)
        return snap["qr"]["code"] if snap and snap["qr"] else None

    def ok(self, instance: str) -> bool:
        snap = self.state.get(instance)
        return bool(snap and snap["upstream"]["ok"])

    async def until(self, done: Callable[[Shown], bool], what: str, timeout: float = 60.0) -> None:
        """Take updates until ``done(self)``; fails naming ``what`` after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while not done(self):
            left = deadline - time.monotonic()
            try:
                snap = await self.viewer.next_update(timeout=max(0.01, left))
            except asyncio.TimeoutError:
                raise AssertionError(f"viewer never showed: {what}; shows {self.summary()}") from None
            if not snap["upstream"]["ok"]:
                self.paused = True
            current = self.state.get(snap["instance"])
            if current is None or snap["seq"] >= current["seq"]:
                self.state[snap["instance"]] = snap

    def summary(self) -> dict[str, Any]:
        return {i: (self.code(i), self.ok(i)) for i in sorted(self.state)}


async def wait_status(url: str, status: int, timeout: float = 60.0) -> None:
    """Poll ``GET url`` until it answers ``status``."""
    deadline = time.monotonic() + timeout
    while (got := await asyncio.to_thread(http_status, url, 1.0)) != status:
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} answered {got}, not {status}, for {timeout:g} s")
        await asyncio.sleep(0.02)
