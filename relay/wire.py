"""The wire format, in one place: how a snapshot is encoded, how a record is stored, what a
channel message looks like, and the text of an ``update`` as Socket.IO and SSE send it.

A snapshot is encoded to JSON once per update; every later step (the stored record, the channel
message, the Socket.IO packet, the SSE event) wraps those same bytes without decoding them.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

import orjson

from .snapshot import Record, Snapshot


def encode(snapshot: Snapshot) -> str:
    """The one JSON encoding of a snapshot that goes on the wire (encoded once per update)."""
    return compact(snapshot)


def compact(value: Any) -> str:
    """Compact JSON of any value (a snapshot, a subscribe's answer that carries one). orjson: a
    6 KB QR image is escaped ~10x faster than by json. What it refuses (a lone surrogate from a
    gateway's text, an int past 64 bits) is encoded by json, ASCII-escaped."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # orjson.JSONEncodeError
        return json.dumps(value, separators=(",", ":"))


def decode(raw: str | bytes) -> Any:
    """JSON from the store, a channel or a gateway (or a snapshot's, where a step must change
    it, e.g. to mark it paused): orjson, else json (which also takes what
    orjson refuses, e.g. an escaped lone surrogate); ValueError when it is not JSON."""
    try:
        return orjson.loads(raw)
    except ValueError:  # orjson.JSONDecodeError
        return json.loads(raw)


def _meta(record: Record) -> str:
    """The record without its snapshot, as compact JSON (ordering data and watchdog clock)."""
    return orjson.dumps({"t": record.gateway_ts, "r": record.retired, "d": record.deadline,
                         "w": record.waiting_since, "n": record.waiting_events,
                         "e": record.seen_at}).decode()


def _record(snapshot: Any, meta: dict[str, Any]) -> Record:
    return Record(snapshot=snapshot, gateway_ts=meta.get("t"), retired=meta.get("r") or [],
                  deadline=meta.get("d"), waiting_since=meta.get("w"),
                  waiting_events=meta.get("n") or 0, seen_at=meta.get("e"))


def dump_record(record: Record, snapshot_json: str | None = None) -> str:
    """JSON of a record; pass the snapshot's JSON if it is already encoded (hot path)."""
    if snapshot_json is None:
        snapshot_json = encode(record.snapshot)
    return '{"s":' + snapshot_json + "," + _meta(record)[1:]


def load_record(raw: str | bytes) -> Record:
    data = decode(raw)
    return _record(data.pop("s"), data)


def message(record: Record, snapshot_json: str | None = None, *, version: int = 0) -> str:
    """A channel message: ``"<seq> <updatedAt> <version> <record meta JSON> <snapshot JSON>"``.

    The header lets every worker order and time an update without decoding the ~6 KB snapshot
    it forwards as is, and carries the rest of the record (its gateway clock, retired QRs and
    watchdog clock), so that the Redis store keeps its per-worker record cache whole and most
    writes need no read first.
    """
    snapshot = record.snapshot
    payload = snapshot_json if snapshot_json is not None else encode(snapshot)
    return f"{snapshot['seq']} {snapshot['updatedAt'] or 0} {version} {_meta(record)} {payload}"


def frame(seq: int, updated: int, payload: str) -> str:
    """A message for an already encoded snapshot that carries no record data (a local re-send)."""
    return f"{seq} {updated} 0 {{}} {payload}"


class Wired(NamedTuple):
    """A channel message, split (its snapshot JSON still encoded)."""

    seq: int
    updated: int
    version: int
    meta: str
    payload: str

    def record(self) -> Record:
        return _record(decode(self.payload), decode(self.meta))

    def deadline(self) -> int | None:
        """When the pairing watchdog is due for this instance (None: not waiting for a QR)."""
        value = decode(self.meta).get("d")
        return value if isinstance(value, int) else None


def unwire(raw: str) -> Wired:
    """Split a channel message; ValueError if it is malformed."""
    seq, updated, version, meta, payload = raw.split(" ", 4)
    return Wired(int(seq), int(updated), int(version), meta, payload)


def socketio_update(payload: str) -> str:
    """The Socket.IO EVENT packet ``update`` carrying an encoded snapshot (without Engine.IO's
    message type): the same text for every viewer of the instance."""
    return '2["update",' + payload + "]"


def sse_update(seq: int, payload: str) -> str:
    """One SSE event carrying an encoded snapshot."""
    return f"event: update\nid: {seq}\ndata: {payload}\n\n"
