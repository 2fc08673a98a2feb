"""RFC 6455 websocket frames, the part a Socket.IO server for browsers needs.

Server frames are never masked, so one update's frame is the same bytes for every viewer: it is
built once and written to each transport. Client frames are always masked; browsers send small
text messages (the Socket.IO connect, a subscribe, pongs) and a close. Written here rather than
taken from wsproto or websockets because a viewer must cost a few KB and each update a few
microseconds per viewer (see BENCHMARKS.md); the handshake reuses the request uvicorn parsed.
"""

from __future__ import annotations

import base64
import hashlib
import struct

TEXT, BINARY, CLOSE, PING, PONG, CONTINUATION = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_MESSAGE = 1 << 20  # what a browser may send us at once (Engine.IO's maxPayload)


class FrameError(Exception):
    """The client broke the protocol; ``code`` is the close code to answer with."""

    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code = code


def accept_key(key: bytes) -> bytes:
    """Sec-WebSocket-Accept for a client's Sec-WebSocket-Key."""
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def frame(payload: bytes, opcode: int = TEXT) -> bytes:
    """One unmasked, unfragmented server frame."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return head + payload


def close_frame(code: int = 1000, reason: str = "") -> bytes:
    return frame(struct.pack("!H", code) + reason.encode()[:120], CLOSE)


def _unmask(data: bytes, mask: bytes) -> bytes:
    if not data:
        return data
    # XOR with the 4-byte mask repeated, as one big-integer operation (fast in CPython).
    n = len(data)
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


class FrameReader:
    """Feed it bytes; it returns whole messages as (opcode, payload), reassembling fragments."""

    __slots__ = ("_buf", "_parts", "_opcode")

    def __init__(self) -> None:
        self._buf = b""
        self._parts: list[bytes] | None = None
        self._opcode = 0

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buf = self._buf + data if self._buf else data
        out: list[tuple[int, bytes]] = []
        pos = 0
        while True:
            if len(buf) - pos < 2:
                break
            b0, b1 = buf[pos], buf[pos + 1]
            fin, opcode, masked, n = b0 & 0x80, b0 & 0x0F, b1 & 0x80, b1 & 0x7F
            if b0 & 0x70:
                raise FrameError(1002, "reserved bits set")
            if not masked:
                raise FrameError(1002, "client frames must be masked")
            head = 2
            if n == 126:
                if len(buf) - pos < 4:
                    break
                n = struct.unpack_from("!H", buf, pos + 2)[0]
                head = 4
            elif n == 127:
                if len(buf) - pos < 10:
                    break
                n = struct.unpack_from("!Q", buf, pos + 2)[0]
                head = 10
            if n > MAX_MESSAGE:
                raise FrameError(1009, "message too big")
            if len(buf) - pos < head + 4 + n:
                break
            mask = buf[pos + head:pos + head + 4]
            payload = _unmask(buf[pos + head + 4:pos + head + 4 + n], mask)
            pos += head + 4 + n
            if opcode >= 0x8:  # control frames: whole, small, may come between fragments
                if not fin or n > 125:
                    raise FrameError(1002, "bad control frame")
                out.append((opcode, payload))
            elif opcode == CONTINUATION:
                if self._parts is None:
                    raise FrameError(1002, "continuation without a start")
                self._parts.append(payload)
                if sum(map(len, self._parts)) > MAX_MESSAGE:
                    raise FrameError(1009, "message too big")
                if fin:
                    out.append((self._opcode, b"".join(self._parts)))
                    self._parts = None
            elif opcode in (TEXT, BINARY):
                if self._parts is not None:
                    raise FrameError(1002, "new message inside a fragmented one")
                if fin:
                    out.append((opcode, payload))
                else:
                    self._opcode, self._parts = opcode, [payload]
            else:
                raise FrameError(1002, "unknown opcode")
        self._buf = buf[pos:]
        return out
