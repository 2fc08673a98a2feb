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
from .state.redis_url import parse_redis_url

SOCKET_MODES = ("off", "global", "instances")
# `relay serve` flags and the variables they stand for (an error names what the user typed).
FLAGS = {"host": ("RELAY_HOST", "--host"), "port": ("RELAY_PORT", "--port"),
         "workers": ("RELAY_WORKERS", "--workers"), "redis_url": ("RELAY_REDIS_URL", "--redis-url"),
         "log_level": ("RELAY_LOG_LEVEL", "--log-level")}
MIN_KEY = 16  # shortest webhook secret or admin key accepted: anything shorter is guessable
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
    # RELAY_WEBHOOK_SECRET=none: webhooks without a secret on purpose (see from_env).
    webhooks_open: bool = False
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
    # Open connections per worker (websockets included); 0: the open-file limit less a reserve.
    max_connections: int = 0
    # An instance's record outlives its last event by this many seconds (0: forever); memory
    # keeps at most max_instances records (the least recently updated go first).
    record_ttl: float = 7 * 24 * 3600.0
    max_instances: int = 100_000
    # Seconds a client has to send its request headers (slowloris), and then its body.
    header_timeout: float = 10.0
    body_timeout: float = 30.0
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
        """Build settings from ``RELAY_*`` variables; ``overrides`` (CLI flags, see FLAGS) win
        when not None, and are checked like the variables they stand for."""
        merged, labels = dict(env), {}
        for key, value in overrides.items():
            if value is not None:
                variable, flag = FLAGS[key]
                merged[variable], labels[variable] = str(value), flag
        r = _Reader(merged, labels)
        values: dict[str, object] = {
            "host": r.text("RELAY_HOST", "127.0.0.1"),
            "port": r.integer("RELAY_PORT", 8000, lo=0, hi=65535),
            "workers": r.integer("RELAY_WORKERS", 1, lo=1, hi=256),
            "redis_url": r.redis_url("RELAY_REDIS_URL"),
            "webhook_secret": r.opt("RELAY_WEBHOOK_SECRET"),
            "admin_key": r.key("RELAY_ADMIN_KEY"),
            "evolution_url": r.url("RELAY_EVOLUTION_URL", ("http", "https")),
            "evolution_apikey": r.opt("RELAY_EVOLUTION_APIKEY"),
            "evolution_socket": r.choice("RELAY_EVOLUTION_SOCKET", SOCKET_MODES, "off"),
            "wppconnect_url": r.url("RELAY_WPPCONNECT_URL", ("http", "https")),
            "wppconnect_secret_key": r.opt("RELAY_WPPCONNECT_SECRET_KEY"),
            "allowed_origins": r.origins("RELAY_ALLOWED_ORIGINS"),
            "qr_ttl": r.number("RELAY_QR_TTL", 45.0, lo=1.0, hi=3600.0),
            "qr_wait": r.number("RELAY_QR_WAIT", 30.0, lo=0.1, hi=3600.0),
            "auto_connect": r.choice("RELAY_AUTO_CONNECT", AUTO_CONNECT, "on-view"),
            "key_prefix": r.key_prefix("RELAY_KEY_PREFIX"),
            "log_level": r.choice("RELAY_LOG_LEVEL", LOG_LEVELS, "info"),
            "web_dir": Path(r.text("RELAY_WEB_DIR", str(DEFAULT_WEB_DIR))),
            "max_body": r.integer("RELAY_MAX_BODY", 1024 * 1024, lo=1024, hi=64 * 1024 * 1024),
            "max_inflight": r.integer("RELAY_MAX_INFLIGHT", 256, lo=1, hi=100_000),
            "max_connections": r.integer("RELAY_MAX_CONNECTIONS", 0, lo=0, hi=10_000_000),
            "record_ttl": r.number("RELAY_RECORD_TTL", 7 * 24 * 3600.0, lo=0.0, hi=10 * 365 * 86400.0),
            "max_instances": r.integer("RELAY_MAX_INSTANCES", 100_000, lo=1, hi=100_000_000),
            "header_timeout": r.number("RELAY_HEADER_TIMEOUT", 10.0, lo=0.1, hi=300.0),
            "body_timeout": r.number("RELAY_BODY_TIMEOUT", 30.0, lo=0.1, hi=3600.0),
            "gateway_timeout": r.number("RELAY_GATEWAY_TIMEOUT", 10.0, lo=0.1, hi=300.0),
            "probe_interval": r.number("RELAY_GATEWAY_PROBE_INTERVAL", 10.0, lo=0.1, hi=3600.0),
        }
        secret = r.opt("RELAY_SECRET")
        _webhook_policy(values, r)
        if secret is not None and secret == values["webhook_secret"]:
            raise ConfigError("RELAY_WEBHOOK_SECRET must differ from RELAY_SECRET: with one secret, "
                              "any viewer's token would also be a valid webhook credential")
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
        if 0 < float(values["record_ttl"]) < 3600:  # type: ignore[arg-type]
            raise ConfigError("RELAY_RECORD_TTL must be 0 (keep records forever) or at least 3600 "
                              "seconds: a record must outlive its instance's QR codes")
        if int(values["workers"]) > 1 and not values["redis_url"]:  # type: ignore[call-overload]
            raise ConfigError(
                "RELAY_WORKERS/--workers > 1 needs RELAY_REDIS_URL: in-memory state lives in one process"
            )
        return cls(**values)  # type: ignore[arg-type]

    def replace(self, **changes: object) -> "Settings":
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def warnings(self) -> list[str]:
        """What start-up should say about choices that are allowed but risky."""
        said = []
        if self.webhook_secret is None:
            said.append("RELAY_WEBHOOK_SECRET=none: anyone who reaches this relay can post QR codes "
                        "to your viewers' pages" if self.webhooks_open else
                        "webhooks need no secret (RELAY_WEBHOOK_SECRET is not set): fine on "
                        f"{self.host} for development, set it anywhere else")
        if "*" in self.allowed_origins:
            said.append("RELAY_ALLOWED_ORIGINS=*: any website may embed the widget and call the API "
                        "(viewer tokens still decide what it sees)")
        return said


