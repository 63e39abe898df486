"""Several real ``esoteric serve`` processes on one Postgres and Redis, for the multi-process
tests: started, SIGKILLed and restarted as an operator (or a crash) would, and driven over HTTP
the way Telegram, Slack and a website drive them behind a load balancer."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import sys
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.adapters.slack.conftest import SECRET as SLACK_SECRET
from tests.adapters.slack.conftest import sign
from tests.support.groq_server import Recorded, Step, text
from tests.support.slack_server import sample
from tests.support.telegram_server import TOKEN, message_update

API_KEY = "cluster-key-0123456789abcdef"
WEBHOOK_SECRET = "cluster-webhook-secret"
SLACK_TOKEN = "xoxb-0000-test-token"
SALES = "C0SALES0001"
GROQ_KEY = "gsk_" + "c" * 40
TOKEN_PATTERN = re.compile(r"m\d+-\d+")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def echo_model(delay: Callable[[], float] = lambda: 0.0) -> Callable[[Recorded], Step]:
    """A model that answers every message with its token ("ok m3-17"), so each reply names
    the message it answers, and sends it in one frame (a streamed reply is whole at once)."""

    def answer(request: Recorded) -> Step:
        last = next(m for m in reversed(request.messages) if m["role"] == "user")
        tokens = TOKEN_PATTERN.findall(str(last["content"]))
        return text("ok " + " ".join(tokens or ["?"]), delay=delay(), chunk_words=200)

    return answer


def tokens_in(texts: Sequence[str]) -> list[str]:
    return [t for s in texts for t in TOKEN_PATTERN.findall(s)]


@dataclass
class Node:
    index: int
    port: int
    data_dir: Path
    log_path: Path
    process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Cluster:
    """``size`` serve processes sharing ``env``; each gets its own port and data directory."""

    tmp: Path
    env: dict[str, str]
    size: int = 3
    nodes: list[Node] = field(default_factory=list)

    def __post_init__(self) -> None:
        for i in range(self.size):
            self.nodes.append(
                Node(i, free_port(), self.tmp / f"node{i}", self.tmp / f"node{i}.log")
            )

    async def start(self, index: int, within: float = 60.0) -> None:
        node = self.nodes[index]
        node.data_dir.mkdir(parents=True, exist_ok=True)
        env = {
            **self.env,
            "ESOTERIC_HTTP_PORT": str(node.port),
            "ESOTERIC_DATA_DIR": str(node.data_dir),
        }
        with node.log_path.open("a") as log:
            node.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot", "serve", env=env, stdout=log, stderr=log
            )
        async with httpx.AsyncClient(base_url=node.url) as client:
            async with asyncio.timeout(within):
                while True:
                    if node.process.returncode is not None:
                        raise AssertionError(f"node {index} exited:\n{self.log(index)}")
                    with contextlib.suppress(httpx.TransportError):
                        if (await client.get("/ready")).status_code == 200:
                            return
                    await asyncio.sleep(0.1)

    async def start_all(self) -> None:
        await asyncio.gather(*(self.start(i) for i in range(self.size)))

    def kill(self, index: int) -> None:
        process = self.nodes[index].process
        assert process is not None and process.returncode is None
        process.send_signal(signal.SIGKILL)

    async def wait_dead(self, index: int) -> None:
        process = self.nodes[index].process
        assert process is not None
        await process.wait()

    async def stop_all(self) -> None:
        for node in self.nodes:
            if node.process is not None and node.process.returncode is None:
                node.process.send_signal(signal.SIGTERM)
        for node in self.nodes:
            if node.process is None:
                continue
            try:
                async with asyncio.timeout(40):
                    await node.process.wait()
            except TimeoutError:
                node.process.kill()
                await node.process.wait()

    def alive(self, index: int) -> bool:
        process = self.nodes[index].process
        return process is not None and process.returncode is None

    def log(self, index: int) -> str:
        path = self.nodes[index].log_path
        return path.read_text() if path.exists() else ""

    def logs(self) -> str:
        return "\n".join(self.log(i) for i in range(self.size))


def inherited_env() -> dict[str, str]:
    """This process's environment without any Esoteric or platform setting: a started process
    is configured by what the test adds, never by what the machine happens to have set."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ESOTERIC_", "GROQ_", "TELEGRAM_", "SLACK_")) and k != "DATABASE_URL"
    }


