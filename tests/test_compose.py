"""Static checks of the deployment files: docker-compose.yml, deploy/nginx.conf, Dockerfile.

Two views of the compose file are checked for the same structure:
- what `docker compose config` resolves (only where the compose plugin is installed), and
- the raw YAML, interpolated here with deploy/.env.example (always, if PyYAML is importable),
  so that the checks still run on machines with a docker client but no compose plugin.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / "deploy" / ".env.example"
NGINX = ROOT / "deploy" / "nginx.conf"
DOCKERFILE = ROOT / "Dockerfile"

RELAY_SERVICE = re.compile(r"^relay([-_]\d+)?$")


# --- helpers -----------------------------------------------------------------------------------


def _docker_compose_unavailable() -> str | None:
    """None when `docker compose` works, else the reason it does not."""
    if shutil.which("docker") is None:
        return "docker client not found on PATH"
    try:
        proc = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`docker compose version` failed: {exc}"
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        return f"`docker compose version` exited {proc.returncode}: {detail[0] if detail else ''}"
    return None


def _compose(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "--env-file", str(ENV_EXAMPLE), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def _read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip()
    return values


_VAR = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def _interpolate(text: str, env: dict[str, str]) -> str:
    """The subset of compose interpolation this repository uses: ${V}, ${V:-d}, ${V:?msg}, $$."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, op, arg = m.group("name"), m.group("op"), m.group("arg")
        value = env.get(name)
        if op in (":?", "?") and (value is None or (op == ":?" and value == "")):
            raise AssertionError(f"required variable {name} is not set: {arg}")
        if op in (":-", "-") and (value is None or (op == ":-" and value == "")):
            return arg or ""
        return value or ""

    return _VAR.sub(sub, text)


def _environment(service: dict[str, Any]) -> dict[str, str | None]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # ["KEY=value", "KEY"] form
        return {k: (v if sep else None) for k, sep, v in (e.partition("=") for e in env)}
    return {k: (None if v is None else str(v)) for k, v in env.items()}


def _relay_replicas(services: dict[str, Any]) -> dict[str, int]:
    """Relay service name -> number of containers it runs (deploy.replicas, scale, or 1)."""
    out = {}
    for name, svc in services.items():
        if RELAY_SERVICE.match(name):
            replicas = (svc.get("deploy") or {}).get("replicas")
            if replicas is None:
                replicas = svc.get("scale", 1)
            out[name] = int(replicas)
    return out


def _check_structure(services: dict[str, Any]) -> None:
    """The shape every view of the compose file must have."""
    for name in ("redis", "lb", "evolution"):
        assert name in services, f"service {name!r} missing; have {sorted(services)}"

    relays = _relay_replicas(services)
    assert relays, f"no relay service; have {sorted(services)}"
    assert sum(relays.values()) >= 2, f"need at least two relay replicas, have {relays}"

    for name in relays:
        env = _environment(services[name])
        redis_url = env.get("RELAY_REDIS_URL")
        assert redis_url, f"{name} has no RELAY_REDIS_URL"
        assert redis_url.startswith("redis://redis:"), redis_url
        assert env.get("RELAY_EVOLUTION_URL") == "http://evolution:8080"
        for var in ("RELAY_SECRET", "RELAY_WEBHOOK_SECRET", "RELAY_ADMIN_KEY", "RELAY_EVOLUTION_APIKEY"):
            assert env.get(var), f"{name} has no {var}"
        assert "redis" in (services[name].get("depends_on") or {}), f"{name} must wait for redis"

    assert set(relays) <= set(services["lb"].get("depends_on") or {}), "lb must wait for the relays"

    evo = _environment(services["evolution"])
    for var in ("WEBSOCKET_ENABLED", "WEBSOCKET_GLOBAL_EVENTS", "WEBHOOK_GLOBAL_ENABLED",
                "WEBHOOK_EVENTS_QRCODE_UPDATED", "WEBHOOK_EVENTS_CONNECTION_UPDATE"):
        assert str(evo.get(var)).lower() == "true", f"evolution {var}={evo.get(var)!r}"
    assert str(evo.get("WEBHOOK_GLOBAL_WEBHOOK_BY_EVENTS")).lower() == "false"
    assert evo.get("DATABASE_PROVIDER") == "postgresql"
    # The global webhook goes through the load balancer, with the webhook secret as a path
    # segment, and it must be the very secret the relays check.
    secret = _environment(services[next(iter(relays))])["RELAY_WEBHOOK_SECRET"]
    assert evo.get("WEBHOOK_GLOBAL_URL") == f"http://lb/webhooks/evolution/{secret}"
    # The relay authenticates to Evolution with Evolution's global key.
    assert evo.get("AUTHENTICATION_API_KEY") == _environment(services[next(iter(relays))])["RELAY_EVOLUTION_APIKEY"]

    for name, svc in services.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            if isinstance(cond, dict) and cond.get("condition") == "service_healthy":
                assert services[dep].get("healthcheck") or dep in relays, (
                    f"{name} waits for {dep} to be healthy, but {dep} has no healthcheck"
                )


