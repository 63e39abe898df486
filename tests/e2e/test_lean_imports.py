"""The default deployment (embedded SQLite, no Redis, no Slack, no Groq key) does not load the
libraries it does not use: each would cost every process memory for good (bench/memory.py)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx

from core.store.schema import declared_head

ROOT = Path(__file__).resolve().parents[2]
KEY = "lean-imports-key-0123456789"

# The real CLI, with the names of every module loaded written out when it exits.
RUN_CLI = """
import atexit, json, sys
out = sys.argv.pop(1)
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
from bot.cli import run
run()
"""

NEVER_ON_THE_DEFAULT_PATH = (
    "redis",  # only with ESOTERIC_REDIS_URL
    "alembic",  # only in the child process that upgrades a schema that is behind
    "mako",
    "pygments",  # alembic's and httpx's command line
    "procrastinate",  # Postgres only
    "psycopg",
    "slack_bolt",  # Slack only
    "slack_sdk",
    "groq",  # only with GROQ_API_KEY
    "grpc",  # chromadb's OTLP exporter, only with Chroma's tracing on
    "rich",
)


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ESOTERIC_", "GROQ_", "TELEGRAM_", "SLACK_", "DATABASE_URL"))
    }
    env.update(
        ESOTERIC_DATA_DIR=str(data_dir),
        # No model: retrieval is off, but chromadb is still imported (the embedder's base).
        ESOTERIC_EMBEDDING_MODEL_DIR="/nonexistent/embedding-model",
        ESOTERIC_LOG_LEVEL="WARNING",
        PYTHONPATH=str(ROOT),
    )
    env.update(extra)
    return env


def _loaded(path: Path) -> set[str]:
    return {name.split(".")[0] for name in json.loads(path.read_text())}


def _unwanted(modules: set[str]) -> list[str]:
    return sorted(set(NEVER_ON_THE_DEFAULT_PATH) & modules)


def _python(script: str, tmp_path: Path) -> None:
    """Run ``script`` in a fresh interpreter (nothing imported yet) and require it to pass."""
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_on_the_defaults_loads_only_what_it_uses(tmp_path: Path) -> None:
    port = _free_port()
    out = tmp_path / "modules.json"
    # A new data directory: the schema is created on the way, by a child process.
    env = _env(tmp_path / "data", ESOTERIC_HTTP_PORT=str(port), ESOTERIC_API_KEYS=KEY)
    process = subprocess.Popen(
        [sys.executable, "-c", RUN_CLI, str(out), "serve"],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=base, headers={"X-API-Key": KEY}, timeout=30) as client:
            while True:
                assert process.poll() is None, process.communicate()[1]
                assert time.monotonic() < deadline, "serve did not start"
                try:
                    if client.get("/ready").status_code in (200, 503):
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            session = client.post("/api/v1/sessions").json()["session_id"]
            reply = client.post(
                "/api/v1/chat", json={"session_id": session, "message": "I need a home loan"}
            )
            assert reply.status_code == 200, reply.text
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    modules = _loaded(out)
    assert {"fastapi", "sqlalchemy", "chromadb", "limits"} <= modules
    assert _unwanted(modules) == []


def _revision(data_dir: Path) -> list[str]:
    with sqlite3.connect(data_dir / "esoteric.db") as conn:
        return [row[0] for row in conn.execute("SELECT version_num FROM alembic_version")]


def test_chat_upgrades_a_new_database_in_a_child_process_then_skips_it_at_head(
    tmp_path: Path,
) -> None:
    env = _env(tmp_path / "data")
    for n in (1, 2):
        out = tmp_path / f"modules-{n}.json"
        done = subprocess.run(
            [sys.executable, "-c", RUN_CLI, str(out), "chat"],
            cwd=ROOT,
            env=env,
            input="I need a home loan\n",
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert "borrow" in done.stdout  # answered (the second run, from the stored state)
        # The first run created the schema, but Alembic ran in its child, never in `chat`.
        assert _unwanted(_loaded(out)) == []
        assert _revision(tmp_path / "data") == [declared_head()]


def test_a_schema_the_upgrade_cannot_read_stops_the_start_with_a_clear_error(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with sqlite3.connect(data / "esoteric.db") as conn:
        conn.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
        conn.execute("INSERT INTO alembic_version VALUES ('0099_from_a_newer_release')")
    done = subprocess.run(
        [sys.executable, "-m", "bot", "chat"],
        cwd=ROOT,
        env=_env(data),
        input="hello\n",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0
    assert "the database schema could not be upgraded" in done.stderr
    assert "0099_from_a_newer_release" in done.stderr
    assert "Traceback" not in done.stderr
    assert _revision(data) == ["0099_from_a_newer_release"]  # nothing changed


def test_a_redis_url_still_loads_redis(tmp_path: Path) -> None:
    """The lazy imports are lazy, not gone: the shared rate limits build their Redis pool."""
    script = (
        "import sys; from core.ratelimit import RateLimits; "
        "assert 'redis' not in sys.modules; "
        "RateLimits('redis://127.0.0.1:6379/0'); "
        "assert 'redis' in sys.modules"
    )
    _python(script, tmp_path)


def test_telegrams_send_budget_loads_redis_only_with_a_redis_url(tmp_path: Path) -> None:
    script = (
        "import asyncio, sys; from core.sendbudget import send_budget_for; "
        "budget = send_budget_for(None, 30, 20); "
        "assert 'redis' not in sys.modules, 'one process needs no redis'; "
        "shared = send_budget_for('redis://127.0.0.1:6379/0', 30, 20, 'lean-imports-test'); "
        "assert 'redis' in sys.modules; "
        "asyncio.run(shared.aclose())"
    )
    _python(script, tmp_path)


def test_chromas_tracing_still_gets_the_real_exporter(tmp_path: Path) -> None:
    script = """
