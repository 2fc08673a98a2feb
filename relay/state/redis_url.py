"""Where the shared state lives, read from one URL: one Redis, a Redis Cluster, or a Sentinel group.

    redis://[user:password@]host[:port][/db][?options]       one server (rediss:// for TLS)
    unix://[user:password@]/path/to/redis.sock[?db=N]        one server on a socket
    redis+cluster://[user:password@]host:port[,host:port…][?options]
    redis+sentinel://[user:password@]host:port[,host:port…]/service-name[/db][?options]

``rediss+cluster://`` and ``rediss+sentinel://`` speak TLS (to the sentinels too). The user and
password are those of the data nodes (the cluster's nodes, the Sentinel group's master); sentinels
that require their own are given ``sentinel_username`` / ``sentinel_password`` options. Other
options: ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile`` (paths), ``ssl_cert_reqs``
(``none|optional|required``), ``ssl_check_hostname`` (``true|false``). The cluster and Sentinel
host lists are seeds: list several, so that start-up does not depend on one box. Plain
``redis://``, ``rediss://`` and ``unix://`` URLs are handed to redis-py as they are.

Errors are :class:`ValueError` whose message never repeats the URL (it may carry a password).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

SINGLE = ("redis", "rediss", "unix")
CLUSTER = ("redis+cluster", "rediss+cluster")
SENTINEL = ("redis+sentinel", "rediss+sentinel")
SCHEMES = SINGLE + CLUSTER + SENTINEL
PATH_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
CERT_REQS = ("none", "optional", "required")
BOOLEANS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


@dataclass(frozen=True)
class RedisTarget:
    """A parsed ``RELAY_REDIS_URL``. ``kind``: ``single``, ``cluster`` or ``sentinel``."""

    kind: str
    url: str = ""  # single: the URL itself, for redis-py
    nodes: tuple[tuple[str, int], ...] = ()  # cluster seed nodes, or the sentinels
    service: str = ""  # sentinel: the name the sentinels monitor the master as
    options: dict[str, Any] = field(default_factory=dict)  # data nodes: credentials, db, TLS
    sentinel_options: dict[str, Any] = field(default_factory=dict)  # the sentinels' own

    def describe(self) -> str:
        """For logs: what kind of Redis, never credentials."""
        if self.kind == "cluster":
            return f"Redis Cluster ({len(self.nodes)} seed node(s))"
        if self.kind == "sentinel":
            return f"Redis Sentinel group {self.service!r} ({len(self.nodes)} sentinel(s))"
        return "one Redis"


def parse_redis_url(url: str) -> RedisTarget:
    """Parse and check ``url``; ValueError (without the URL in its message) when it is wrong."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme
    if scheme not in SCHEMES:
        raise ValueError("must be a " + ", ".join(s + "://" for s in SCHEMES) + " URL")
    if scheme in SINGLE:
        if not (parts.netloc or scheme == "unix"):
            raise ValueError(f"must name a host: {scheme}://host[:port][/db]")
        return RedisTarget(kind="single", url=url.strip())
    kind = "cluster" if scheme in CLUSTER else "sentinel"
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    nodes = _hosts(hostlist, default_port=6379 if kind == "cluster" else 26379)
    options: dict[str, Any] = {}
    if userinfo:
        user, has_password, password = userinfo.partition(":")
        if user:
            options["username"] = unquote(user)
        if has_password:
            options["password"] = unquote(password)
    sentinel_options: dict[str, Any] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in ("sentinel_username", "sentinel_password") and kind == "sentinel":
            sentinel_options[name.removeprefix("sentinel_")] = value
        elif name in PATH_OPTIONS:
            options[name] = value
        elif name == "ssl_cert_reqs":
            if value.lower() not in CERT_REQS:
                raise ValueError("option ssl_cert_reqs must be " + "|".join(CERT_REQS))
            options[name] = value.lower()
        elif name == "ssl_check_hostname":
            if value.lower() not in BOOLEANS:
                raise ValueError("option ssl_check_hostname must be true or false")
            options[name] = BOOLEANS[value.lower()]
        else:
            known = [*PATH_OPTIONS, "ssl_cert_reqs", "ssl_check_hostname"]
            if kind == "sentinel":
                known += ["sentinel_username", "sentinel_password"]
            raise ValueError(f"has an unknown option {name[:40]!r} (known: {', '.join(known)})")
    if scheme.startswith("rediss"):
        options["ssl"] = True
    elif any(k.startswith("ssl_") for k in options):
        raise ValueError("has ssl_* options but no TLS: use rediss+cluster:// or rediss+sentinel://")
    path = [unquote(p) for p in parts.path.split("/") if p]
    service = ""
    if kind == "cluster":
        if path not in ([], ["0"]):
            raise ValueError("points at a Redis Cluster, which has database 0 only: drop the path")
    else:
        if not path:
            raise ValueError("needs the master's service name as its path: "
                             "redis+sentinel://host:26379,host:26379/<service-name>[/db]")
        if len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
            raise ValueError("path must be /<service-name>[/<db number>]")
        service = path[0]
        if len(path) == 2:
            options["db"] = int(path[1])
        if options.get("ssl"):  # TLS everywhere: the sentinels are reached like the master
            sentinel_options.update({k: v for k, v in options.items()
                                     if k == "ssl" or k.startswith("ssl_")})
    return RedisTarget(kind=kind, nodes=nodes, service=service, options=options,
                       sentinel_options=sentinel_options)


def _hosts(hostlist: str, *, default_port: int) -> tuple[tuple[str, int], ...]:
    """``host[:port],[v6]:port,…`` → ((host, port), …)."""
    nodes = []
    for item in hostlist.split(","):
        item = item.strip()
        if not item:
            continue
        if item.startswith("["):  # [IPv6]:port
            host, _, rest = item[1:].partition("]")
            port_text = rest.removeprefix(":")
        else:
            host, _, port_text = item.partition(":")
        if not host:
            raise ValueError("has an empty host in its host list")
        try:
            port = int(port_text) if port_text else default_port
        except ValueError:
            raise ValueError("has a port that is not a number in its host list") from None
        if not 0 < port < 65536:
            raise ValueError("has a port out of range in its host list")
        nodes.append((host, port))
    if not nodes:
        raise ValueError("lists no host: give host:port[,host:port…]")
    return tuple(nodes)
