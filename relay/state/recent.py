"""The records a worker saw lately (wrote, read, or received on a channel), least recent first,
within a count and a byte budget: a QR image is a few KB, but a gateway may send up to 256 KB,
so a count alone would let 10,000 entries grow to gigabytes."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator

from ..snapshot import Record
from ..wire import Wired

MAX_ITEMS = 10_000
MAX_BYTES = 64 * 1024 * 1024
OVERHEAD = 400  # bytes an entry costs beyond its encoded size (objects, dict slot), roughly


class Recent:
    """instance -> (version, record or still-encoded channel message), with its size."""

    def __init__(self, max_items: int = MAX_ITEMS, max_bytes: int = MAX_BYTES):
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[str, tuple[int, Record | Wired, int]] = OrderedDict()

    def put(self, instance: str, version: int, record: Record | Wired, size: int) -> None:
        """Remember ``record`` (``size``: its encoded length) as the newest entry."""
        old = self._entries.pop(instance, None)
        if old is not None:
            self.bytes -= old[2]
        cost = size + OVERHEAD
        self._entries[instance] = (version, record, cost)
        self.bytes += cost
        while len(self._entries) > self.max_items or (self.bytes > self.max_bytes
                                                      and len(self._entries) > 1):
            _, (_, _, dropped) = self._entries.popitem(last=False)
            self.bytes -= dropped

    def version(self, instance: str) -> int | None:
        entry = self._entries.get(instance)
        return entry[0] if entry is not None else None

    def get(self, instance: str) -> tuple[int, Record] | None:
        """The version and record of ``instance`` (a channel message is decoded once, here)."""
        entry = self._entries.get(instance)
        if entry is None:
            return None
        version, record, cost = entry
        if isinstance(record, Wired):  # decoded only when a write needs it
            record = record.record()
            self._entries[instance] = (version, record, cost)
        return version, record

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)