import sys
from bot.imports import leave_out_unused_imports
leave_out_unused_imports()
import chromadb, httpx
assert "grpc" not in sys.modules and "rich" not in sys.modules
from chromadb.telemetry.opentelemetry import OTLPSpanExporter
exporter = OTLPSpanExporter(endpoint="http://127.0.0.1:9")
assert type(exporter).__module__ == "opentelemetry.exporter.otlp.proto.grpc.trace_exporter"
assert "grpc" in sys.modules
exporter.shutdown()
"""
    _python(script, tmp_path)


def test_releasing_free_memory_is_safe_anywhere() -> None:
    from bot.kb import release_free_memory

    release_free_memory()  # glibc: malloc_trim; elsewhere nothing


def test_chromas_native_pages_are_dropped_and_read_back_on_use(tmp_path: Path) -> None:
    """What `esoteric serve` does once its memory copy of the vectors is made: Chroma's native
    library leaves the resident set, and the store still works (its pages are read back).

    The kernel leaves a page that another process maps too (the other test worker has
    chromadb loaded from the same file), so this process loads a copy of the library's
    package of its own, as a lone `esoteric serve` on a machine has it."""
    import chromadb_rust_bindings

    shutil.copytree(
        Path(chromadb_rust_bindings.__file__).parent,
        tmp_path / "own" / "chromadb_rust_bindings",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    script = f"""
import sys
sys.path.insert(0, {str(tmp_path / "own")!r})
import chromadb
from bot.kb import CHROMA_NATIVE, drop_library_pages

def resident():
    total, mapped = 0, ""
    for line in open("/proc/self/smaps"):
        fields = line.split()
        if fields[0].count("-") == 1 and not fields[0].endswith(":"):
            mapped = fields[5] if len(fields) > 5 else ""
        elif fields[0] == "Rss:" and mapped.endswith("chromadb_rust_bindings.abi3.so"):
            total += int(fields[1])
    return total

client = chromadb.PersistentClient(path={str(tmp_path / "chroma")!r})
chunks = client.create_collection("chunks")
chunks.add(ids=["a", "b"], embeddings=[[1.0, 0.0], [0.0, 1.0]], documents=["one", "two"])
assert sys.modules["chromadb_rust_bindings"].__file__.startswith({str(tmp_path)!r})
before = resident()
assert drop_library_pages(CHROMA_NATIVE) > 0
after = resident()
assert after < before / 4, (before, after)
found = chunks.query(query_embeddings=[[0.9, 0.1]], n_results=1)
assert found["ids"] == [["a"]], found
assert resident() > after
assert drop_library_pages("no_such_module") == 0
"""
    _python(script, tmp_path)
