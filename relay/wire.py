"""The wire format, in one place: how a snapshot is encoded, how a record is stored, what a
channel message looks like, and the text of an ``update`` as Socket.IO and SSE send it.

A snapshot is encoded to JSON once per update; every later step (the stored record, the channel
message, the Socket.IO packet, the SSE event) wraps those same bytes without decoding them.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from .snapshot import Record, Snapshot


def encode(snapshot: Snapshot) -> str:
    """The one JSON encoding of a snapshot that goes on the wire (encoded once per update)."""
    return json.dumps(snapshot, separators=(",", ":"), ensure_ascii=False)


def dump_record(record: Record, snapshot_json: str | None = None) -> str:
    """JSON of a record; pass the snapshot's JSON if it is already encoded (hot path)."""
    if snapshot_json is None:
        snapshot_json = encode(record.snapshot)
    rest = json.dumps({"t": record.gateway_ts, "r": record.retired}, separators=(",", ":"))
    return '{"s":' + snapshot_json + "," + rest[1:]


def load_record(raw: str | bytes) -> Record:
    data = json.loads(raw)
    return Record(snapshot=data["s"], gateway_ts=data.get("t"), retired=data.get("r") or [])


def message(snapshot: Snapshot, snapshot_json: str | None = None, *, version: int = 0,
            gateway_ts: int | None = None, retired: list[str] | None = None) -> str:
    """A channel message: ``"<seq> <updatedAt> <version> <gateway ts|-> <retired,…|-> <JSON>"``.

    The header lets every worker order and time an update without decoding the ~6 KB snapshot
    it forwards as is, and lets the Redis store keep its per-worker record cache current (the
    version and the record's ordering data), so most writes need no read first.
    """
    payload = snapshot_json if snapshot_json is not None else encode(snapshot)
    return frame(snapshot["seq"], snapshot["updatedAt"] or 0, payload, version=version,
                 gateway_ts=gateway_ts, retired=retired)


def frame(seq: int, updated: int, payload: str, *, version: int = 0,
          gateway_ts: int | None = None, retired: list[str] | None = None) -> str:
    """The channel message for an already encoded snapshot (see :func:`message`)."""
    ts = "-" if gateway_ts is None else str(gateway_ts)
    gone = ",".join(retired) if retired else "-"
    return f"{seq} {updated} {version} {ts} {gone} {payload}"


class Wired(NamedTuple):
    """A channel message, split (its snapshot JSON still encoded)."""

    seq: int
    updated: int
    version: int
    gateway_ts: int | None
    retired: list[str]
    payload: str

    def record(self) -> Record:
        return Record(snapshot=json.loads(self.payload), gateway_ts=self.gateway_ts,
                      retired=self.retired)


def unwire(raw: str) -> Wired:
    """Split a channel message; ValueError if it is malformed."""
    seq, updated, version, ts, gone, payload = raw.split(" ", 5)
    return Wired(int(seq), int(updated), int(version), None if ts == "-" else int(ts),
                 [] if gone == "-" else gone.split(","), payload)


def socketio_update(payload: str) -> str:
    """The Socket.IO EVENT packet ``update`` carrying an encoded snapshot (without Engine.IO's
    message type): the same text for every viewer of the instance."""
    return '2["update",' + payload + "]"


def sse_update(seq: int, payload: str) -> str:
    """One SSE event carrying an encoded snapshot."""
    return f"event: update\nid: {seq}\ndata: {payload}\n\n"


def loads(raw: str) -> Any:
    """Decode a snapshot's JSON (only where a step must change it, e.g. to mark it paused)."""
    return json.loads(raw)
