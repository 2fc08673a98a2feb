"""Settings and the CLI: a bad or missing value stops start-up with one line naming it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import jwt
import pytest

from relay.config import Settings
from relay.errors import ConfigError

GOOD = {"RELAY_SECRET": "s" * 32}


def test_defaults() -> None:
    s = Settings.from_env(GOOD)
    assert (s.host, s.port, s.workers, s.redis_url, s.qr_ttl, s.evolution_socket) == \
        ("127.0.0.1", 8000, 1, None, 45.0, "off")
    assert not s.secret_generated


def test_dev_secret_is_made_up() -> None:
    s = Settings.from_env({})
    assert s.secret_generated and len(s.secret) >= 32


@pytest.mark.parametrize("env, variable", [
    ({"RELAY_QR_TTL": "soon"}, "RELAY_QR_TTL"),
    ({"RELAY_QR_TTL": "0"}, "RELAY_QR_TTL"),
    ({"RELAY_PORT": "99999"}, "RELAY_PORT"),
    ({"RELAY_REDIS_URL": "localhost:6379"}, "RELAY_REDIS_URL"),
    ({"RELAY_EVOLUTION_SOCKET": "sometimes", "RELAY_EVOLUTION_URL": "http://e"}, "RELAY_EVOLUTION_SOCKET"),
    ({"RELAY_EVOLUTION_SOCKET": "global"}, "RELAY_EVOLUTION_SOCKET"),
    ({"RELAY_EVOLUTION_URL": "http://evo:8080"}, "RELAY_EVOLUTION_APIKEY"),
    ({"RELAY_WPPCONNECT_URL": "http://wpp:21465"}, "RELAY_WPPCONNECT_SECRET_KEY"),
    ({"RELAY_SECRET": "short"}, "RELAY_SECRET"),
    ({"RELAY_WORKERS": "2"}, "RELAY_REDIS_URL"),
    ({"RELAY_LOG_LEVEL": "loud"}, "RELAY_LOG_LEVEL"),
    ({"RELAY_RECORD_TTL": "60"}, "RELAY_RECORD_TTL"),
    ({"RELAY_MAX_INSTANCES": "0"}, "RELAY_MAX_INSTANCES"),
])
def test_bad_values_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({**GOOD, **env})
    assert variable in info.value.detail


@pytest.mark.parametrize("url", [
    "redis://redis:6379/0", "rediss://:pw@redis:6380/1", "unix:///run/redis.sock?db=2",
    "redis+cluster://10.0.0.1:7000,10.0.0.2:7000,10.0.0.3:7000",
    "rediss+cluster://relay:pw@node-1:6379,node-2?ssl_ca_certs=/etc/ca.pem&ssl_cert_reqs=required",
    "redis+sentinel://s1:26379,s2:26379,s3/mymaster",
    "rediss+sentinel://:pw@[::1]:26379,s2/mymaster/2?sentinel_password=spw&ssl_check_hostname=false",
])
def test_redis_urls_of_every_kind_are_accepted(url: str) -> None:
    assert Settings.from_env({**GOOD, "RELAY_REDIS_URL": url}).redis_url == url


@pytest.mark.parametrize("url, says", [
    ("redis+cluster://", "lists no host"),
    ("redis+cluster://n1:7000,n2:port", "port that is not a number"),
    ("redis+cluster://n1:7000/3", "database 0 only"),
    ("redis+cluster://n1:7000?db=1", "unknown option 'db'"),
    ("redis+cluster://n1:7000?ssl_ca_certs=/ca.pem", "no TLS"),
    ("redis+sentinel://s1:26379,s2:26379", "service name"),
    ("redis+sentinel://s1/mymaster/zero", "/<service-name>[/<db number>]"),
    ("rediss+sentinel://s1/m?ssl_cert_reqs=maybe", "ssl_cert_reqs"),
    ("redis+clusters://n1:7000", "redis+cluster://"),
])
def test_bad_cluster_and_sentinel_urls_say_why_in_one_line(url: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({**GOOD, "RELAY_REDIS_URL": url})
    assert info.value.detail.startswith("RELAY_REDIS_URL ") and says in info.value.detail
    assert "\n" not in info.value.detail


def test_key_prefix_may_not_hold_hash_tag_braces() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({**GOOD, "RELAY_KEY_PREFIX": "relay{x}"})
    assert "RELAY_KEY_PREFIX" in info.value.detail


def test_urls_with_passwords_are_not_echoed() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({**GOOD, "RELAY_REDIS_URL": "http://:hunter2@redis:6379"})
    assert "hunter2" not in info.value.detail
    for url in ("redis+cluster://:hunter2@n1:7000/5", "redis+sentinel://u:hunter2@s1:x/m",
                "rediss+sentinel://s1/m?sentinel_password=hunter2&oops=1"):
        with pytest.raises(ConfigError) as info:
            Settings.from_env({**GOOD, "RELAY_REDIS_URL": url})
        assert "hunter2" not in info.value.detail and "RELAY_REDIS_URL" in info.value.detail


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    return subprocess.run([sys.executable, "-m", "relay", *args], env={**clean, **(env or {})},
                          capture_output=True, text=True, timeout=60)


def test_cli_serve_refuses_bad_config_in_one_line() -> None:
    result = _cli("serve", env={"RELAY_QR_TTL": "never", **GOOD})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["relay: RELAY_QR_TTL must be a number, got 'never'"]


def test_cli_serve_refuses_a_bad_cluster_url_in_one_line() -> None:
    result = _cli("serve", env={"RELAY_REDIS_URL": "redis+sentinel://:hunter2@s1:26379", **GOOD})
    assert result.returncode == 2 and "hunter2" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "relay: RELAY_REDIS_URL needs the master's service name as its path: "
        "redis+sentinel://host:26379,host:26379/<service-name>[/db]"]


def test_cli_redis_url_flag_is_checked_too() -> None:
    result = _cli("serve", "--redis-url", "redis+cluster://:hunter2@n1:7000/1", env=GOOD)
    assert result.returncode == 2 and "hunter2" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "relay: --redis-url points at a Redis Cluster, which has database 0 only: drop the path"]


def test_cli_token_prints_a_verifiable_token() -> None:
    result = _cli("token", "--instance", "shop-1", "--ttl", "120", env=GOOD)
    assert result.returncode == 0, result.stderr
    claims = jwt.decode(result.stdout.strip(), GOOD["RELAY_SECRET"], algorithms=["HS256"])
    assert claims["instances"] == ["shop-1"] and claims["exp"] - claims["iat"] == 120


def test_cli_token_needs_the_secret() -> None:
    result = _cli("token", "--instance", "x")
    assert result.returncode == 2 and "RELAY_SECRET" in result.stderr


@pytest.mark.parametrize("args, first_line", [
    (["--log-level", "loud"], "relay: --log-level must be one of critical|error|warning|info|debug, got 'loud'"),
    (["--port", "99999"], "relay: --port must be between 0 and 65535, got 99999"),
    (["--workers", "3"], "relay: RELAY_WORKERS/--workers > 1 needs RELAY_REDIS_URL: in-memory state lives in one process"),
])
def test_cli_bad_flags_are_one_line(args: list[str], first_line: str) -> None:
    result = _cli("serve", *args, env=GOOD)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [first_line]


def test_cli_a_port_in_use_is_one_line_that_says_what_to_do() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = _cli("serve", "--port", str(port), env=GOOD)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"relay: 127.0.0.1:{port} is already in use (another relay?): stop what uses it, or "
        "choose another port with --port or RELAY_PORT"]


@pytest.mark.parametrize("ttl", ["0", "-5"])
def test_cli_token_refuses_a_ttl_below_one_second(ttl: str) -> None:
    result = _cli("token", "--instance", "x", "--ttl", ttl, env=GOOD)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"relay: --ttl must be at least 1 second, got {ttl}"]


@pytest.mark.parametrize("origins, ok", [
    ("https://app.example.com,http://localhost:3000", True), ("*", True),
    ("app.example.com", False), ("https://app.example.com/login", False), ("ftp://x", False),
])
def test_allowed_origins_must_be_origins(origins: str, ok: bool) -> None:
    env = {**GOOD, "RELAY_ALLOWED_ORIGINS": origins}
    if ok:
        settings = Settings.from_env(env)
        assert bool(settings.warnings()) == (origins == "*") or settings.webhook_secret is None
        return
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert "RELAY_ALLOWED_ORIGINS" in info.value.detail and "https://" in info.value.detail


def test_webhook_secret_policy() -> None:
    with pytest.raises(ConfigError) as info:  # reachable by others, webhooks open: refused
        Settings.from_env({**GOOD, "RELAY_HOST": "0.0.0.0"})
    assert "RELAY_WEBHOOK_SECRET is required when listening on 0.0.0.0" in info.value.detail
    on_purpose = Settings.from_env({**GOOD, "RELAY_HOST": "0.0.0.0", "RELAY_WEBHOOK_SECRET": "none"})
    assert on_purpose.webhook_secret is None and on_purpose.webhooks_open
    assert "anyone who reaches this relay" in on_purpose.warnings()[0]
    local = Settings.from_env(GOOD)  # loopback: allowed for development, and said at start-up
    assert local.webhook_secret is None and "RELAY_WEBHOOK_SECRET is not set" in local.warnings()[0]
    secured = Settings.from_env({**GOOD, "RELAY_HOST": "0.0.0.0", "RELAY_WEBHOOK_SECRET": "w" * 16})
    assert secured.warnings() == []
    for env, words in [({"RELAY_WEBHOOK_SECRET": "short"}, "at least 16"),
                       ({"RELAY_WEBHOOK_SECRET": GOOD["RELAY_SECRET"]}, "must differ from RELAY_SECRET"),
                       ({"RELAY_ADMIN_KEY": "k"}, "RELAY_ADMIN_KEY must be at least 16")]:
        with pytest.raises(ConfigError) as info:
            Settings.from_env({**GOOD, **env})
        assert words in info.value.detail