# --- docker compose (when the plugin exists) ---------------------------------------------------


@pytest.fixture(scope="module")
def compose_available() -> None:
    reason = _docker_compose_unavailable()
    if reason is not None:
        pytest.skip(f"docker compose client not available: {reason}")


def test_docker_compose_config_is_valid(compose_available: None) -> None:
    proc = _compose("config", "-q")
    assert proc.returncode == 0, proc.stderr


def test_docker_compose_config_structure(compose_available: None) -> None:
    proc = _compose("config", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    _check_structure(json.loads(proc.stdout)["services"])


# --- the same structure from the raw file, without docker ----------------------------------------


@pytest.fixture(scope="module")
def raw_services() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml", reason="PyYAML not installed")
    text = _interpolate(COMPOSE.read_text(), _read_env_file(ENV_EXAMPLE))
    doc = yaml.safe_load(text)
    assert "version" not in doc, "the top-level `version` key is obsolete in Compose v2"
    return doc["services"]


def test_compose_yaml_structure(raw_services: dict[str, Any]) -> None:
    _check_structure(raw_services)


def test_compose_images_are_pinned(raw_services: dict[str, Any]) -> None:
    assert raw_services["redis"]["image"] == "redis:7-alpine"
    assert raw_services["lb"]["image"] == "nginx:1.27-alpine"
    assert raw_services["evolution"]["image"] == "evoapicloud/evolution-api:v2.3.7"
    for name, svc in raw_services.items():
        if RELAY_SERVICE.match(name):
            assert "build" in svc and "container_name" not in svc
            assert not svc.get("ports"), "relay replicas are reached through lb only"


def test_env_example_defines_every_required_variable() -> None:
    required = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*):?\?", COMPOSE.read_text()))
    assert required, "expected ${VAR:?...} required variables in docker-compose.yml"
    defined = {k for k, v in _read_env_file(ENV_EXAMPLE).items() if v}
    assert required <= defined, f"missing from deploy/.env.example: {sorted(required - defined)}"


# --- nginx -------------------------------------------------------------------------------------


def _location_block(conf: str, prefix: str) -> str:
    m = re.search(r"location\s+" + re.escape(prefix) + r"\s*\{", conf)
    assert m, f"no `location {prefix}` in {NGINX.name}"
    depth, i = 1, m.end()
    while depth:
        depth += {"{": 1, "}": -1}.get(conf[i], 0)
        i += 1
    return conf[m.end() : i - 1]


def _strip_comments(text: str) -> str:
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


def test_nginx_upgrades_socketio_websockets() -> None:
    conf = _strip_comments(NGINX.read_text())
    block = _location_block(conf, "/socket.io/")
    assert re.search(r"proxy_set_header\s+Upgrade\s+\$http_upgrade\s*;", block)
    assert re.search(r"proxy_set_header\s+Connection\s+\$connection_upgrade\s*;", block)
    assert re.search(r"map\s+\$http_upgrade\s+\$connection_upgrade\s*\{", conf)
    assert re.search(r"proxy_http_version\s+1\.1\s*;", conf)
    assert "proxy_pass" in block


