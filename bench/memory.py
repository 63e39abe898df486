"""Memory: peak resident set size (RSS) of the parts that answer from the knowledge base.

    .venv/bin/python bench/memory.py [--chunks 1000] [--questions 40] [--store DIR]

Each figure comes from a process of its own (Linux ``VmHWM``, the peak RSS, and ``VmRSS``):

- floors: a bare interpreter; a bare process importing onnxruntime and running the same model
  file with onnxruntime's default session options (tokenizer, padding and pooling as ours); a
  bare process that only imports chromadb.
- the knowledge base by stage: our imports, the embedding model loaded, the embedded Chroma
  store with ``--chunks`` chunks opened, product questions searched, then a batch ingested (a
  fresh store's ingestion runs in the serving process).
- a real ``esoteric serve`` on that store (scripted agent, SQLite) answering product questions
  through ``POST /api/v1/chat``;
- the same with the Telegram channel configured, as ``bench/telegram.py`` runs it: long polling
  against the stand-in Bot API of ``tests/support/telegram_server.py`` (run here, in the parent),
  ``--tg-chats`` chats sending ``--tg-waves`` messages each of the realistic mix of
  ``bench/telegram_traffic.py`` (product questions, slot answers, greetings, commands), one wave
  at a time, all chats at once; with the scripted agent and with the LLM agent against the
  instant Groq stand-in of ``tests/support/groq_server.py``.

The store (the bundled documents plus synthetic chunks up to ``--chunks``) is built once in a
process of its own; ``--store DIR`` keeps it for the next run. Figures are printed, never
asserted. Target: the serving process's peak RSS under 250 MiB.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.serving import KEY, free_port, model_dir, serve_env  # noqa: E402


def questions(limit: int) -> list[str]:
    data = json.loads((ROOT / "bench/data/retrieval_eval.json").read_text("utf-8"))
    # The English questions only, so the figures compare with earlier runs of this bench.
    return [q["q"] for q in data["questions"] if q.get("lang", "en") == "en"][:limit]


def memory_of(pid: int | str = "self") -> tuple[float, float]:
    """(current RSS, peak RSS) in MiB."""
    rss = peak = 0.0
    for row in Path(f"/proc/{pid}/status").read_text().splitlines():
        if row.startswith("VmRSS:"):
            rss = int(row.split()[1]) / 1024
        elif row.startswith("VmHWM:"):
            peak = int(row.split()[1]) / 1024
    return rss, peak


Row = tuple[str, float, float, str]


def serve_row(name: str, pid: int) -> Row:
    """A serving process's figures: RSS, peak, and what the RSS is (anonymous memory: the heap,
    arenas, thread stacks; file: mapped libraries and model weights)."""
    fields: dict[str, int] = {}
    for row in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = row.partition(":")
        if key in ("RssAnon", "RssFile", "Threads"):
            fields[key] = int(value.split()[0])
    rss, peak = memory_of(pid)
    detail = (
        f"anon {fields['RssAnon'] / 1024:5.1f}, file {fields['RssFile'] / 1024:5.1f}, "
        f"{fields['Threads']} threads"
    )
    return name, rss, peak, detail


def stage(name: str) -> None:
    """One stage's figures, as a JSON line the parent reads."""
    rss, peak = memory_of()
    print(json.dumps({"stage": name, "rss": rss, "peak": peak}), flush=True)


# -- the child processes ---------------------------------------------------------------------


def child_python() -> None:
    stage("interpreter")


