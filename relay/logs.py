"""Log hygiene: no secrets in lines that quote request paths, and no flood from what clients send.

- :class:`Redact` (on the handler): uvicorn's websocket lines quote the request path with its
  query (``?token=<JWT>``), and a webhook path may hold the webhook secret.
- :class:`Quiet` (on python-engineio's and python-socketio's loggers): a malformed packet makes
  them log a traceback per frame; one line a minute per kind of message is enough to notice.
"""

from __future__ import annotations

import logging
import re
import time

QUERY = re.compile(r"\?[^\s\"']*")


class Redact(logging.Filter):
    """Rewrites each record's text: query strings and the given secrets are replaced."""

    def __init__(self, secrets: list[str] | None = None):
        super().__init__()
        self.secrets = [s for s in secrets or [] if s]

    def clean(self, text: str) -> str:
        text = QUERY.sub("?[redacted]", text)
        for secret in self.secrets:
            text = text.replace(secret, "[secret]")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = self.clean(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(self.clean(a) if isinstance(a, str) else a for a in record.args)
        return True


class Quiet(logging.Filter):
    """At most one record per minute per message template, without its traceback."""

    def __init__(self, every: float = 60.0):
        super().__init__()
        self.every = every
        self._last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = f"{record.name}:{record.msg}"
        now = time.monotonic()
        if now - self._last.get(key, -self.every) < self.every:
            return False
        if len(self._last) > 1000:
            self._last.clear()
        self._last[key] = now
        record.exc_info = None
        record.exc_text = None
        return True


class Throttle:
    """For a line that could repeat with every request: say it at most every ``every`` seconds
    per key, with how many were held back meanwhile."""

    def __init__(self, every: float = 10.0):
        self.every = every
        self._last: dict[str, tuple[float, int]] = {}

    def ready(self, key: str) -> int | None:
        """None: hold this one back. Otherwise how many were held back since the last one."""
        now = time.monotonic()
        last, held = self._last.get(key, (-self.every, 0))
        if now - last < self.every:
            self._last[key] = (last, held + 1)
            return None
        if len(self._last) > 1000:
            self._last.clear()
        self._last[key] = (now, 0)
        return held
