"""The code stays ruff- and mypy-clean: checked with the suite so CI enforces it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_ruff_lint_is_clean() -> None:
    result = _run("ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_clean() -> None:
    result = _run("ruff", "format", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_is_clean() -> None:
    result = _run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_lints_clean() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run(
        [str(hadolint), "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_file_names_the_contract_settings() -> None:
    import re

    import yaml

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) >= {"bot", "postgres", "chroma", "redis", "proxy", "kb-fill", "migrate"}

    bot = services["bot"]
    env = bot["environment"]
    assert env["DATABASE_URL"].startswith("postgresql+asyncpg://")
    assert env["ESOTERIC_CHROMA_URL"] == "http://chroma:8000"
    assert env["ESOTERIC_REDIS_URL"].startswith("redis://redis:")
    assert bot["command"] == ["serve"]
    assert "ports" not in bot, "the bots publish no port: the proxy is the entry"
    replicas = re.fullmatch(r"\$\{ESOTERIC_BOT_REPLICAS:-(\d+)\}", str(bot["deploy"]["replicas"]))
    assert replicas is not None and int(replicas.group(1)) >= 2
    assert {"postgres", "redis", "migrate", "kb-fill"} <= set(bot["depends_on"])
    assert bot["depends_on"]["kb-fill"]["condition"] == "service_completed_successfully"

    # The one-shot fills the Chroma server the bots use, with the same image and settings.
    kb_fill = services["kb-fill"]
    assert kb_fill["command"][:2] == ["kb", "ingest"] and "--bundled" in kb_fill["command"]
    assert kb_fill["environment"]["ESOTERIC_CHROMA_URL"] == env["ESOTERIC_CHROMA_URL"]
    assert kb_fill["restart"] == "no"
    assert services["migrate"]["command"] == ["migrate"]
    if "worker" in services:
        assert services["worker"]["environment"] == env

    proxy = services["proxy"]
    mounts = [str(volume).split(":") for volume in proxy["volumes"]]
    assert ["./deploy/nginx.conf", "/etc/nginx/nginx.conf", "ro"] in mounts
    assert proxy["ports"]

    nginx = (ROOT / "deploy" / "nginx.conf").read_text()
    websocket = re.search(r"location\s+/api/v1/ws/\s*\{(?P<body>[^}]*)\}", nginx)
    assert websocket is not None, "deploy/nginx.conf has no location for /api/v1/ws/"
    body = websocket.group("body")
    assert re.search(r"proxy_set_header\s+Upgrade\s+\$http_upgrade;", body)
    assert re.search(r"proxy_set_header\s+Connection\s+\S+;", body)
    assert re.search(r"proxy_read_timeout\s+\S+;", body)


def test_proxy_config_forwards_clients_to_every_bot() -> None:
    import re

    nginx = (ROOT / "deploy" / "nginx.conf").read_text()
    # Every replica, re-resolved through Docker's DNS as the service scales.
    assert "resolver 127.0.0.11" in nginx
    assert re.search(r"http://bot:8000", nginx)
    # A location's proxy_set_header replaces the server's list, so the WebSocket location must
    # repeat the forwarded headers.
    websocket = re.search(r"location\s+/api/v1/ws/\s*\{[^}]*\}", nginx)
    assert websocket is not None
    rest = nginx.replace(websocket.group(0), "")
    for header in ("X-Forwarded-For", "X-Real-IP", "X-Forwarded-Proto"):
        for part in (websocket.group(0), rest):
            assert re.search(rf"proxy_set_header\s+{header}\s", part), header
    limit = re.search(r"client_max_body_size\s+(\d+)([km]?);", nginx)
    assert limit is not None
    size = int(limit.group(1)) * {"": 1, "k": 1024, "m": 1024 * 1024}[limit.group(2)]
    assert size <= 1024 * 1024
