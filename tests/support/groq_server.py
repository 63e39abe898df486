"""A stand-in Groq API for tests: aiohttp on 127.0.0.1 (port 0) serving
``POST /openai/v1/chat/completions`` as Groq does (JSON, or SSE when ``stream`` is true), scripted
per test and recording every request it was sent.

Script a test with ``server.script(step, step, ...)``; each request takes the next step, and when
the script runs out ``server.default`` answers (a 500 unless set). Steps: ``text``, ``tool_calls``,
``error``, ``midstream_error``, ``truncated``, each with an optional ``delay`` before the response
starts and ``token_delay`` between stream frames.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

PAYLOADS = Path(__file__).resolve().parents[2].parent / "shared" / "payloads" / "groq"
PATH = "/openai/v1/chat/completions"
AUDIO_PATH = "/openai/v1/audio/transcriptions"
# The start of each media type the transcription API takes: the stand-in refuses anything else
# with Groq's own 400, as the API does for a file that is not valid media.
MAGIC = {
    "ogg": (b"OggS",),
    "opus": (b"OggS",),
    "webm": (b"\x1a\x45\xdf\xa3",),
    "wav": (b"RIFF",),
    "flac": (b"fLaC",),
    "mp3": (b"ID3", b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"),
}
INVALID_MEDIA = {
    "error": {
        "message": "could not process file - is it a valid media file?",
        "type": "invalid_request_error",
    }
}


def payload(name: str) -> Any:
    return json.loads((PAYLOADS / name).read_text("utf-8"))


@dataclass(frozen=True)
class Step:
    kind: str  # text, tool_calls, error, midstream_error, truncated
    content: str = ""
    calls: tuple[tuple[str, str], ...] = ()
    status: int = 200
    body: Any = None
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0
    token_delay: float = 0.0
    chunk_words: int = 1
    prompt_tokens: int = 120
    completion_tokens: int = 30


def text(content: str, **kw: Any) -> Step:
    return Step("text", content=content, **kw)


def tool_calls(*calls: tuple[str, dict[str, Any] | str], **kw: Any) -> Step:
    encoded = tuple(
        (name, args if isinstance(args, str) else json.dumps(args)) for name, args in calls
    )
    return Step("tool_calls", calls=encoded, **kw)


def error(status: int, body: Any, headers: dict[str, str] | None = None, **kw: Any) -> Step:
    return Step("error", status=status, body=body, headers=tuple((headers or {}).items()), **kw)


def server_error(**kw: Any) -> Step:
    return error(
        500, {"error": {"message": "Internal Server Error", "type": "internal_error"}}, **kw
    )


def rate_limited(retry_after: str, **kw: Any) -> Step:
    headers = dict(payload("err_429.headers.json"))
    headers["retry-after"] = retry_after
    headers.pop("content-type", None)
    return error(429, payload("err_429.json"), headers, **kw)


def tool_use_failed(**kw: Any) -> Step:
    return error(400, payload("err_400_tool_use_failed.json"), **kw)


def unauthorized(**kw: Any) -> Step:
    return error(401, payload("err_401.json"), **kw)


def midstream_error(content: str, **kw: Any) -> Step:
    """Streams ``content`` then an ``{"error": ...}`` frame, as Groq does when a stream fails."""
    return Step("midstream_error", content=content, **kw)


def truncated(content: str, **kw: Any) -> Step:
    """Streams ``content`` then drops the connection without finishing the body."""
    return Step("truncated", content=content, **kw)


@dataclass
class Recorded:
    headers: dict[str, str]
    body: dict[str, Any]
    at: float

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body.get("messages", []))

    @property
    def tool_results(self) -> list[dict[str, Any]]:
        return [json.loads(m["content"]) for m in self.messages if m.get("role") == "tool"]


@dataclass(frozen=True)
class Heard:
    """A transcription step: what Whisper heard, or an error to answer with."""

    text: str = ""
    language: str = "english"
    duration: float = 4.0
    avg_logprob: float = -0.2
    no_speech_prob: float = 0.01
    status: int = 200
    body: Any = None
    delay: float = 0.0


def heard(text: str, **kw: Any) -> Heard:
    return Heard(text=text, **kw)


def audio_error(status: int, body: Any = None, **kw: Any) -> Heard:
    default = {"error": {"message": "Internal Server Error", "type": "internal_error"}}
    return Heard(status=status, body=body or default, **kw)


@dataclass
class AudioRecorded:
    """One transcription request as the API received it (multipart form)."""

    headers: dict[str, str]
    fields: dict[str, str]
    filename: str
    content_type: str | None
    data: bytes


def _valid_media(filename: str, data: bytes) -> bool:
    ext = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    if ext in ("m4a", "mp4", "mpeg", "mpga"):
        return data[4:8] == b"ftyp"
    starts = MAGIC.get(ext)
    return starts is not None and data.startswith(starts)


@dataclass
class GroqStandIn:
    steps: deque[Step] = field(default_factory=deque)
    default: Step = field(default_factory=server_error)
    requests: list[Recorded] = field(default_factory=list)
    # perf_counter() when each first content frame left the server (for the benchmark).
    first_token_sent: list[float] = field(default_factory=list)
    # perf_counter() when each complete response (JSON body or [DONE]) had been written.
    finished: list[float] = field(default_factory=list)
    on_request: Callable[[Recorded], Step | None] | None = None
    _runner: web.AppRunner | None = None
    base_url: str = ""

    # Transcriptions: scripted like chat steps, each request recorded with its bytes.
    heard: deque[Heard] = field(default_factory=deque)
    audio_requests: list[AudioRecorded] = field(default_factory=list)

    def script(self, *steps: Step) -> None:
        self.steps.extend(steps)

    def hear(self, *steps: Heard) -> None:
        self.heard.extend(steps)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post(PATH, self._handle)
        app.router.add_post(AUDIO_PATH, self._transcribe)
        # Not Groq's: lets a benchmark running the stand-in in another process read its clock.
        app.router.add_get("/_standin/timings", self._timings)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # -- serving -----------------------------------------------------------------------------

    async def _timings(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "requests": [r.at for r in self.requests],
                "finished": self.finished,
                "first_token_sent": self.first_token_sent,
            }
        )

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return web.json_response({"error": {"message": "bad json"}}, status=400)
        recorded = Recorded(dict(request.headers), body, time.perf_counter())
        self.requests.append(recorded)
        if request.headers.get("Authorization", "") == "Bearer ":
            return web.json_response(payload("err_401.json"), status=401)
        step = self.on_request(recorded) if self.on_request else None
        if step is None:
            step = self.steps.popleft() if self.steps else self.default
        if step.delay:
            await asyncio.sleep(step.delay)
        if step.kind == "error":
            return web.json_response(step.body, status=step.status, headers=dict(step.headers))
        model = str(body.get("model", "llama-3.3-70b-versatile"))
        if body.get("stream"):
            return await self._stream(request, step, model)
        reply = web.json_response(self._completion(step, model))
        self.finished.append(time.perf_counter())
        return reply

    async def _transcribe(self, request: web.Request) -> web.Response:
        form = await request.post()
        upload = form.get("file")
        if not isinstance(upload, web.FileField):
            return web.json_response({"error": {"message": "file is required"}}, status=400)
        data = upload.file.read()
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        self.audio_requests.append(
            AudioRecorded(dict(request.headers), fields, upload.filename, upload.content_type, data)
        )
        if request.headers.get("Authorization", "") == "Bearer ":
            return web.json_response(payload("err_401.json"), status=401)
        step = self.heard.popleft() if self.heard else audio_error(500)
        if step.delay:
            await asyncio.sleep(step.delay)
        if step.status != 200:
            return web.json_response(step.body, status=step.status)
        if not _valid_media(upload.filename, data):
            return web.json_response(INVALID_MEDIA, status=400)
        words = step.text.split()
        return web.json_response(
            {
                "task": "transcribe",
                "language": step.language,
                "duration": step.duration,
                "text": f" {step.text}",
                "segments": [
                    {
                        "id": 0,
                        "seek": 0,
                        "start": 0.0,
                        "end": step.duration,
                        "text": f" {step.text}",
                        "tokens": list(range(len(words))),
                        "temperature": 0.0,
                        "avg_logprob": step.avg_logprob,
                        "compression_ratio": 1.1,
                        "no_speech_prob": step.no_speech_prob,
                    }
                ],
                "x_groq": {"id": f"req_{uuid.uuid4().hex[:24]}"},
            }
        )

    def _usage(self, step: Step) -> dict[str, Any]:
        return {
            "queue_time": 0.01,
            "prompt_tokens": step.prompt_tokens,
            "prompt_time": 0.001,
            "completion_tokens": step.completion_tokens,
            "completion_time": 0.01,
            "total_tokens": step.prompt_tokens + step.completion_tokens,
            "total_time": 0.011,
        }

    def _calls(self, step: Step) -> list[dict[str, Any]]:
        return [
            {
                "id": f"call_{uuid.uuid4().hex[:16]}",
                "type": "function",
                "function": {"name": name, "arguments": args},
            }
            for name, args in step.calls
        ]

    def _completion(self, step: Step, model: str) -> dict[str, Any]:
        template = payload(
            "chat_response.json" if step.kind != "tool_calls" else "tool_response.json"
        )
        message: dict[str, Any] = {"role": "assistant"}
        if step.kind == "tool_calls":
            message["tool_calls"] = self._calls(step)
            finish = "tool_calls"
        else:
            message["content"] = step.content
            finish = "stop"
        template.update(
            id=f"chatcmpl-{uuid.uuid4()}",
            model=model,
            choices=[{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
            usage=self._usage(step),
        )
        return template

    def _chunk(
        self,
        cid: str,
        model: str,
        delta: dict[str, Any],
        finish: str | None = None,
        usage: dict[str, Any] | None = None,
    ) -> bytes:
        chunk: dict[str, Any] = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_standin",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if usage is not None:
            chunk["x_groq"] = {"id": "req_standin", "usage": usage}
        return b"data: " + json.dumps(chunk).encode() + b"\n\n"

    def _pieces(self, content: str, words: int) -> list[str]:
        tokens = content.split(" ")
        pieces = []
        for i in range(0, len(tokens), words):
            piece = " ".join(tokens[i : i + words])
            pieces.append(piece if i == 0 else " " + piece)
        return [p for p in pieces if p]

    async def _stream(self, request: web.Request, step: Step, model: str) -> web.StreamResponse:
        response = web.StreamResponse(
            status=200, headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        cid = f"chatcmpl-{uuid.uuid4()}"
        await response.write(self._chunk(cid, model, {"role": "assistant", "content": ""}))
        if step.kind == "tool_calls":
            for index, call in enumerate(self._calls(step)):
                delta = {"tool_calls": [{"index": index, **call}]}
                await response.write(self._chunk(cid, model, delta))
            await response.write(self._chunk(cid, model, {}, "tool_calls", usage=self._usage(step)))
            await response.write(b"data: [DONE]\n\n")
            self.finished.append(time.perf_counter())
            return response
        first = True
        for piece in self._pieces(step.content, step.chunk_words):
            if step.token_delay:
                await asyncio.sleep(step.token_delay)
            if first:
                self.first_token_sent.append(time.perf_counter())
                first = False
            await response.write(self._chunk(cid, model, {"content": piece}))
        if step.kind == "midstream_error":
            frame = {"error": {"message": "Service Unavailable", "type": "internal_server_error"}}
            await response.write(b"data: " + json.dumps(frame).encode() + b"\n\n")
            return response
        if step.kind == "truncated":
            # Drop the connection mid-body: the client sees an incomplete chunked response.
            transport = request.transport
            if transport is not None:
                transport.abort()
            return response
        await response.write(self._chunk(cid, model, {}, "stop", usage=self._usage(step)))
        await response.write(b"data: [DONE]\n\n")
        self.finished.append(time.perf_counter())
        return response


def bench_model(ttft: float, token_delay: float) -> Callable[[Recorded], Step]:
    """A model for benchmarks: the EMI tool when asked about EMIs, then an answer."""

    def answer(request: Recorded) -> Step:
        last = request.messages[-1]
        if last["role"] == "user" and "EMI" in last["content"]:
            args = {"product": "home", "amount": 2500000, "tenure_months": 240}
            return tool_calls(("calculate_emi", args), delay=ttft)
        if last["role"] == "tool":
            emi = json.loads(last["content"]).get("emi", "")
            return text(f"The EMI is {emi} a month.", delay=ttft, token_delay=token_delay)
        return text(
            "For a home loan you need PAN, Aadhaar, the last three months' salary slips and six "
            "months of bank statements [R1]. Property papers come before disbursal. Would you "
            "like an EMI estimate as well?",
            delay=ttft,
            token_delay=token_delay,
        )

    return answer


async def _serve(ttft: float, token_delay: float) -> None:
    server = GroqStandIn(on_request=bench_model(ttft, token_delay))
    print(await server.start(), flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()


if __name__ == "__main__":
    import sys

    asyncio.run(_serve(float(sys.argv[1]), float(sys.argv[2])))