def test_nginx_streams_sse_unbuffered() -> None:
    conf = _strip_comments(NGINX.read_text())
    m = re.search(r"location\s+~\s+(\S*events\S*)\s*\{", conf)
    assert m, "no regex location for /v1/instances/{instance}/events"
    assert re.search(m.group(1), "/v1/instances/my-instance/events")
    assert not re.search(m.group(1), "/v1/instances/my-instance")
    block = _location_block(conf, f"~ {m.group(1)}")
    assert re.search(r"proxy_buffering\s+off\s*;", block)


def test_nginx_balances_over_the_relay_service() -> None:
    conf = _strip_comments(NGINX.read_text())
    servers = re.findall(r"^\s*server\s+([A-Za-z0-9_.-]+):8000\b", conf, re.MULTILINE)
    assert servers, "no `server <relay>:8000` in an upstream block"
    yaml = pytest.importorskip("yaml", reason="PyYAML not installed")
    services = yaml.safe_load(_interpolate(COMPOSE.read_text(), _read_env_file(ENV_EXAMPLE)))["services"]
    relays = _relay_replicas(services)
    assert set(servers) == set(relays), f"nginx upstream {servers} vs compose relay services {sorted(relays)}"
    # Sticky sessions are not needed for websocket-only clients; make sure none crept in
    # uncommented (the comment in the file says when to add ip_hash).
    assert not re.search(r"^\s*ip_hash\s*;", conf, re.MULTILINE)


# --- Dockerfile --------------------------------------------------------------------------------


def test_dockerfile_contract() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM\s+\S*node\S*\s+AS\s+web", text, re.MULTILINE | re.IGNORECASE) or "NODE_IMAGE" in text
    assert "python:3.11-slim" in text
    assert "npm ci" in text and "package-lock.json" in text
    assert "pip install -r requirements/runtime.lock" in text  # pinned, hash-checked
    assert re.search(r"^EXPOSE\s+8000\s*$", text, re.MULTILINE)
    assert re.search(r"^HEALTHCHECK\b.*(\n.*)*?/healthz", text, re.MULTILINE)
    assert re.search(r"RELAY_WEB_DIR=/app/web", text)
    user = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert user and user[-1].split(":")[0] not in ("root", "0"), "the image must run as non-root"
    assert 'CMD ["relay", "serve", "--host", "0.0.0.0", "--port", "8000"]' in text


HA_OVERRIDE = ROOT / "deploy" / "compose.redis-ha.yml"


def test_redis_ha_override_only_points_the_relays_elsewhere() -> None:
    """deploy/compose.redis-ha.yml: the relays take RELAY_REDIS_URL from .env, nothing else."""
    yaml = pytest.importorskip("yaml", reason="PyYAML not installed")
    example = "redis+cluster://10.0.0.1:6379,10.0.0.2:6379"
    doc = yaml.safe_load(_interpolate(HA_OVERRIDE.read_text(), {"RELAY_REDIS_URL": example}))
    assert doc == {"services": {"relay": {"environment": {"RELAY_REDIS_URL": example}}}}
    with pytest.raises(AssertionError, match="RELAY_REDIS_URL"):
        _interpolate(HA_OVERRIDE.read_text(), {})  # required: no silent fallback


def test_documented_cluster_and_sentinel_urls_are_valid() -> None:
    from relay.config import Settings

    docs = [ENV_EXAMPLE, ROOT / "deploy" / "README.md", ROOT / "README.md"]
    urls = {m for path in docs
            for m in re.findall(r"RELAY_REDIS_URL=(rediss?\+\w+://[^\s`]+)", path.read_text())}
    assert any(u.startswith("redis+cluster://") for u in urls)
    assert any(u.startswith("redis+sentinel://") for u in urls)
    for url in urls:
        assert Settings.from_env({"RELAY_REDIS_URL": url}).redis_url == url
