"""Running the relay under uvicorn: one process, or several workers on one port, each handed
the settings the parent resolved (never re-read from the environment)."""

from __future__ import annotations

import functools
import gc
import os
import tempfile
from typing import Any

import uvicorn

from .app import RelayApp, create_app
from .config import Settings
from .internals import run_workers

# Browsers always offer permessage-deflate: accepting it keeps a zlib context per connection
# (measured ~42 KB per viewer, doubling the total) to compress base64 PNGs that barely compress.
# Node's socket.io ships with it off too. Engine.IO pings every 20 s already, so the websocket
# layer's own ping is redundant.
UVICORN_WS: dict[str, Any] = {"ws_per_message_deflate": False, "ws_ping_interval": None}
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def log_config(level: str) -> dict[str, Any]:
    """One format for the relay's and uvicorn's lines, on stderr, in every worker."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": LOG_FORMAT}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain",
                                "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["stderr"], "level": level.upper()},
    }


def tune_gc() -> None:
    """Everything created so far lives as long as the process: keep it out of the collector's
    full passes, and collect young objects less often (full-heap pauses of 50-250 ms were
    measured under load otherwise; BENCHMARKS.md)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(7000, 20, 20)


def worker_app(settings: Settings) -> RelayApp:
    """What each worker process runs (uvicorn calls it after spawning the worker)."""
    app = create_app(settings)
    tune_gc()
    return app


def uvicorn_config(settings: Settings) -> uvicorn.Config:
    return uvicorn.Config(
        functools.partial(worker_app, settings), factory=True, host=settings.host,
        port=settings.port, workers=settings.workers, log_config=log_config(settings.log_level),
        log_level=settings.log_level, access_log=False,  # access logs would hold ?token=
        proxy_headers=True, timeout_graceful_shutdown=5, lifespan="on", **UVICORN_WS)


def serve(settings: Settings) -> None:
    """Serve until a signal: in this process, or in ``settings.workers`` spawned workers."""
    if settings.workers == 1:
        uvicorn.Server(uvicorn_config(settings)).run()
        return
    # One scrape must count every worker: prometheus_client shares values through files in a
    # folder it finds in PROMETHEUS_MULTIPROC_DIR (its own interface, read in each worker).
    # The folder lives as long as this parent process.
    with tempfile.TemporaryDirectory(prefix="relay-metrics-") as metrics_dir:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        config = uvicorn_config(settings.replace(metrics_dir=metrics_dir))
        run_workers(config)
