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
  through ``POST /api/v1/chat``.

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
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KEY = "bench-key-0123456789abcdef"


def model_dir() -> Path:
    configured = os.environ.get("ESOTERIC_EMBEDDING_MODEL_DIR")
    default = ROOT.parent / "shared" / "models" / "all-MiniLM-L6-v2"
    return Path(configured) if configured else default


def questions(limit: int) -> list[str]:
    data = json.loads((ROOT / "bench/data/retrieval_eval.json").read_text("utf-8"))
    return [q["q"] for q in data["questions"]][:limit]


def memory_of(pid: int | str = "self") -> tuple[float, float]:
    """(current RSS, peak RSS) in MiB."""
    rss = peak = 0.0
    for row in Path(f"/proc/{pid}/status").read_text().splitlines():
        if row.startswith("VmRSS:"):
            rss = int(row.split()[1]) / 1024
        elif row.startswith("VmHWM:"):
            peak = int(row.split()[1]) / 1024
    return rss, peak


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def serve(data_dir: Path) -> AsyncIterator[tuple[str, int]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ESOTERIC_", "GROQ_"))}
    env.pop("DATABASE_URL", None)
    env.update(
        ESOTERIC_DATA_DIR=str(data_dir),
        ESOTERIC_HTTP_PORT=str(port),
        ESOTERIC_API_KEYS=KEY,
        ESOTERIC_RATE_LIMIT_PER_MINUTE="1000000",
        ESOTERIC_FLOOD_MESSAGES_PER_MINUTE="10000",
        ESOTERIC_EMBEDDING_MODEL_DIR=str(model_dir()),
        ESOTERIC_LOG_LEVEL="WARNING",
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "serve", env=env, cwd=ROOT
    )
    try:
        yield f"http://127.0.0.1:{port}", process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        await process.wait()


async def measure_serve(data_dir: Path, count: int) -> list[tuple[str, float, float]]:
    import httpx

    rows: list[tuple[str, float, float]] = []
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
        rows.append(("serve: ready, knowledge ok", *memory_of(pid)))
        session = (await c.post("/api/v1/sessions")).json()["session_id"]
        answered = 0
        for i, text in enumerate(questions(count)):
            reply = await c.post(
                "/api/v1/chat",
                json={"session_id": session, "message": text, "client_message_id": f"m{i}"},
            )
            answered += "From " in reply.json().get("reply", "")
        rows.append((f"serve: {count} questions ({answered} from the KB)", *memory_of(pid)))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=1000)
    parser.add_argument("--questions", type=int, default=40)
    parser.add_argument("--store", type=Path, default=None, help="keep the store here")
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
        python = run_child("python")
        onnx = run_child("onnx", "--questions", str(args.questions))
        chroma = run_child("chroma")
        knowledge = run_child("knowledge", str(store), "--questions", str(args.questions))
        serving = asyncio.run(measure_serve(store, args.questions))

    def show(title: str, rows: list[dict[str, float | str]]) -> None:
        print(title)
        for row in rows:
            print(f"  {row['stage']:<44} RSS {row['rss']:6.1f} MiB   peak {row['peak']:6.1f} MiB")

    print(f"cores: {os.cpu_count()}; model: {model_dir()}")
    show("floor: bare interpreter", python)
    show("floor: onnxruntime with default options, the same model", onnx)
    show("floor: chromadb imported", chroma)
    show("the knowledge base in one process, by stage", knowledge)
    print("esoteric serve (scripted agent, SQLite, embedded Chroma)")
    for name, rss, peak in serving:
        print(f"  {name:<44} RSS {rss:6.1f} MiB   peak {peak:6.1f} MiB")
    floor = float(onnx[-1]["peak"]) + float(chroma[-1]["peak"]) - float(python[-1]["peak"])
    serve_peak = max(peak for _, _, peak in serving)
    print(
        f"floor (onnxruntime running the model + chromadb imported, one interpreter): "
        f"{floor:.0f} MiB; serve peak {serve_peak:.0f} MiB = {serve_peak / floor:.2f}x the floor "
        f"(target: under 250 MiB)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
