"""``esoteric serve`` as operators run it: SIGTERM lets the turn in flight finish and answer, and
the JSON logs carry request ids without secrets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from pathlib import Path

import httpx

from tests.support import groq_server as groq
from tests.support.groq_server import GroqStandIn

KEY = "serve-key-0123456789abcdef"
GROQ_KEY = "gsk_" + "s" * 40


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_sigterm_finishes_the_turn_in_flight(tmp_path: Path) -> None:
    standin = GroqStandIn()
    await standin.start()
    answer = "Happy to help: which loan are you looking for?"
    # Slow enough that the signal certainly arrives while the model is still answering.
    standin.script(groq.text(answer, delay=1.5))
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ESOTERIC_", "GROQ_", "TELEGRAM_", "SLACK_")) and k != "DATABASE_URL"
    }
    env.update(
        ESOTERIC_DATA_DIR=str(tmp_path / "data"),
        ESOTERIC_HTTP_PORT=str(port),
        ESOTERIC_API_KEYS=KEY,
        ESOTERIC_EMBEDDING_MODEL_DIR=str(tmp_path / "no-model"),
        GROQ_API_KEY=GROQ_KEY,
        GROQ_BASE_URL=standin.base_url,
        ESOTERIC_LOG_FORMAT="json",
    )
    log_path = tmp_path / "serve.log"
    base = f"http://127.0.0.1:{port}"
    try:
        with log_path.open("w") as log:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot", "serve", env=env, stdout=log, stderr=log
            )
        async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": KEY}) as client:
            async with asyncio.timeout(60):
                while True:
                    assert process.returncode is None, log_path.read_text()
                    with contextlib.suppress(httpx.TransportError):
                        if (await client.get("/health")).status_code == 200:
                            break
                    await asyncio.sleep(0.1)
            session = (await client.post("/api/v1/sessions")).json()["session_id"]
            in_flight = asyncio.create_task(
                client.post(
                    "/api/v1/chat",
                    json={"session_id": session, "message": "hello, I'd like a loan"},
                    headers={"X-Request-ID": "req-in-flight"},
                    timeout=30,
                )
            )
            async with asyncio.timeout(10):
                while not standin.requests:  # noqa: ASYNC110 - the stand-in records requests
                    await asyncio.sleep(0.01)
            process.send_signal(signal.SIGTERM)
            response = await in_flight
            async with asyncio.timeout(30):
                code = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await standin.stop()
    logs = log_path.read_text()
    assert code == 0, logs
    assert response.status_code == 200
    assert response.json()["reply"] == answer
    assert "Traceback" not in logs
    assert KEY not in logs and GROQ_KEY not in logs
    records = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    assert records, logs
    assert all({"ts", "level", "logger", "message", "request_id"} <= set(r) for r in records)