def cluster_env(
    *,
    database_url: str,
    redis_url: str,
    telegram_api: str,
    slack_api: str,
    groq_url: str | None,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """The processes' environment; without ``groq_url`` the scripted agent answers."""
    env = inherited_env()
    env.update(
        DATABASE_URL=database_url,
        ESOTERIC_REDIS_URL=redis_url,
        ESOTERIC_API_KEYS=API_KEY,
        ESOTERIC_EMBEDDING_MODEL_DIR="/nonexistent/embedding-model",
        TELEGRAM_BOT_TOKEN=TOKEN,
        ESOTERIC_TELEGRAM_API_URL=telegram_api,
        ESOTERIC_TELEGRAM_WEBHOOK_URL="https://bot.example.test/telegram/webhook",
        ESOTERIC_TELEGRAM_WEBHOOK_SECRET=WEBHOOK_SECRET,
        SLACK_BOT_TOKEN=SLACK_TOKEN,
        SLACK_SIGNING_SECRET=SLACK_SECRET,
        ESOTERIC_SLACK_API_URL=slack_api,
        ESOTERIC_SLACK_SALES_CHANNEL=SALES,
        ESOTERIC_LLM_MAX_RETRIES="0",
        ESOTERIC_LLM_BREAKER_FAILURES="100",
        ESOTERIC_HANDOFF_CHECK_SECONDS="5",
        ESOTERIC_LOG_FORMAT="json",
        ESOTERIC_RATE_LIMIT_PER_MINUTE="100000",
        # Scripted customers send far faster than people type: no flood control, and each
        # message its own turn, so every transcript is one reply per message (merging and
        # flood control have tests of their own).
        ESOTERIC_FLOOD_MESSAGES_PER_MINUTE="10000",
        ESOTERIC_MERGE_MESSAGES="1",
    )
    if groq_url is not None:
        env.update(GROQ_API_KEY=GROQ_KEY, GROQ_BASE_URL=groq_url)
    env.update(extra or {})
    return env


class Sender:
    """Delivers messages the way each platform does behind a load balancer: to one process,
    and again to the next when that one does not answer (dead, or a 5xx), until one takes it.
    Remembers which deliveries were acknowledged."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(60.0, connect=2.0),
            # A fresh connection per delivery: a kept-alive one that the server closes just as
            # it is reused would look like a refused delivery.
            limits=httpx.Limits(max_connections=1000, max_keepalive_connections=0),
        )
        self.acked: list[tuple[str, str]] = []  # (channel, event id) answered 2xx
        # 5xx answers (the delivery then goes to another process), by process.
        self.server_errors: list[tuple[int, str, int, str]] = []
        self.refused = 0
        self.transport_errors: list[str] = []

    async def aclose(self) -> None:
        await self.client.aclose()

    async def _deliver(
        self, first: int, path: str, build: Callable[[], tuple[bytes, dict[str, str]]]
    ) -> httpx.Response:
        size = self.cluster.size
        for attempt in range(size * 20):
            node = self.cluster.nodes[(first + attempt) % size]
            body, headers = build()
            try:
                response = await self.client.post(node.url + path, content=body, headers=headers)
            except httpx.TransportError as exc:
                self.refused += 1
                self.transport_errors.append(f"{node.index}: {exc!r}")
                await asyncio.sleep(0.05)
                continue
            if response.status_code >= 500:
                self.server_errors.append(
                    (node.index, path, response.status_code, response.text[:200])
                )
                await asyncio.sleep(0.05)
                continue
            return response
        raise AssertionError(f"no process took {path}")

    async def telegram(
        self, node: int, update_id: int, chat_id: int, words: str | None, **fields: Any
    ) -> None:
        """A message update (``fields``: a voice note, a photo...), as Telegram's webhook."""
        update = message_update(update_id, chat_id, words, **fields)

        def build() -> tuple[bytes, dict[str, str]]:
            headers = {
                "Content-Type": "application/json",
                "X-Telegram-Bot-Api-Secret-Token": WEBHOOK_SECRET,
            }
            return json.dumps(update).encode(), headers

        response = await self._deliver(node, "/telegram/webhook", build)
        assert response.status_code == 200, response.text
        self.acked.append(("telegram", str(update_id)))

    async def slack(self, node: int, channel: str, user: str, words: str) -> str:
        event_id = f"Ev{uuid.uuid4().hex[:16].upper()}"
        body = sample("event_message_im.json")
        body["event_id"] = event_id
        body["event"].update(
            channel=channel,
            user=user,
            text=words,
            client_msg_id=str(uuid.uuid4()),
            ts=f"1767225600.{uuid.uuid4().int % 10**6:06d}",
            blocks=[],
        )
        raw = json.dumps(body).encode()
        retries = 0

        def build() -> tuple[bytes, dict[str, str]]:
            nonlocal retries
            headers = {"Content-Type": "application/json", **sign(raw)}
            if retries:
                headers["X-Slack-Retry-Num"] = str(retries)
                headers["X-Slack-Retry-Reason"] = "http_error"
            retries += 1
            return raw, headers

        response = await self._deliver(node, "/slack/events", build)
        assert response.status_code == 200, response.text
        self.acked.append(("slack", event_id))
        return event_id

    async def api(self, node: int, session: str, words: str, client_id: str) -> dict[str, Any]:
        payload = {"session_id": session, "message": words, "client_message_id": client_id}

        def build() -> tuple[bytes, dict[str, str]]:
            headers = {"Content-Type": "application/json", "X-API-Key": API_KEY}
            return json.dumps(payload).encode(), headers

        response = await self._deliver(node, "/api/v1/chat", build)
        assert response.status_code == 200, response.text
        self.acked.append(("web", f"{session}:{client_id}"))
        return dict(response.json())

    async def new_session(self, node: int) -> str:
        response = await self.client.post(
            self.cluster.nodes[node].url + "/api/v1/sessions", headers={"X-API-Key": API_KEY}
        )
        assert response.status_code == 201, response.text
        return str(response.json()["session_id"])


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident memory (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")
