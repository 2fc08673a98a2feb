"""Settings: one object, read once from ``RELAY_*`` variables (and CLI flags), passed down.

No other module reads the environment. A bad value raises :class:`ConfigError` whose message
names the variable, and the CLI prints that one line and exits.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .errors import ConfigError

SOCKET_MODES = ("off", "global", "instances")
AUTO_CONNECT = ("off", "on-view")
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
# The repository layout: relay/ and web/ side by side. An installed image points RELAY_WEB_DIR elsewhere.
DEFAULT_WEB_DIR = Path(__file__).resolve().parent.parent / "web"


@dataclass(frozen=True)
class Settings:
    """Everything the relay is configured with. Fixed for the life of a process."""

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    redis_url: str | None = None
    secret: str = ""
    secret_generated: bool = False
    webhook_secret: str | None = None
    admin_key: str | None = None
    evolution_url: str | None = None
    evolution_apikey: str | None = None
    evolution_socket: str = "off"
    wppconnect_url: str | None = None
    wppconnect_secret_key: str | None = None
    allowed_origins: tuple[str, ...] = ()
    qr_ttl: float = 45.0
    qr_wait: float = 30.0
    auto_connect: str = "on-view"
    key_prefix: str = "relay"
    log_level: str = "info"
    web_dir: Path = DEFAULT_WEB_DIR
    max_body: int = 1024 * 1024
    # How many webhook requests may be stored at once; more answer 503 (the gateway retries).
    max_inflight: int = 256
    gateway_timeout: float = 10.0
    probe_interval: float = 10.0
    # Set by ``relay serve --workers N`` (not an environment variable): the folder where the
    # workers' metrics meet, so that one scrape counts them all.
    metrics_dir: str | None = None

    @property
    def upstream_name(self) -> str:
        """The gateway this relay serves by default (shown in snapshots of unseen instances)."""
        if self.wppconnect_url and not self.evolution_url:
            return "wppconnect"
        return "evolution"

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: object) -> "Settings":
        """Build settings from ``RELAY_*`` variables; ``overrides`` (CLI flags) win when not None."""
        r = _Reader(env)
        values: dict[str, object] = {
            "host": r.text("RELAY_HOST", "127.0.0.1"),
            "port": r.integer("RELAY_PORT", 8000, lo=0, hi=65535),
            "workers": r.integer("RELAY_WORKERS", 1, lo=1, hi=256),
            "redis_url": r.url("RELAY_REDIS_URL", ("redis", "rediss", "unix")),
            "webhook_secret": r.opt("RELAY_WEBHOOK_SECRET"),
            "admin_key": r.opt("RELAY_ADMIN_KEY"),
            "evolution_url": r.url("RELAY_EVOLUTION_URL", ("http", "https")),
            "evolution_apikey": r.opt("RELAY_EVOLUTION_APIKEY"),
            "evolution_socket": r.choice("RELAY_EVOLUTION_SOCKET", SOCKET_MODES, "off"),
            "wppconnect_url": r.url("RELAY_WPPCONNECT_URL", ("http", "https")),
            "wppconnect_secret_key": r.opt("RELAY_WPPCONNECT_SECRET_KEY"),
            "allowed_origins": r.items("RELAY_ALLOWED_ORIGINS"),
            "qr_ttl": r.number("RELAY_QR_TTL", 45.0, lo=1.0, hi=3600.0),
            "qr_wait": r.number("RELAY_QR_WAIT", 30.0, lo=0.1, hi=3600.0),
            "auto_connect": r.choice("RELAY_AUTO_CONNECT", AUTO_CONNECT, "on-view"),
            "key_prefix": r.text("RELAY_KEY_PREFIX", "relay"),
            "log_level": r.choice("RELAY_LOG_LEVEL", LOG_LEVELS, "info"),
            "web_dir": Path(r.text("RELAY_WEB_DIR", str(DEFAULT_WEB_DIR))),
            "max_body": r.integer("RELAY_MAX_BODY", 1024 * 1024, lo=1024, hi=64 * 1024 * 1024),
            "max_inflight": r.integer("RELAY_MAX_INFLIGHT", 256, lo=1, hi=100_000),
            "gateway_timeout": r.number("RELAY_GATEWAY_TIMEOUT", 10.0, lo=0.1, hi=300.0),
            "probe_interval": r.number("RELAY_GATEWAY_PROBE_INTERVAL", 10.0, lo=0.1, hi=3600.0),
        }
        secret = r.opt("RELAY_SECRET")
        for key, value in overrides.items():
            if value is not None:
                values[key] = value
        if secret is not None and len(secret) < 32:
            raise ConfigError("RELAY_SECRET must be at least 32 characters (it signs HS256 viewer tokens)")
        if secret is None:
            values["secret"] = secrets.token_urlsafe(32)
            values["secret_generated"] = True
        else:
            values["secret"] = secret
        if values["evolution_socket"] != "off" and not values["evolution_url"]:
            raise ConfigError("RELAY_EVOLUTION_SOCKET needs RELAY_EVOLUTION_URL (the gateway to follow)")
        if values["evolution_url"] and not values["evolution_apikey"]:
            raise ConfigError("RELAY_EVOLUTION_APIKEY is required when RELAY_EVOLUTION_URL is set")
        if values["wppconnect_url"] and not values["wppconnect_secret_key"]:
            raise ConfigError("RELAY_WPPCONNECT_SECRET_KEY is required when RELAY_WPPCONNECT_URL is set")
        if int(values["workers"]) > 1 and not values["redis_url"]:  # type: ignore[call-overload]
            raise ConfigError(
                "RELAY_WORKERS/--workers > 1 needs RELAY_REDIS_URL: in-memory state lives in one process"
            )
        return cls(**values)  # type: ignore[arg-type]

    def replace(self, **changes: object) -> "Settings":
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


class _Reader:
    """Typed access to the environment; every error names its variable."""

    def __init__(self, env: Mapping[str, str]):
        self.env = env

    def opt(self, name: str) -> str | None:
        value = self.env.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def text(self, name: str, default: str) -> str:
        return self.opt(name) or default

    def integer(self, name: str, default: int, *, lo: int, hi: int) -> int:
        raw = self.opt(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
        if not lo <= value <= hi:
            raise ConfigError(f"{name} must be between {lo} and {hi}, got {value}")
        return value

    def number(self, name: str, default: float, *, lo: float, hi: float) -> float:
        raw = self.opt(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a number, got {raw!r}") from None
        if not lo <= value <= hi:
            raise ConfigError(f"{name} must be between {lo:g} and {hi:g}, got {value:g}")
        return value

    def choice(self, name: str, choices: tuple[str, ...], default: str) -> str:
        raw = (self.opt(name) or default).lower()
        if raw not in choices:
            raise ConfigError(f"{name} must be one of {'|'.join(choices)}, got {raw!r}")
        return raw

    def url(self, name: str, schemes: tuple[str, ...]) -> str | None:
        raw = self.opt(name)
        if raw is None:
            return None
        parts = urlsplit(raw)
        if parts.scheme not in schemes or not (parts.netloc or parts.scheme == "unix"):
            # Never echo the value: URLs often carry passwords.
            raise ConfigError(f"{name} must be a {'/'.join(s + '://' for s in schemes)} URL")
        return raw.rstrip("/") if parts.scheme in ("http", "https") else raw

    def items(self, name: str) -> tuple[str, ...]:
        raw = self.opt(name)
        if raw is None:
            return ()
        return tuple(item.strip().rstrip("/") for item in raw.split(",") if item.strip())
