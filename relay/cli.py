"""``relay serve``, ``relay token`` and ``relay demo``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from .auth import mint_token
from .config import Settings
from .errors import ConfigError

log = logging.getLogger("relay")


def _serve_overrides(args: argparse.Namespace) -> dict[str, object]:
    return {"host": args.host, "port": args.port, "workers": args.workers,
            "redis_url": args.redis_url, "log_level": args.log_level}


def serve(args: argparse.Namespace) -> int:
    from .server import serve as run

    run(Settings.from_env(os.environ, **_serve_overrides(args)))
    return 0


def token(args: argparse.Namespace) -> int:
    settings = Settings.from_env(os.environ)
    if settings.secret_generated:
        raise ConfigError("RELAY_SECRET must be set (at least 32 characters) to mint viewer tokens")
    if args.ttl < 1:
        raise ConfigError(f"--ttl must be at least 1 second, got {args.ttl}")
    print(mint_token(settings.secret, args.instance, args.ttl))
    return 0


def demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(host=args.host or "127.0.0.1", port=args.port or 8000,
                    instance=args.instance, every=args.every, log_level=args.log_level or "info",
                    gateway_port=args.gateway_port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="relay", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the relay (in-memory state unless RELAY_REDIS_URL is set)")
    p.add_argument("--host", help="interface to bind (RELAY_HOST, default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (RELAY_PORT, default 8000)")
    p.add_argument("--workers", type=int, help="worker processes (RELAY_WORKERS; >1 needs Redis)")
    p.add_argument("--redis-url", help="share state through Redis (RELAY_REDIS_URL)")
    p.add_argument("--log-level", help="critical|error|warning|info|debug (RELAY_LOG_LEVEL)")
    p.set_defaults(func=serve)

    t = sub.add_parser("token", help="print a viewer token signed with RELAY_SECRET")
    t.add_argument("--instance", action="append", required=True,
                   help="instance the token may watch (repeat for several; '*' for all)")
    t.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default 3600)")
    t.set_defaults(func=token)

    d = sub.add_parser("demo", help="dev only: the relay plus a fake local gateway with fake QRs")
    d.add_argument("--host")
    d.add_argument("--port", type=int, help="the relay's port (default 8000)")
    d.add_argument("--gateway-port", type=int, help="the fake gateway's port (default --port + 1)")
    d.add_argument("--instance", default="demo", help="instance name to show (default demo)")
    d.add_argument("--every", type=float, default=5.0, help="seconds between fake QRs (default 5)")
    d.add_argument("--log-level")
    d.set_defaults(func=demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"relay: {exc.detail}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
