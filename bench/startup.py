"""Startup: seconds from starting ``esoteric serve`` to its first answered message.

    .venv/bin/python bench/startup.py [--runs 3] [--store DIR]

Each run starts a fresh process and polls ``POST /api/v1/sessions`` until it answers, then sends
one chat message; the clock starts just before the process is spawned. Three cases:

- an already-ingested store (the bundled documents in embedded Chroma, the real model): the
  first answer to "hi", and to a product question (answered from the knowledge base once it has
  opened, which turns arriving earlier wait for, briefly);
- a fresh data directory: the first answer while the bundled documents are still being
  ingested in the background (no retrieval yet), and when retrieval starts being used;
- the floor: a bare python process importing FastAPI and uvicorn and answering one request.

Target: under 1.5 s to the first answer on an already-ingested store. Figures are printed,
never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.serving import KEY, free_port, model_dir, serve_env  # noqa: E402

QUESTION = "what documents do I need for a home loan?"

FLOOR = """
import sys
from fastapi import FastAPI
import uvicorn
app = FastAPI()
@app.post("/api/v1/sessions")
async def sessions() -> dict:
    return {"session_id": "s"}
@app.post("/api/v1/chat")
async def chat(body: dict) -> dict:
    return {"reply": "hello"}
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def environment(data_dir: Path, port: int) -> dict[str, str]:
    # The wait for the knowledge base repeats a question four times a second: flood control
    # and the API key's limit would stop answering it (a benchmark sender is a machine).
    return serve_env(
        data_dir,
        port,
        ESOTERIC_API_KEYS=KEY,
        ESOTERIC_EMBEDDING_MODEL_DIR=str(model_dir()),
        ESOTERIC_FLOOD_MESSAGES_PER_MINUTE="10000",
        ESOTERIC_RATE_LIMIT_PER_MINUTE="1000000",
    )


async def first_answers(
    command: list[str], env: dict[str, str], port: int, messages: list[str], until_kb: bool
) -> list[tuple[float, str | None]]:
    """(seconds since spawn, reply) for each message, sent one after another as soon as the
    server answers; with ``until_kb`` the last message is repeated until the knowledge base
    answers it."""
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        *command, env=env, cwd=ROOT, stderr=asyncio.subprocess.DEVNULL
    )
    out: list[tuple[float, str | None]] = []
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": KEY}, timeout=120
        ) as client:
            async with asyncio.timeout(300):
                while True:
                    with contextlib.suppress(httpx.TransportError):
                        session = (await client.post("/api/v1/sessions")).json()["session_id"]
                        break
                    await asyncio.sleep(0.01)
                for n, text in enumerate(messages):
                    body = {"session_id": session, "message": text, "client_message_id": f"{n}"}
                    reply = (await client.post("/api/v1/chat", json=body)).json()["reply"]
                    out.append((time.perf_counter() - started, reply))
                n = len(messages)
                # A null reply (the API's answer when the turn gave none) is not yet one.
                while until_kb and not (out[-1][1] or "").startswith("From "):
                    await asyncio.sleep(0.25)
                    n += 1
                    body = {
                        "session_id": session,
                        "message": messages[-1],
                        "client_message_id": f"{n}",
                    }
                    reply = (await client.post("/api/v1/chat", json=body)).json()["reply"]
                    out.append((time.perf_counter() - started, reply))
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        await process.wait()
    return out


def serve_command() -> list[str]:
    return [sys.executable, "-m", "bot", "serve"]


async def ingested_store(store: Path) -> None:
    """Start serve once on ``store`` and wait until the knowledge base answers."""
    port = free_port()
    await first_answers(serve_command(), environment(store, port), port, [QUESTION], True)


def summary(values: list[float]) -> str:
    return f"median {statistics.median(values):.2f} s (range {min(values):.2f}-{max(values):.2f})"


async def main(runs: int, store: Path | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = store or Path(tmp) / "store"
        if not (store / "chroma").exists():
            await ingested_store(store)
        floor: list[float] = []
        hi: list[float] = []
        question: list[float] = []
        from_kb: list[bool] = []
        fresh_first: list[float] = []
        fresh_kb: list[float] = []
        for run in range(runs):
            port = free_port()
            got = await first_answers(
                [sys.executable, "-c", FLOOR, str(port)], dict(os.environ), port, ["hi"], False
            )
            floor.append(got[0][0])
            port = free_port()
            got = await first_answers(
                serve_command(), environment(store, port), port, ["hi"], False
            )
            hi.append(got[0][0])
            port = free_port()
            got = await first_answers(
                serve_command(), environment(store, port), port, [QUESTION], False
            )
            question.append(got[0][0])
            from_kb.append((got[0][1] or "").startswith("From "))
            port = free_port()
            fresh = Path(tmp) / f"fresh-{run}"
            got = await first_answers(
                serve_command(), environment(fresh, port), port, [QUESTION], True
            )
            fresh_first.append(got[0][0])
            fresh_kb.append(got[-1][0])
    print(f"cores: {os.cpu_count()}; load average {os.getloadavg()[0]:.1f}; {runs} runs each")
    print(f"floor (python, FastAPI, uvicorn, one request): {summary(floor)}")
    print(f"already-ingested store, first answer to 'hi': {summary(hi)} (target < 1.5 s)")
    print(
        f"already-ingested store, first answer to a product question: {summary(question)}; "
        f"from the knowledge base in {sum(from_kb)} of {runs}"
    )
    print(
        f"fresh store, first answer (bundled documents still ingesting): {summary(fresh_first)}; "
        f"first answer from the knowledge base: {summary(fresh_kb)}"
    )
    ratio = statistics.median(hi) / statistics.median(floor)
    print(f"ratio to the floor ('hi', medians): {ratio:.1f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--store", type=Path, default=None, help="an ingested data directory")
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.store))