LOOPBACK = ("127.0.0.1", "localhost", "::1", "ip6-localhost")


def is_loopback(host: str) -> bool:
    return host in LOOPBACK or host.startswith("127.")


def _webhook_policy(values: dict[str, object], r: "_Reader") -> None:
    """Webhooks carry what viewers see, so a relay others can reach must authenticate them:
    off loopback, RELAY_WEBHOOK_SECRET is required (or RELAY_WEBHOOK_SECRET=none, on purpose)."""
    secret = values["webhook_secret"]
    if isinstance(secret, str) and secret.lower() == "none":
        values["webhook_secret"], values["webhooks_open"] = None, True
        return
    if secret is None and not is_loopback(str(values["host"])):
        raise ConfigError(
            f"RELAY_WEBHOOK_SECRET is required when listening on {values['host']}: otherwise anyone "
            "who reaches the relay can put a QR code on your viewers' pages (set it, and give it to "
            "the gateway; or set RELAY_WEBHOOK_SECRET=none to accept that on purpose)")
    if isinstance(secret, str) and len(secret) < MIN_KEY:
        raise ConfigError(f"RELAY_WEBHOOK_SECRET must be at least {MIN_KEY} characters")


class _Reader:
    """Typed access to the environment; every error names its variable (or the flag that set it)."""

    def __init__(self, env: Mapping[str, str], labels: Mapping[str, str] | None = None):
        self.env = env
        self.labels = labels or {}

    def name(self, variable: str) -> str:
        return self.labels.get(variable, variable)

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
            raise ConfigError(f"{self.name(name)} must be a whole number, got {raw!r}") from None
        if not lo <= value <= hi:
            raise ConfigError(f"{self.name(name)} must be between {lo} and {hi}, got {value}")
        return value

    def number(self, name: str, default: float, *, lo: float, hi: float) -> float:
        raw = self.opt(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{self.name(name)} must be a number, got {raw!r}") from None
        if not lo <= value <= hi:
            raise ConfigError(f"{self.name(name)} must be between {lo:g} and {hi:g}, got {value:g}")
        return value

    def choice(self, name: str, choices: tuple[str, ...], default: str) -> str:
        raw = (self.opt(name) or default).lower()
        if raw not in choices:
            raise ConfigError(f"{self.name(name)} must be one of {'|'.join(choices)}, got {raw!r}")
        return raw

    def url(self, name: str, schemes: tuple[str, ...]) -> str | None:
        raw = self.opt(name)
        if raw is None:
            return None
        parts = urlsplit(raw)
        if parts.scheme not in schemes or not (parts.netloc or parts.scheme == "unix"):
            # Never echo the value: URLs often carry passwords.
            raise ConfigError(f"{self.name(name)} must be a {'/'.join(s + '://' for s in schemes)} URL")
        return raw.rstrip("/") if parts.scheme in ("http", "https") else raw

    def redis_url(self, name: str) -> str | None:
        """One Redis, a Cluster or a Sentinel group (relay/state/redis_url.py has the forms)."""
        raw = self.opt(name)
        if raw is None:
            return None
        try:
            parse_redis_url(raw)
        except ValueError as exc:  # the message never repeats the URL (passwords)
            raise ConfigError(f"{self.name(name)} {exc}") from None
        return raw

    def key_prefix(self, name: str) -> str:
        prefix = self.text(name, "relay")
        if "{" in prefix or "}" in prefix:
            raise ConfigError(f"{self.name(name)} may not contain {{ or }} (Redis Cluster hash tags use them)")
        return prefix

    def items(self, name: str) -> tuple[str, ...]:
        raw = self.opt(name)
        if raw is None:
            return ()
        return tuple(item.strip().rstrip("/") for item in raw.split(",") if item.strip())

    def origins(self, name: str) -> tuple[str, ...]:
        """Browser origins: ``scheme://host[:port]`` each (a bare host never matches an Origin
        header, so it would silently allow nothing), or ``*``."""
        items = self.items(name)
        for item in items:
            parts = urlsplit(item)
            if item != "*" and (parts.scheme not in ("http", "https") or not parts.netloc
                                or parts.path or parts.query):
                raise ConfigError(f"{name}: {item!r} is not an origin; write it as "
                                  f"https://{parts.netloc or item.split('/')[0]} (scheme and host, "
                                  "no path)")
        return items

    def key(self, name: str) -> str | None:
        """A shared key that guards something (at least MIN_KEY characters)."""
        raw = self.opt(name)
        if raw is not None and len(raw) < MIN_KEY:
            raise ConfigError(f"{name} must be at least {MIN_KEY} characters")
        return raw
