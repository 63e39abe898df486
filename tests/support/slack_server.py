"""A stand-in Slack: the Web API methods Esoteric calls, response_url webhooks, shared files
(``files.info`` and the private download that wants the bot token), the bot's own uploads
(``files.getUploadURLExternal``, the upload URL, ``files.completeUploadExternal``), and a Socket
Mode WebSocket,
on 127.0.0.1 with an OS-chosen port. It records every call, enforces the limits real Slack
enforces (blocks, section text), and can answer 429 with ``Retry-After`` on demand.

Responses follow the shapes in /work/shared/payloads/slack (``resp_*.json``)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

PAYLOADS = Path(__file__).resolve().parents[2].parent / "shared" / "payloads" / "slack"
BOT_USER = "U0BOT12345"
BOT_ID = "B0BOT67890"
TEAM = "T0AB12CDE"
# What Slack serves a file download without a token that may read it: its sign-in page.
SIGN_IN_PAGE = "<!DOCTYPE html><html><body>Sign in to Slack</body></html>"


def sample(name: str) -> dict[str, Any]:
    return dict(json.loads((PAYLOADS / name).read_text("utf-8")))


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    token: str
    at: float = field(default_factory=time.monotonic)


@dataclass
class Upload:
    """A file the bot uploads with Slack's external upload flow: reserved by
    files.getUploadURLExternal, its bytes POSTed to the upload URL, shared by
    files.completeUploadExternal."""

    file_id: str
    filename: str
    length: int
    data: bytes | None = None  # the bytes POSTed to the upload URL
    title: str | None = None
    # Set when completed: where it was shared (no channel: a private file).
    completed: bool = False
    channel_id: str | None = None
    thread_ts: str | None = None
    initial_comment: str | None = None


@dataclass
class _Failure:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]


class SlackStandIn:
    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.responses: list[tuple[str, dict[str, Any]]] = []  # response_url posts
        self.acks: list[dict[str, Any]] = []  # Socket Mode envelopes acknowledged
        self.users: dict[str, dict[str, Any]] = {}
        self.messages: list[dict[str, Any]] = []  # what conversations.replies can see
        # Channel id -> its members' user ids, in Slack's order (conversations.members).
        self.members: dict[str, list[str]] = {}
        # The most members one conversations.members page returns, whatever limit is asked.
        self.members_page_size = 1000
        # Shared files: id -> the file object files.info gives, and id -> its bytes.
        self.files: dict[str, dict[str, Any]] = {}
        self.file_data: dict[str, bytes] = {}
        # Private downloads asked for: (file id, the bearer token sent), served or not.
        self.downloads: list[tuple[str, str]] = []
        # The bot's uploads by file id, in the order files.getUploadURLExternal reserved them.
        self.uploads: dict[str, Upload] = {}
        # The only token downloads are served to, when set (any xoxb- token otherwise).
        self.bot_token: str | None = None
        self._failures: dict[str, list[_Failure]] = {}
        self._holds: dict[str, asyncio.Event] = {}
        self._changed = asyncio.Condition()
        self._sockets: list[web.WebSocketResponse] = []
        self._serial = 0
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_post("/response/{key}", self._response_url)
        app.router.add_get("/link/", self._socket)
        app.router.add_get("/files-pri/{team_file}/download/{name}", self._download)
        app.router.add_post("/upload/v1/{key}", self._upload)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    def response_url(self, key: str = "cmd") -> str:
        return f"http://127.0.0.1:{self.port}/response/{key}"

    # -- test controls ---------------------------------------------------------------------------

    def rate_limit(self, method: str, retry_after: int = 1, times: int = 1) -> None:
        body = sample("err_ratelimited_429.json")
        headers = {"Retry-After": str(retry_after)}
        self._failures.setdefault(method, []).extend(
            _Failure(429, body, headers) for _ in range(times)
        )

    def fail(self, method: str, error: str, times: int = 1) -> None:
        self._failures.setdefault(method, []).extend(
            _Failure(200, {"ok": False, "error": error}, {}) for _ in range(times)
        )

    def outage(self, method: str, times: int = 1) -> None:
        """Slack is down for ``method``: HTTP 503, as in an outage."""
        self._failures.setdefault(method, []).extend(
            _Failure(503, {"ok": False, "error": "service_unavailable"}, {}) for _ in range(times)
        )

    def hold(self, method: str) -> asyncio.Event:
        """Calls to ``method`` wait until the returned event is set."""
        event = asyncio.Event()
        self._holds[method] = event
        return event

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def posts(self) -> list[dict[str, Any]]:
        return [c.params for c in self.calls_to("chat.postMessage")]

    async def wait_until(
        self, predicate: Callable[[], bool], what: str, hang_guard: float = 15.0
    ) -> None:
        """Wait for ``predicate`` to hold; the timeout only guards against a hang."""
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(predicate), hang_guard)
            except TimeoutError:
                raise AssertionError(f"stand-in Slack never saw: {what}") from None

    async def push(self, envelope: dict[str, Any]) -> None:
        """Deliver a Socket Mode envelope to every connected client."""
        await self.wait_until(lambda: bool(self._sockets), "a Socket Mode connection")
        for ws in self._sockets:
            await ws.send_str(json.dumps(envelope))

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # -- the Web API -------------------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params: dict[str, Any] = dict(request.query)
        if request.method == "POST" and request.can_read_body:
            if request.content_type == "application/json":
                params.update(await request.json())
            else:
                params.update(dict(await request.post()))
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        self.calls.append(Call(method, params, token))
        await self._notify()
        hold = self._holds.get(method)
        if hold is not None:
            await hold.wait()
        failures = self._failures.get(method)
        if failures:
            failure = failures.pop(0)
            return web.json_response(failure.body, status=failure.status, headers=failure.headers)
        if not token:
            return web.json_response({"ok": False, "error": "not_authed"})
        handler = getattr(self, "_m_" + method.replace(".", "_"), None)
        if handler is None:
            return web.json_response({"ok": False, "error": "unknown_method"})
        body = handler(params)
        await self._notify()
        return web.json_response(body)

    def _next_ts(self) -> str:
        self._serial += 1
        return f"{1767230000 + self._serial}.{self._serial:06d}"

    def _m_auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        return sample("resp_auth_test.json")

    def _m_apps_connections_open(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "url": f"ws://127.0.0.1:{self.port}/link/?ticket=t&app_id=A0AB34FGH"}

    @staticmethod
    def _block_problem(params: dict[str, Any]) -> str | None:
        blocks = params.get("blocks")
        if isinstance(blocks, str):
            blocks = json.loads(blocks)
        if not blocks:
            return None if params.get("text") else "no_text"
        if len(blocks) > 50:
            return "invalid_blocks"
        for block in blocks:
            text = (block.get("text") or {}).get("text")
            if block.get("type") == "section" and (not text or len(text) > 3000):
                return "invalid_blocks"
            if block.get("type") == "actions" and len(block.get("elements", [])) > 25:
                return "invalid_blocks"
        return None

    def _m_chat_postMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        if not params.get("channel"):
            return {"ok": False, "error": "channel_not_found"}
        problem = self._block_problem(params)
        if problem:
            return {"ok": False, "error": problem}
        ts = self._next_ts()
        message = {
            "type": "message",
            "user": BOT_USER,
            "bot_id": BOT_ID,
            "text": params.get("text", ""),
            "ts": ts,
            "channel": params["channel"],
        }
        if params.get("thread_ts"):
            message["thread_ts"] = params["thread_ts"]
        self.messages.append(message)
        return {"ok": True, "channel": params["channel"], "ts": ts, "message": message}

    def _m_chat_update(self, params: dict[str, Any]) -> dict[str, Any]:
        problem = self._block_problem(params)
        if problem:
            return {"ok": False, "error": problem}
        for message in self.messages:
            if message["ts"] == params.get("ts") and message["channel"] == params.get("channel"):
                message["text"] = params.get("text", "")
                return {"ok": True, "channel": params["channel"], "ts": params["ts"]}
        return {"ok": False, "error": "message_not_found"}

    def _m_chat_postEphemeral(self, params: dict[str, Any]) -> dict[str, Any]:
        problem = self._block_problem(params)
        if problem:
            return {"ok": False, "error": problem}
        return {"ok": True, "message_ts": self._next_ts()}

    def _m_conversations_replies(self, params: dict[str, Any]) -> dict[str, Any]:
        channel, ts = params.get("channel"), params.get("ts")
        found = [
            m
            for m in self.messages
            if m["channel"] == channel and (m["ts"] == ts or m.get("thread_ts") == ts)
        ]
        if not found:
            return {"ok": False, "error": "thread_not_found"}
        return {"ok": True, "messages": found, "has_more": False}

    def _m_users_info(self, params: dict[str, Any]) -> dict[str, Any]:
        user = params.get("user", "")
        info = self.users.get(user)
        if info is None:
            return {"ok": False, "error": "user_not_found"}
        return {"ok": True, "user": info}

    def add_user(self, user_id: str, display_name: str) -> None:
        self.users[user_id] = {
            "id": user_id,
            "name": display_name.lower(),
            "real_name": display_name,
            "is_bot": False,
            "profile": {"display_name": display_name, "real_name": display_name},
        }

    def set_members(self, channel: str, users: list[str]) -> None:
        self.members[channel] = list(users)

    def add_member(self, channel: str, user: str) -> None:
        self.members.setdefault(channel, [])
        if user not in self.members[channel]:
            self.members[channel].append(user)

    def remove_member(self, channel: str, user: str) -> None:
        if user in self.members.get(channel, []):
            self.members[channel].remove(user)

    def _m_conversations_members(self, params: dict[str, Any]) -> dict[str, Any]:
        """Slack's cursor pagination: an opaque ``next_cursor`` in ``response_metadata``,
        empty on the last page; ``limit`` defaults to 100 and is at most 1000."""
        members = self.members.get(str(params.get("channel", "")))
        if members is None:
            return {"ok": False, "error": "channel_not_found"}
        try:
            limit = int(params.get("limit") or 100)
            cursor = str(params.get("cursor") or "")
            start = int(base64.b64decode(cursor).decode().removeprefix("offset:")) if cursor else 0
        except ValueError:
            return {"ok": False, "error": "invalid_cursor"}
        if not 1 <= limit <= 1000:
            return {"ok": False, "error": "invalid_limit"}
        end = start + min(limit, self.members_page_size)
        more = end < len(members)
        next_cursor = base64.b64encode(f"offset:{end}".encode()).decode() if more else ""
        return {
            "ok": True,
            "members": members[start:end],
            "response_metadata": {"next_cursor": next_cursor},
        }

    def add_message(self, channel: str, ts: str, user: str, thread_ts: str | None = None) -> None:
        message = {"type": "message", "user": user, "text": "", "ts": ts, "channel": channel}
        if thread_ts:
            message["thread_ts"] = thread_ts
        self.messages.append(message)

    # -- files -------------------------------------------------------------------------------------

    def add_file(
        self,
        data: bytes,
        name: str,
        mimetype: str,
        *,
        user: str = "U0HUMAN001",
        filetype: str | None = None,
        subtype: str | None = None,
        duration_ms: int | None = None,
        size: int | None = None,
    ) -> dict[str, Any]:
        """A file someone shared; returns its object as Slack shows it (in a message event's
        ``files`` and from files.info). ``size`` overrides the real size (limits)."""
        self._serial += 1
        file_id = f"F0AUDIO{self._serial:04d}"
        base = f"http://127.0.0.1:{self.port}/files-pri/{TEAM}-{file_id}"
        kind = filetype or name.rsplit(".", 1)[-1].lower()
        file: dict[str, Any] = {
            "id": file_id,
            "created": 1767225600 + self._serial,
            "timestamp": 1767225600 + self._serial,
            "name": name,
            "title": name,
            "mimetype": mimetype,
            "filetype": kind,
            "pretty_type": kind.upper(),
            "user": user,
            "user_team": TEAM,
            "editable": False,
            "size": len(data) if size is None else size,
            "mode": "hosted",
            "is_external": False,
            "external_type": "",
            "is_public": False,
            "public_url_shared": False,
            "display_as_bot": False,
            "username": "",
            "url_private": f"{base}/{name}",
            "url_private_download": f"{base}/download/{name}",
            "media_display_type": "audio" if mimetype.startswith("audio/") else "unknown",
            "permalink": f"https://example.slack.com/files/{user}/{file_id}/{name}",
            "is_starred": False,
            "has_rich_preview": False,
            "file_access": "visible",
        }
        if subtype is not None:
            file["subtype"] = subtype
        if duration_ms is not None:
            file["duration_ms"] = duration_ms
        self.files[file_id] = file
        self.file_data[file_id] = data
        return dict(file)

    def _m_files_info(self, params: dict[str, Any]) -> dict[str, Any]:
        file = self.files.get(str(params.get("file", "")))
        if file is None:
            return {"ok": False, "error": "file_not_found"}
        return {"ok": True, "file": file, "comments": [], "response_metadata": {"next_cursor": ""}}

    async def _download(self, request: web.Request) -> web.Response:
        team, _, file_id = request.match_info["team_file"].partition("-")
        token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        self.downloads.append((file_id, token))
        await self._notify()
        allowed = token == self.bot_token if self.bot_token else token.startswith("xoxb-")
        if not allowed:
            # Slack does not say 401: it serves its sign-in page.
            return web.Response(text=SIGN_IN_PAGE, content_type="text/html")
        file = self.files.get(file_id)
        if team != TEAM or file is None or file["name"] != request.match_info["name"]:
            return web.Response(status=404, text="Not Found")
        return web.Response(
            body=self.file_data[file_id],
            content_type=str(file["mimetype"]),
            headers={"Content-Disposition": f'attachment; filename="{file["name"]}"'},
        )

    def shared(self) -> list[Upload]:
        """The uploads completed into a channel, in the order they were completed."""
        return [u for u in self.uploads.values() if u.completed]

    def _m_files_getUploadURLExternal(self, params: dict[str, Any]) -> dict[str, Any]:
        """Reserves a file: ``filename`` and ``length`` (bytes) are required."""
        filename = str(params.get("filename") or "")
        try:
            length = int(params.get("length") or 0)
        except (TypeError, ValueError):
            return {"ok": False, "error": "invalid_arguments"}
        if not filename or length <= 0:
            return {"ok": False, "error": "invalid_arguments"}
        self._serial += 1
        file_id = f"F0UPLOAD{self._serial:04d}"
        self.uploads[file_id] = Upload(file_id, filename, length)
        return {
            "ok": True,
            "upload_url": f"http://127.0.0.1:{self.port}/upload/v1/{file_id}",
            "file_id": file_id,
        }

    async def _upload(self, request: web.Request) -> web.Response:
        """The upload URL: the file's bytes, raw or as a multipart form's one file."""
        upload = self.uploads.get(request.match_info["key"])
        if upload is None:
            return web.Response(status=404, text="Not Found")
        if request.content_type.startswith("multipart/"):
            form = await request.post()
            parts = [v for v in form.values() if isinstance(v, web.FileField)]
            data = parts[0].file.read() if parts else b""
        else:
            data = await request.read()
        if len(data) != upload.length:
            # Slack refuses an upload whose size is not the length it was promised.
            return web.Response(status=400, text="length mismatch")
        upload.data = data
        await self._notify()
        return web.Response(text=f"OK - {len(data)}")

    def _m_files_completeUploadExternal(self, params: dict[str, Any]) -> dict[str, Any]:
        """Shares uploaded files: ``files`` is a JSON array of ``{"id", "title"}``; with
        ``channel_id`` (and ``thread_ts``, a reply in that thread) they are shared there."""
        try:
            files = params.get("files")
            items = json.loads(files) if isinstance(files, str) else files
            ids = [(str(item["id"]), item.get("title")) for item in items]
        except (TypeError, ValueError, KeyError):
            return {"ok": False, "error": "invalid_arguments"}
        if not ids:
            return {"ok": False, "error": "invalid_arguments"}
        uploads = []
        for file_id, title in ids:
            upload = self.uploads.get(file_id)
            if upload is None or upload.completed:
                return {"ok": False, "error": "file_not_found"}
            if upload.data is None:
                return {"ok": False, "error": "file_upload_not_completed"}
            uploads.append((upload, title))
        channel = str(params.get("channel_id") or "") or None
        thread_ts = str(params.get("thread_ts") or "") or None
        if thread_ts and not channel:
            return {"ok": False, "error": "invalid_arguments"}
        shown = []
        for upload, title in uploads:
            upload.title = str(title) if title else upload.filename
            upload.completed = True
            upload.channel_id, upload.thread_ts = channel, thread_ts
            upload.initial_comment = str(params.get("initial_comment") or "") or None
            shown.append({"id": upload.file_id, "title": upload.title})
        return {"ok": True, "files": shown}

    # -- response_url ------------------------------------------------------------------------------

    async def _response_url(self, request: web.Request) -> web.Response:
        body = await request.json()
        problem = self._block_problem(body)
        self.responses.append((request.match_info["key"], body))
        await self._notify()
        if problem:
            return web.Response(status=400, text=problem)
        return web.Response(text="ok")

    # -- Socket Mode -----------------------------------------------------------------------------

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str(json.dumps(sample("socket_hello.json")))
        self._sockets.append(ws)
        await self._notify()
        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    self.acks.append(json.loads(message.data))
                    await self._notify()
        finally:
            self._sockets.remove(ws)
            await self._notify()
        return ws
