"""Running the relay under uvicorn: one process, or several workers on one port, each handed
the settings the parent resolved (never re-read from the environment)."""

from __future__ import annotations

import errno
import functools
import json
import logging
import os
import socket
import sys
import tempfile
from typing import Any

import uvicorn

from . import collector
from .app import RelayApp, create_app
from .auth import mint_token
from .config import Settings, is_loopback
from .errors import ConfigError
from .internals import AnnouncingServer, GuardedHttp, Limits, run_workers
from .state.redis_url import parse_redis_url

log = logging.getLogger("relay")

# Browsers always offer permessage-deflate: accepting it keeps a zlib context per connection
# (measured ~42 KB per viewer, doubling the total) to compress base64 PNGs that barely compress.
# Node's socket.io ships with it off too. Engine.IO pings every 20 s already, so the websocket
# layer's own ping is redundant.
UVICORN_WS: dict[str, Any] = {"ws_per_message_deflate": False, "ws_ping_interval": None}


def front(settings: Settings) -> dict[str, Any]:
    """How uvicorn takes connections: the HTTP limits (relay/internals/http.py) and websockets."""
    limits = Limits(max_connections=settings.max_connections,
                    header_timeout=settings.header_timeout, body_timeout=settings.body_timeout)
    return {"http": functools.partial(GuardedHttp, limits=limits), **UVICORN_WS}
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
BACKLOG = 16384  # connections waiting to be accepted (uvicorn's default: 2048)


def log_config(level: str, secrets: list[str] | None = None) -> dict[str, Any]:
    """One format for the relay's and uvicorn's lines, on stderr, in every worker; no secret
    and no query string in them, and no flood from python-engineio/socketio (relay/logs.py)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": LOG_FORMAT}},
        "filters": {"redact": {"()": "relay.logs.Redact", "secrets": secrets or []},
                    "quiet": {"()": "relay.logs.Quiet"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain",
                                "stream": "ext://sys.stderr", "filters": ["redact"]}},
        "root": {"handlers": ["stderr"], "level": level.upper()},
        "loggers": {name: {"level": "ERROR", "filters": ["quiet"]}
                    for name in ("engineio.server", "socketio.server")},
    }


def worker_app(settings: Settings) -> RelayApp:
    """What each worker process runs (uvicorn calls it after spawning the worker)."""
    app = create_app(settings)
    collector.tune()
    return app


def uvicorn_config(settings: Settings) -> uvicorn.Config:
    return uvicorn.Config(
        functools.partial(worker_app, settings), factory=True, host=settings.host,
        port=settings.port, workers=settings.workers,
        log_config=log_config(settings.log_level, [settings.webhook_secret or "", settings.secret,
                                                   settings.admin_key or ""]),
        log_level=settings.log_level, access_log=False,  # access logs would hold ?token=
        proxy_headers=True, timeout_graceful_shutdown=5, lifespan="on",
        # After a blip every viewer comes back within a second or two: connections beyond the
        # accept queue are dropped and retried by the client's TCP only after 1, 3, 7 s... The
        # kernel caps this at net.core.somaxconn (README, "Operations").
        backlog=BACKLOG, **front(settings))


def announce(settings: Settings) -> None:
    """Say that the relay listens (and, in development, how to try it)."""
    log.info("relay ready on http://%s:%d (pid %d, %d worker(s), state: %s)", settings.host,
             settings.port, os.getpid(), settings.workers,
             parse_redis_url(settings.redis_url).describe() if settings.redis_url else "in-memory")
    if settings.secret_generated:
        print(getting_started(settings), file=sys.stderr, flush=True)


def getting_started(settings: Settings) -> str:
    """The first hour: a page link, the webhook URL, a ready curl, and the Docker trap."""
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    base = f"http://{host}:{settings.port}"
    hook = f"{base}/webhooks/evolution" + ("/<RELAY_WEBHOOK_SECRET>" if settings.webhook_secret else "")
    body = json.dumps({"event": "connection.update", "instance": "my-instance",
                       "data": {"instance": "my-instance", "state": "connecting", "statusReason": 200}})
    token = mint_token(settings.secret, ["*"], 24 * 3600)
    lines = [
        "RELAY_SECRET is not set: this run uses a throwaway secret (viewer tokens die with it). "
        "Set RELAY_SECRET in production.",
        "Getting started:",
        f"  1. Open the page of instance my-instance: {base}/?instance=my-instance&token={token}",
        f"  2. Point the gateway's webhook at {hook}",
        f"     (WPPConnect: {base}/webhooks/wppconnect?session=<session>)",
        "  3. Or try it now, no gateway needed:",
        f"     curl -X POST {hook} -H 'Content-Type: application/json' -d '{body}'",
    ]
    if is_loopback(settings.host):
        lines.append("  A gateway in Docker cannot reach 127.0.0.1 of this machine: start the relay with "
                     f"RELAY_HOST=0.0.0.0 (and a RELAY_WEBHOOK_SECRET) and use "
                     f"http://host.docker.internal:{settings.port}/webhooks/evolution/<secret>.")
    return "\n".join(lines)


def check_port(host: str, port: int) -> None:
    """Say in one line, before anything starts, why the relay could not listen (uvicorn logs a
    bare errno, after the app has started). The real bind may still lose a race."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            where = f"{host}:{port}"
            raise ConfigError({
                errno.EADDRINUSE: f"{where} is already in use (another relay?): stop what uses "
                                  "it, or choose another port with --port or RELAY_PORT",
                errno.EADDRNOTAVAIL: f"{host} is not an address of this machine: set --host or "
                                     "RELAY_HOST to one of its addresses (0.0.0.0: all of them)",
                errno.EACCES: f"port {port} needs privileges here: choose a port above 1023 "
                              "with --port or RELAY_PORT (e.g. 8000)",
            }.get(exc.errno or 0, f"cannot listen on {where}: {exc.strerror or exc}")) from None


def serve(settings: Settings) -> None:
    """Serve until a signal: in this process, or in ``settings.workers`` spawned workers."""
    check_port(settings.host, settings.port)
    config = uvicorn_config(settings)  # sets up logging
    for warning in settings.warnings():
        log.warning(warning)
    if settings.workers == 1:
        AnnouncingServer(config, lambda: announce(settings)).run()
        return
    # One scrape must count every worker: prometheus_client shares values through files in a
    # folder it finds in PROMETHEUS_MULTIPROC_DIR (its own interface, read in each worker).
    # The folder lives as long as this parent process.
    with tempfile.TemporaryDirectory(prefix="relay-metrics-") as metrics_dir:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        config = uvicorn_config(settings.replace(metrics_dir=metrics_dir))
        run_workers(config, on_bound=lambda: announce(settings))