def child_onnx(count: int) -> None:
    """onnxruntime as its documentation uses it: default session options."""
    import numpy as np
    import onnxruntime as ort
    from tokenizers import Tokenizer

    stage("import onnxruntime, numpy, tokenizers")
    folder = model_dir() / "onnx"
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=256)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    stage("model loaded")
    for text in questions(count):
        encoded = tokenizer.encode_batch([text])
        ids = np.array([e.ids for e in encoded], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
        hidden = session.run(
            None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        )[0]
        (hidden * mask[..., None]).sum(axis=1)
    stage("questions embedded")


def child_chroma() -> None:
    import chromadb  # noqa: F401

    stage("import chromadb")


def child_knowledge(store: Path, count: int) -> None:
    """Our embedder and the embedded store, stage by stage."""
    from core.knowledge.base import IngestReport, KnowledgeBase, SourceDocument, connect_chroma
    from core.knowledge.embedding import load_embedder

    stage("imports")
    embedder = load_embedder(model_dir())
    stage("model loaded")

    async def run() -> None:
        client = await asyncio.to_thread(connect_chroma, store / "chroma")
        kb = KnowledgeBase(client, embedder)
        await kb.open()
        chunks = await kb.count()
        stage(f"store opened ({chunks} chunks)")
        for text in questions(count):
            await kb.search(text, 4)
        stage("questions searched")
        # A fresh store's ingestion, in the serving process: 32 chunks of about 235 tokens.
        from bench.retrieval import synthetic_chunks

        batch = tuple(synthetic_chunks(32, seed=99))
        scratch = KnowledgeBase(client, embedder, collection=f"memory-{os.getpid()}")
        await scratch.ingest_source(SourceDocument("memory", "extra.md", batch), IngestReport())
        stage("32 chunks ingested")
        await asyncio.to_thread(client.delete_collection, scratch.name)
        await kb.close()

    asyncio.run(run())


def child_prepare(store: Path, chunks: int) -> None:
    """The bundled documents (as `esoteric serve` would ingest them) plus synthetic chunks."""
    from bench.retrieval import synthetic_chunks
    from core.knowledge.base import IngestReport, KnowledgeBase, SourceDocument, connect_chroma
    from core.knowledge.embedding import load_embedder
    from core.knowledge.ingest import sync_bundled

    async def run() -> None:
        embedder = await asyncio.to_thread(load_embedder, model_dir())
        client = await asyncio.to_thread(connect_chroma, store / "chroma")
        kb = KnowledgeBase(client, embedder)
        await kb.open()
        await sync_bundled(kb)
        missing = chunks - await kb.count()
        by_source: dict[str, list] = {}
        for chunk in synthetic_chunks(max(0, missing)):
            by_source.setdefault(chunk.source, []).append(chunk)
        report = IngestReport()
        for source, items in by_source.items():
            await kb.ingest_source(SourceDocument("bench", source, tuple(items)), report)
        print(f"store ready: {await kb.count()} chunks", file=sys.stderr)
        await kb.close()

    asyncio.run(run())


# -- the parent ------------------------------------------------------------------------------


def run_child(*args: str) -> list[dict[str, float | str]]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    if out.returncode != 0:
        print(out.stderr, file=sys.stderr)
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


@contextlib.asynccontextmanager
async def serve(data_dir: Path) -> AsyncIterator[tuple[str, int]]:
    port = free_port()
    env = serve_env(
        data_dir,
        port,
        ESOTERIC_API_KEYS=KEY,
        ESOTERIC_RATE_LIMIT_PER_MINUTE="1000000",
        ESOTERIC_FLOOD_MESSAGES_PER_MINUTE="10000",
        ESOTERIC_EMBEDDING_MODEL_DIR=str(model_dir()),
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "serve", env=env, cwd=ROOT
    )
    try:
        yield f"http://127.0.0.1:{port}", process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        await process.wait()


def copy_store(store: Path, into: Path) -> Path:
    """A copy of the prepared store per serving run, so that each starts from the same one."""
    import shutil

    target = into / f"serve-{time.monotonic_ns()}"
    shutil.copytree(store, target)
    return target


async def measure_telegram(data_dir: Path, chats: int, waves: int, llm: bool) -> list[Row]:
    """``esoteric serve`` with the Telegram channel on (no web API), long polling the stand-in."""
    import aiohttp

    from bench.telegram_traffic import Traffic
    from tests.support.telegram_server import TOKEN, ApiCall, TelegramServer, message_update

    label = "LLM agent" if llm else "scripted agent"
    replies: dict[str, int] = {}

    def count(call: ApiCall) -> None:
        if call.method == "sendMessage" and call.status == 200 and call.chat_id is not None:
            replies[call.chat_id] = replies.get(call.chat_id, 0) + 1

    port = free_port()
    groq: asyncio.subprocess.Process | None = None
    rows: list[Row] = []
    async with TelegramServer() as server:
        server.on_call = count
        env = serve_env(
            data_dir,
            port,
            TELEGRAM_BOT_TOKEN=TOKEN,
            ESOTERIC_TELEGRAM_API_URL=server.base_url,
            ESOTERIC_TELEGRAM_MESSAGES_PER_SECOND="1000",
            ESOTERIC_FLOOD_MESSAGES_PER_MINUTE="10000",
            ESOTERIC_EMBEDDING_MODEL_DIR=str(model_dir()),
        )
        if llm:
            groq = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tests.support.groq_server", "0", "0",
                cwd=ROOT, stdout=asyncio.subprocess.PIPE, env=env,
            )  # fmt: skip
            assert groq.stdout is not None
            base_url = (await groq.stdout.readline()).decode().strip()
            env.update(GROQ_API_KEY="gsk_bench_memory_key", GROQ_BASE_URL=base_url)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "serve", env=env, cwd=ROOT
        )
        try:
            async with aiohttp.ClientSession() as http, asyncio.timeout(120):
                while True:
                    with contextlib.suppress(aiohttp.ClientError):
                        async with http.get(f"http://127.0.0.1:{port}/ready") as response:
                            checks = (await response.json()).get("checks", {})
                        if checks.get("knowledge", {}).get("ok"):
                            break
                    await asyncio.sleep(0.1)
            rows.append(serve_row(f"telegram, {label}: ready", process.pid))
            traffic = Traffic(seed=7)
            first_chat = 5_000_000
            for wave in traffic.waves(chats, waves):
                before = {
                    str(first_chat + i): replies.get(str(first_chat + i), 0) for i in range(chats)
                }
                for i, text in enumerate(wave):
                    await server.push(message_update(server.next_update_id(), first_chat + i, text))
                await server.wait_for(
                    lambda _, before=before: all(replies.get(c, 0) > n for c, n in before.items()),
                    within=120,
                )
            rows.append(serve_row(f"telegram, {label}: {chats} chats x {waves}", process.pid))
        finally:
            process.send_signal(signal.SIGTERM)
            await process.wait()
            if groq is not None:
                groq.terminate()
                await groq.wait()
    return rows


async def measure_serve(data_dir: Path, count: int) -> list[Row]:
    import httpx

    rows: list[Row] = []
    async with (
        serve(data_dir) as (base, pid),
        httpx.AsyncClient(base_url=base, headers={"X-API-Key": KEY}, timeout=60) as c,
    ):
        async with asyncio.timeout(120):
            while True:
                with contextlib.suppress(httpx.TransportError):
                    ready = (await c.get("/ready")).json()
                    if ready["checks"].get("knowledge", {}).get("ok"):
                        break
                await asyncio.sleep(0.1)
        rows.append(serve_row("web API: ready, knowledge ok", pid))
        session = (await c.post("/api/v1/sessions")).json()["session_id"]
        answered = 0
        for i, text in enumerate(questions(count)):
            reply = await c.post(
                "/api/v1/chat",
                json={"session_id": session, "message": text, "client_message_id": f"m{i}"},
            )
            answered += "From " in reply.json().get("reply", "")
        rows.append(serve_row(f"web API: {count} questions ({answered} from the KB)", pid))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=1000)
    parser.add_argument("--questions", type=int, default=40)
    parser.add_argument("--store", type=Path, default=None, help="keep the store here")
    parser.add_argument("--tg-chats", type=int, default=100)
    parser.add_argument("--tg-waves", type=int, default=6)
    parser.add_argument(
        "--serve-only", action="store_true", help="only the serving processes (no floors)"
    )
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        kind, *rest = args.child
        if kind == "python":
            child_python()
        elif kind == "onnx":
            child_onnx(args.questions)
        elif kind == "chroma":
            child_chroma()
        elif kind == "knowledge":
            child_knowledge(Path(rest[0]), args.questions)
        elif kind == "prepare":
            child_prepare(Path(rest[0]), args.chunks)
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        store = args.store or Path(tmp) / "store"
        if not (store / "chroma").exists():
            started = time.perf_counter()
            subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--chunks",
                    str(args.chunks),
                    "--child",
                    "prepare",
                    str(store),
                ],
                check=True,
                cwd=ROOT,
            )
            print(f"(store built in {time.perf_counter() - started:.0f}s)")
        python = onnx = chroma = knowledge = []
        if not args.serve_only:
            python = run_child("python")
            onnx = run_child("onnx", "--questions", str(args.questions))
            chroma = run_child("chroma")
            knowledge = run_child("knowledge", str(store), "--questions", str(args.questions))
        scratch = Path(tmp)
        serving = asyncio.run(measure_serve(copy_store(store, scratch), args.questions))
        for llm in (False, True):
            telegram = asyncio.run(
                measure_telegram(copy_store(store, scratch), args.tg_chats, args.tg_waves, llm)
            )
            serving += telegram

    def show(title: str, rows: list[dict[str, float | str]]) -> None:
        print(title)
        for row in rows:
            print(f"  {row['stage']:<44} RSS {row['rss']:6.1f} MiB   peak {row['peak']:6.1f} MiB")

    print(f"cores: {os.cpu_count()}; model: {model_dir()}")
    if not args.serve_only:
        show("floor: bare interpreter", python)
        show("floor: onnxruntime with default options, the same model", onnx)
        show("floor: chromadb imported", chroma)
        show("the knowledge base in one process, by stage", knowledge)
    print(f"esoteric serve (SQLite, embedded Chroma with {args.chunks} chunks, the model loaded)")
    for name, rss, peak, detail in serving:
        print(f"  {name:<44} RSS {rss:6.1f} MiB   peak {peak:6.1f} MiB   ({detail})")
    serve_peak = max(row[2] for row in serving)
    if args.serve_only:
        print(f"serve peak {serve_peak:.0f} MiB (target: under 250 MiB)")
        return 0
    floor = float(onnx[-1]["peak"]) + float(chroma[-1]["peak"]) - float(python[-1]["peak"])
    print(
        f"floor (onnxruntime running the model + chromadb imported, one interpreter): "
        f"{floor:.0f} MiB; serve peak {serve_peak:.0f} MiB = {serve_peak / floor:.2f}x the floor "
        f"(target: under 250 MiB)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
